"""FLAME 2020 / 2023 as a MorphableModel (file layout: model/morphable/flame_file.py).

Forward model (as published; metres, y up, z out of the face, x to the subject's left):
    v_shaped = v_template + shapedirs[:, :, :n_id] @ id + shapedirs[:, :, 300:300 + n_blend] @ exp
    J        = J_regressor @ v_shaped                         (linear in the coefficients: precomputed)
    v_posed  = v_shaped + posedirs @ vec(R_1..R_4 - I)        (pose blendshapes)
    v        = sum_j weights[:, j] * A_j(v_posed)             (linear blend skinning down the kinematic tree)
Coefficient layout for fitting: `exp` = n_blend expression coefficients followed by the jaw's 3
axis-angle values (radians); global, neck and eye rotations are zero (the fitter owns the head pose).
`landmarks()` skins only the vertices of the 68 landmark triangles and interpolates them with the
embedding's barycentric coordinates.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from model.morphable.base import MorphableModel, check_count
from model.morphable.flame_file import (
    FLAME_SHAPE_COMPONENTS,
    FlameArrays,
    read_flame_landmarks,
    read_flame_model,
)

NECK_JOINT, JAW_JOINT, EYE_JOINTS = 1, 2, (3, 4)
JAW_PRIOR_STD = (0.2, 0.05, 0.05)  # radians: opening (about x) moves far, sideways/twist little


def axis_angle_to_matrix(rotvec: Tensor) -> Tensor:
    """[..., 3] axis-angle -> [..., 3, 3] rotation (Rodrigues), exact and with finite gradients at 0."""
    theta2 = (rotvec * rotvec).sum(-1, keepdim=True)[..., None]  # [..., 1, 1]
    small = theta2 < 1e-8
    safe2 = torch.where(small, torch.ones_like(theta2), theta2)
    theta = safe2.sqrt()
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / safe2)
    x, y, z = rotvec.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).view(*rotvec.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=rotvec.dtype, device=rotvec.device)
    return eye + a * k + b * (k @ k)


class FlameModel(MorphableModel):
    def __init__(self, arrays: FlameArrays, lmk_faces: np.ndarray, lmk_bary: np.ndarray, *, path: str,
                 landmarks_path: str, n_id: int, n_blend: int):
        super().__init__(kind="flame", path=path, landmarks_path=landmarks_path, n_id=n_id, n_exp=n_blend + 3,
                         unit=1.0)
        self.n_blend = n_blend
        self.parents = [int(p) for p in arrays.parents]  # [J], parents[0] = -1
        f32 = {"dtype": torch.float32}
        dirs_id = arrays.shapedirs[:, :, :n_id]  # [N, 3, n_id]
        dirs_exp = arrays.shapedirs[:, :, FLAME_SHAPE_COMPONENTS:FLAME_SHAPE_COMPONENTS + n_blend]  # [N, 3, n_blend]
        reg = arrays.J_regressor  # [J, N]
        self.register_buffer("joint_template", torch.as_tensor(reg @ arrays.v_template, **f32))  # [J, 3]
        self.register_buffer("joint_dirs_id", torch.as_tensor(np.einsum("jn,nck->jck", reg, dirs_id), **f32))
        self.register_buffer("joint_dirs_exp", torch.as_tensor(np.einsum("jn,nck->jck", reg, dirs_exp), **f32))
        self.register_buffer("faces", torch.as_tensor(arrays.faces, dtype=torch.int64))  # [F, 3]
        self.register_buffer("lmk_faces", torch.as_tensor(lmk_faces, dtype=torch.int64))  # [68]
        self.register_buffer("lmk_bary", torch.as_tensor(lmk_bary, **f32))  # [68, 3]
        exp_scale = np.concatenate([np.ones(n_blend), JAW_PRIOR_STD])
        self.register_buffer("exp_scale", torch.as_tensor(exp_scale, **f32))  # [n_exp]
        # the full mesh, then the vertices the landmark triangles use ('lmk_' buffers)
        used, local = np.unique(arrays.faces[lmk_faces].reshape(-1), return_inverse=True)
        self.register_buffer("lmk_corner", torch.as_tensor(local.reshape(68, 3), dtype=torch.int64))  # into used
        for prefix, rows in (("", slice(None)), ("lmk_", used)):
            self.register_buffer(prefix + "template", torch.as_tensor(arrays.v_template[rows], **f32))  # [M, 3]
            self.register_buffer(prefix + "dirs_id", torch.as_tensor(dirs_id[rows], **f32))  # [M, 3, n_id]
            self.register_buffer(prefix + "dirs_exp", torch.as_tensor(dirs_exp[rows], **f32))  # [M, 3, n_blend]
            posedirs = arrays.posedirs[rows]  # [M, 3, P]
            self.register_buffer(prefix + "posedirs", torch.as_tensor(posedirs.reshape(-1, posedirs.shape[2]), **f32))
            self.register_buffer(prefix + "weights", torch.as_tensor(arrays.weights[rows], **f32))  # [M, J]

    @property
    def n_vertices(self) -> int:
        return self.template.shape[0]

    def full_pose(self, exp_coeffs: Tensor, neck: Tensor | None = None, eyes: Tensor | None = None) -> Tensor:
        """[B, n_exp] (+ neck [B, 3], eyes [B, 6]) -> [B, J, 3] axis-angle per joint: the jaw from the last 3
        entries of exp, neck and eyes where given, the global rotation zero."""
        pose = exp_coeffs.new_zeros(exp_coeffs.shape[0], len(self.parents), 3)
        pose[:, JAW_JOINT] = exp_coeffs[:, self.n_blend:]
        if neck is not None:
            pose[:, NECK_JOINT] = neck
        if eyes is not None:
            pose[:, EYE_JOINTS[0]], pose[:, EYE_JOINTS[1]] = eyes[:, :3], eyes[:, 3:]
        return pose

    def _rigid_transforms(self, rot: Tensor, joints: Tensor) -> Tensor:
        """[B, J, 3, 3] local rotations, [B, J, 3] rest joints -> [B, J, 3, 4] transforms of rest-pose points."""
        world_rot, world_t = [], []
        for j, parent in enumerate(self.parents):
            if parent < 0:
                world_rot.append(rot[:, j])
                world_t.append(joints[:, j])
            else:
                world_rot.append(world_rot[parent] @ rot[:, j])
                offset = (joints[:, j] - joints[:, parent])[..., None]  # [B, 3, 1]
                world_t.append(world_t[parent] + (world_rot[parent] @ offset)[..., 0])
        R = torch.stack(world_rot, 1)  # [B, J, 3, 3]
        t = torch.stack(world_t, 1) - (R @ joints[..., None])[..., 0]  # [B, J, 3]: moves the rest joint to place
        return torch.cat([R, t[..., None]], -1)

    def rest_joints(self, id_coeffs: Tensor, exp_coeffs: Tensor) -> Tensor:
        """[B, n_id], [B, n_exp] -> [B, J, 3] joint positions of the shaped mesh before posing."""
        id_coeffs, exp_coeffs = self._coefficients(id_coeffs, exp_coeffs)
        return (self.joint_template + torch.einsum("jck,bk->bjc", self.joint_dirs_id, id_coeffs)
                + torch.einsum("jck,bk->bjc", self.joint_dirs_exp, exp_coeffs[:, :self.n_blend]))

    def _skin(self, prefix: str, id_coeffs: Tensor, exp_coeffs: Tensor, pose: Tensor | None = None) -> Tensor:
        """Posed vertices [B, M, 3] of the full mesh (prefix '') or the landmark vertices ('lmk_')."""
        template = getattr(self, prefix + "template")
        blend = exp_coeffs[:, :self.n_blend]
        v_shaped = (template + torch.einsum("mck,bk->bmc", getattr(self, prefix + "dirs_id"), id_coeffs)
                    + torch.einsum("mck,bk->bmc", getattr(self, prefix + "dirs_exp"), blend))
        joints = (self.joint_template + torch.einsum("jck,bk->bjc", self.joint_dirs_id, id_coeffs)
                  + torch.einsum("jck,bk->bjc", self.joint_dirs_exp, blend))  # [B, J, 3]
        rot = axis_angle_to_matrix(self.full_pose(exp_coeffs) if pose is None else pose)  # [B, J, 3, 3]
        eye = torch.eye(3, dtype=rot.dtype, device=rot.device)
        pose_feature = (rot[:, 1:] - eye).flatten(1)  # [B, 9 (J - 1)]
        v_posed = v_shaped + (pose_feature @ getattr(self, prefix + "posedirs").T).view_as(v_shaped)
        blended = torch.einsum("mj,bjxy->bmxy", getattr(self, prefix + "weights"),
                               self._rigid_transforms(rot, joints))  # [B, M, 3, 4]
        return (blended[..., :3] @ v_posed[..., None])[..., 0] + blended[..., 3]

    def vertices(self, id_coeffs: Tensor, exp_coeffs: Tensor) -> Tensor:
        """[B, n_id], [B, n_blend + 3] -> [B, N, 3] metres."""
        id_coeffs, exp_coeffs = self._coefficients(id_coeffs, exp_coeffs)
        return self._skin("", id_coeffs, exp_coeffs)

    def posed_vertices(self, id_coeffs: Tensor, exp_coeffs: Tensor, neck: Tensor, eyes: Tensor) -> Tensor:
        """vertices() with the neck [B, 3] and eyes [B, 6] posed too (a released tracking's pose)."""
        id_coeffs, exp_coeffs = self._coefficients(id_coeffs, exp_coeffs)
        return self._skin("", id_coeffs, exp_coeffs, self.full_pose(exp_coeffs, neck, eyes))

    def landmarks(self, id_coeffs: Tensor, exp_coeffs: Tensor, neck: Tensor | None = None,
                  eyes: Tensor | None = None) -> Tensor:
        """[B, n_id], [B, n_blend + 3] (+ neck [B, 3], eyes [B, 6]) -> [B, 68, 3]: barycentric points on the
        skinned landmark triangles."""
        id_coeffs, exp_coeffs = self._coefficients(id_coeffs, exp_coeffs)
        pose = None if neck is None and eyes is None else self.full_pose(exp_coeffs, neck, eyes)
        verts = self._skin("lmk_", id_coeffs, exp_coeffs, pose)  # [B, M, 3]
        corners = verts[:, self.lmk_corner]  # [B, 68, 3 corners, 3]
        return (corners * self.lmk_bary[None, :, :, None]).sum(2)

    def describe(self) -> dict:
        return {**super().describe(), "n_expression_blendshapes": self.n_blend, "jaw_axis_angle": "exp[-3:]"}


def load_flame(path: str, landmarks_path: str, *, n_id: int | None = None, n_exp: int | None = None) -> FlameModel:
    """FLAME from its .pkl and a 68-point landmark embedding. n_exp counts expression blendshapes (default
    50); the model's exp vector adds the jaw's 3 axis-angle values, so model.n_exp = n_exp + 3."""
    arrays = read_flame_model(path)
    lmk_faces, lmk_bary = read_flame_landmarks(landmarks_path, arrays.faces.shape[0])
    k_id = check_count("flame", "n_id", n_id, 100, FLAME_SHAPE_COMPONENTS)
    k_exp = check_count("flame", "n_exp", n_exp, 50, arrays.n_exp_available)
    return FlameModel(arrays, lmk_faces, lmk_bary, path=path, landmarks_path=landmarks_path, n_id=k_id, n_blend=k_exp)
