"""For tests and benchmarks: a small shard set of rendered heads: make_store's layout
(datasets/capture/coloured_store.py) with the images,
mattes, cameras and fits replaced by a real geometry, so a trainer sees consistent data. Each subject is
an ellipsoid head on a neck (size varies by subject), coloured by position, turning a little per frame;
the fitted pose, scale and 3D landmarks (the landmark template, posed) are exact."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from datasets.capture.coloured_store import make_store
from datasets.capture.rig import make_rig
from datasets.shards.build import BuildOptions, build_shards
from datasets.synthhead.proxies import ellipsoid
from model.fitting.template import build_template
from model.render.mesh import interpolate, rasterize


def head_mesh(subject: int) -> tuple[np.ndarray, np.ndarray]:
    """Head-frame (metres) vertices [N, 3] and faces [F, 3] of a subject."""
    grow = 1 + 0.06 * subject
    hv, hf = ellipsoid((0.0, 0.012, -0.012), (0.082 * grow, 0.115, 0.108), 20, 28)
    nv, nf = ellipsoid((0.0, -0.16, -0.02), (0.05, 0.11, 0.05), 10, 14)
    return np.concatenate([hv, nv]), np.concatenate([hf, nf + len(hv)])


def frame_pose(frame: int) -> np.ndarray:
    yaw = np.radians(8.0 * np.sin(frame))
    pose = np.eye(4, dtype=np.float32)
    pose[:3, :3] = [[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]]
    return pose


def make_head_shards(root: str, subjects: int = 2, frames: int = 4, views: int = 6, res: int = 64,
                     holdout_views: str = "1") -> str:
    """Store under root/store.zarr, shards under root/shards -> the shard set's path."""
    store_url, shards = f"{root}/store.zarr", f"{root}/shards"
    store = make_store(store_url, subjects=subjects, frames=frames, views=views, res=res, crop=32, synth=1,
                       block=frames)
    rig = make_rig(res, res, distance=1.0, view_height=0.42)
    cams = rig[:: max(1, len(rig) // views)][:views]
    K = np.stack([c.K for c in cams]).astype(np.float32)
    w2c = np.stack([c.world_to_cam for c in cams]).astype(np.float32)
    template = build_template().astype(np.float32)
    for s in range(subjects):
        g = store.clip(f"{s:03d}/SEQ-0")
        verts, faces = head_mesh(s)
        colour = np.clip(0.5 + verts / 0.25, 0, 1) * 255
        rgb = np.zeros((frames, views, res, res, 3), np.uint8)
        alpha = np.zeros((frames, views, res, res), np.uint8)
        pose = np.stack([frame_pose(t) for t in range(frames)])
        for t in range(frames):
            world = verts @ pose[t, :3, :3].T + pose[t, :3, 3]
            rast = rasterize(torch.tensor(world, dtype=torch.float32), torch.tensor(faces), torch.tensor(K),
                             torch.tensor(w2c), res, res)
            rgb[t] = interpolate(torch.tensor(colour, dtype=torch.float32), torch.tensor(faces), rast).round().numpy()
            alpha[t] = rast.mask.numpy() * 255
        crops = np.stack([[cv2.resize(im, (32, 32), interpolation=cv2.INTER_AREA) for im in row] for row in rgb])
        lmk3d = np.einsum("tij,lj->tli", pose[:, :3, :3], template) + pose[:, None, :3, 3]
        g["rgb"][...] = rgb
        g["alpha"][...] = alpha
        g["face_crop"][...] = crops
        g["cameras/K"][...] = K
        g["cameras/world_to_cam"][...] = w2c
        g["fit/pose"][...] = pose
        g["fit/scale"][...] = np.ones(frames, np.float32)
        g["fit/lmk3d"][...] = lmk3d.astype(np.float32)
    build_shards(BuildOptions([store_url], shards, shard_rows=2, val_subjects="0", holdout_views=holdout_views))
    return shards
