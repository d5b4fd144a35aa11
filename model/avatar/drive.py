"""Drive an avatar with another clip (GPHMv2 section 3.5, reenactment): each driving frame's face crop goes
to E_exp and its non-face image to E_nf (or a code of the avatar's own frames, `fixed_non_face`), and its
head pose, relative to the driver's own mean pose, poses the avatar around the avatar's mean pose:

    in each clip's camera frame (Rc = R_cam R, tc = R_cam t + t_cam of the fitted head -> world pose):
    Rc_avatar(t) = Rc_driver(t) mean(Rc_driver)^T mean(Rc_avatar)
    tc_avatar(t) = mean(tc_avatar) + (tc_driver(t) - mean(tc_driver)) * mean(s_avatar) / mean(s_driver)
rendered from the avatar's camera (that of its first fitted frame). Self-reenactment (the avatar's own
held-out frames as the driver) and cross-identity reenactment are the same path.
"""

from __future__ import annotations

import numpy as np
import torch

from model.avatar.frames import AvatarFrames
from model.avatar.model import Avatar
from model.fitting.geometry import project_to_rotation
from model.images import to_uint8


def _camera_frame(frames: AvatarFrames, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Rc [T, 3, 3], tc [T, 3], s [T]) of the head poses of `rows` in the clip camera's frame."""
    a = frames.arrays
    E = a["world_to_cam"][rows].astype(np.float64)
    P = a["pose"][rows].astype(np.float64)
    Rc = E[:, :3, :3] @ P[:, :3, :3]
    tc = np.einsum("tij,tj->ti", E[:, :3, :3], P[:, :3, 3]) + E[:, :3, 3]
    return Rc, tc, a["scale"][rows].astype(np.float64)


def driven_poses(avatar_frames: AvatarFrames, driver: AvatarFrames, rows: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(pose [T, 4, 4], scale [T]) in the avatar camera's world for the driving frames `rows`."""
    Ra, ta, sa = _camera_frame(avatar_frames, avatar_frames.train)
    Rd_all, td_all, sd_all = _camera_frame(driver, np.arange(len(driver)))
    Ra_mean, ta_mean, sa_mean = project_to_rotation(Ra.mean(0)), ta.mean(0), sa.mean()
    Rd_mean, td_mean, sd_mean = project_to_rotation(Rd_all.mean(0)), td_all.mean(0), sd_all.mean()
    Rd, td, _ = _camera_frame(driver, rows)
    Rc = Rd @ Rd_mean.T @ Ra_mean
    tc = ta_mean + (td - td_mean) * (sa_mean / sd_mean)
    E = avatar_frames.arrays["world_to_cam"][avatar_frames.train[0]].astype(np.float64)
    pose = np.tile(np.eye(4), (len(rows), 1, 1))
    pose[:, :3, :3] = E[:3, :3].T @ Rc
    pose[:, :3, 3] = np.einsum("ij,tj->ti", E[:3, :3].T, tc - E[:3, 3])
    return pose.astype(np.float32), np.full(len(rows), sa_mean, np.float32)


def own_non_face_code(avatar: Avatar, frames: AvatarFrames, device) -> torch.Tensor:
    """[1, nf_dim] E_nf of the avatar's first fitted frame (the paper's 'a sample in the training set')."""
    inputs, _ = frames.batch([int(frames.train[0])], avatar.config, device)
    with torch.no_grad():
        return avatar.E_nf(inputs.non_face)


def drive(avatar: Avatar, avatar_frames: AvatarFrames, driver: AvatarFrames, device="cpu",
          fixed_non_face: bool = False, max_frames: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(avatar renders, driver images), uint8 [S, S, 3] each at the model's output resolution."""
    device = torch.device(device)
    rows = np.arange(len(driver))[: max_frames or None]
    pose, scale = driven_poses(avatar_frames, driver, rows)
    z_nf = own_non_face_code(avatar, avatar_frames, device) if fixed_non_face else None
    camera, _ = avatar_frames.batch([int(avatar_frames.train[0])], avatar.config, device)
    renders, shown = [], []
    with torch.no_grad():
        for i, r in enumerate(rows):
            inputs, targets = driver.batch([int(r)], avatar.config, device)
            inputs.pose = torch.from_numpy(pose[i:i + 1]).to(device)
            inputs.scale = torch.from_numpy(scale[i:i + 1]).to(device)
            inputs.K, inputs.world_to_cam = camera.K, camera.world_to_cam
            out = avatar(inputs, z_nf)
            renders.append(to_uint8(out.fine[0]))
            shown.append(to_uint8(targets.rgb[0]))
    return renders, shown

