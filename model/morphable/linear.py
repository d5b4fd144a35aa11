"""A linear morphable model (the Basel Face Models): vertices = mean + id_basis @ id + exp_basis @ exp.

The landmark path keeps its own copy of the 68 landmark vertices' rows of the mean and bases, so
`landmarks()` costs 68 * 3 rows instead of the full mesh.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from model.morphable.base import MorphableModel


class LinearMorphableModel(MorphableModel):
    def __init__(self, *, kind: str, path: str, landmarks_path: str, unit: float,
                 mean: np.ndarray,  # [N, 3] model units
                 id_basis: np.ndarray,  # [N, 3, n_id] model units per unit coefficient
                 exp_basis: np.ndarray,  # [N, 3, n_exp]
                 faces: np.ndarray,  # [F, 3] 0-based
                 landmark_index: np.ndarray):  # [68] 0-based vertex indices, iBUG-68 order
        super().__init__(kind=kind, path=path, landmarks_path=landmarks_path,
                         n_id=id_basis.shape[2], n_exp=exp_basis.shape[2], unit=unit)
        n = mean.shape[0]
        f32 = {"dtype": torch.float32}
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean).reshape(n * 3), **f32))  # [3N]
        self.register_buffer("id_basis", torch.as_tensor(np.asarray(id_basis).reshape(n * 3, -1), **f32))
        self.register_buffer("exp_basis", torch.as_tensor(np.asarray(exp_basis).reshape(n * 3, -1), **f32))
        self.register_buffer("faces", torch.as_tensor(np.asarray(faces), dtype=torch.int64))
        self.register_buffer("landmark_index", torch.as_tensor(np.asarray(landmark_index), dtype=torch.int64))
        rows = (np.asarray(landmark_index)[:, None] * 3 + np.arange(3)).reshape(-1)  # [68 * 3]
        self.register_buffer("lmk_mean", self.mean[rows].clone())
        self.register_buffer("lmk_id_basis", self.id_basis[rows].clone())
        self.register_buffer("lmk_exp_basis", self.exp_basis[rows].clone())
        self.register_buffer("exp_scale", torch.ones(self.n_exp, **f32))

    @property
    def n_vertices(self) -> int:
        return self.mean.shape[0] // 3

    @staticmethod
    def _combine(mean: Tensor, id_basis: Tensor, exp_basis: Tensor, id_coeffs: Tensor, exp_coeffs: Tensor) -> Tensor:
        flat = mean + id_coeffs @ id_basis.T + exp_coeffs @ exp_basis.T  # [B, 3M]
        return flat.view(flat.shape[0], -1, 3)

    def vertices(self, id_coeffs: Tensor, exp_coeffs: Tensor) -> Tensor:
        """[B, n_id], [B, n_exp] -> [B, N, 3]."""
        id_coeffs, exp_coeffs = self._coefficients(id_coeffs, exp_coeffs)
        return self._combine(self.mean, self.id_basis, self.exp_basis, id_coeffs, exp_coeffs)

    def landmarks(self, id_coeffs: Tensor, exp_coeffs: Tensor) -> Tensor:
        """[B, n_id], [B, n_exp] -> [B, 68, 3], equal to vertices()[:, landmark_index]."""
        id_coeffs, exp_coeffs = self._coefficients(id_coeffs, exp_coeffs)
        return self._combine(self.lmk_mean, self.lmk_id_basis, self.lmk_exp_basis, id_coeffs, exp_coeffs)
