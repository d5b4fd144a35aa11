"""A released FLAME tracking (datasets/flame_tracking.py) as the fitting stage's result: world landmarks and
the head pose in the store's convention (world = scale * R @ x + t, x in the model frame).

    v_world = s * R_xyz(rotation) @ FLAME(shape, expression, jaw, neck, eyes) + translation
The landmarks are the model's 68 points skinned with the full pose (neck, jaw, eyes). The head pose is
the transform the head follows: the model-to-world transform composed with the neck's rotation about the
neck joint (FLAME's head vertices are skinned to that joint), so that pose @ x of a point of the unposed
head lands where the tracking puts it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from datasets.flame_tracking import euler_xyz
from model.morphable.flame import NECK_JOINT, FlameModel, axis_angle_to_matrix


@dataclass
class ReleasedFit:
    pose: np.ndarray  # [T, 4, 4] head -> world rotation and translation
    scale: np.ndarray  # [T]
    lmk3d: np.ndarray  # [T, 68, 3] world
    expression: np.ndarray  # [T, X + 3] blendshape coefficients and the jaw's axis-angle (the model's layout)
    identity: np.ndarray  # [S]


def tracking_to_world(model: FlameModel, arrays: dict[str, np.ndarray]) -> ReleasedFit:
    """The store's `tracking/*` arrays (without the prefix: rotation [T, 3], translation, jaw, neck, eyes [T, 6],
    expression [T, X], shape [S], scale [1]) -> ReleasedFit; `model` has n_id = S and n_blend = X."""
    T = len(arrays["rotation"])
    f32 = {"dtype": torch.float32}
    shape = torch.as_tensor(arrays["shape"], **f32)[None].expand(T, -1)
    exp = torch.cat([torch.as_tensor(arrays["expression"], **f32), torch.as_tensor(arrays["jaw"], **f32)], 1)
    neck, eyes = torch.as_tensor(arrays["neck"], **f32), torch.as_tensor(arrays["eyes"], **f32)
    with torch.no_grad():
        lmk = model.landmarks(shape, exp, neck, eyes).double().numpy()  # [T, 68, 3] model frame
        joint = model.rest_joints(shape, exp)[:, NECK_JOINT].double().numpy()  # [T, 3]
        R_neck = axis_angle_to_matrix(neck.double()).numpy()  # [T, 3, 3]
    s = float(np.asarray(arrays["scale"]).reshape(-1)[0])
    R_world = euler_xyz(arrays["rotation"])  # [T, 3, 3]
    t = np.asarray(arrays["translation"], np.float64)
    lmk3d = s * np.einsum("tij,tlj->tli", R_world, lmk) + t[:, None]
    pose = np.tile(np.eye(4), (T, 1, 1))
    pose[:, :3, :3] = R_world @ R_neck
    pivot = joint - np.einsum("tij,tj->ti", R_neck, joint)  # the neck turns about its joint
    pose[:, :3, 3] = t + s * np.einsum("tij,tj->ti", R_world, pivot)
    return ReleasedFit(pose, np.full(T, s), lmk3d, exp.double().numpy(), np.asarray(arrays["shape"], np.float64))
