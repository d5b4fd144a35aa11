"""The interface every morphable face model offers the fitter, and the error for a malformed model file.

    verts = model.vertices(id_coeffs, exp_coeffs)    # [B, N, 3] model units, model frame
    lmk = model.landmarks(id_coeffs, exp_coeffs)     # [B, 68, 3] iBUG-68 order, computed on its own

Model frame: x towards the subject's left (image right in a frontal view), y up, z out of the face.
Coefficients are scaled so that a prior of N(0, 1) fits identity and expression blendshape coefficients;
`exp_scale` gives the prior std of each expression entry (FLAME's jaw angles are radians, not PCA units).
All buffers are float32; the model moves with `.to(device)` and is differentiable in the coefficients.
"""

from __future__ import annotations

import torch
from torch import Tensor

from datasets.errors import UserError


class ModelFileError(UserError, ValueError):
    """A morphable model file (or its landmark file) exists but is not what it should be: the message
    names the file and what is wrong with it."""

    def __init__(self, path: str, problem: str):
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class MorphableModel(torch.nn.Module):
    """Base of the loaded models. Subclasses register `faces` [F, 3] int64 and `exp_scale` [n_exp]
    float32 buffers and implement `vertices` and `landmarks`."""

    kind: str  # 'bfm2009' | 'bfm2017' | 'flame'
    path: str  # the model file it was loaded from
    landmarks_path: str  # the landmark file used, '' where the model file holds the landmarks
    n_id: int  # identity coefficients taken by vertices()/landmarks()
    n_exp: int  # expression coefficients taken by vertices()/landmarks()
    unit: float  # metres per model unit
    faces: Tensor  # [F, 3] int64
    exp_scale: Tensor  # [n_exp] float32 prior std of each expression coefficient

    def __init__(self, *, kind: str, path: str, landmarks_path: str, n_id: int, n_exp: int, unit: float):
        super().__init__()
        self.kind = kind
        self.path = path
        self.landmarks_path = landmarks_path
        self.n_id = int(n_id)
        self.n_exp = int(n_exp)
        self.unit = float(unit)

    @property
    def n_vertices(self) -> int:
        raise NotImplementedError

    def vertices(self, id_coeffs: Tensor, exp_coeffs: Tensor) -> Tensor:
        """[B, n_id], [B, n_exp] -> [B, N, 3] in model units, model frame."""
        raise NotImplementedError

    def landmarks(self, id_coeffs: Tensor, exp_coeffs: Tensor) -> Tensor:
        """[B, n_id], [B, n_exp] -> [B, 68, 3] iBUG-68 points, computing only what they need."""
        raise NotImplementedError

    def describe(self) -> dict:
        """Provenance: what was loaded, from where, with how many coefficients, in which unit."""
        return {
            "kind": self.kind,
            "path": self.path,
            "landmarks_path": self.landmarks_path,
            "n_vertices": int(self.n_vertices),
            "n_faces": int(self.faces.shape[0]),
            "n_id": self.n_id,
            "n_exp": self.n_exp,
            "unit": self.unit,
        }

    def _coefficients(self, id_coeffs: Tensor, exp_coeffs: Tensor) -> tuple[Tensor, Tensor]:
        """Check [B, n_id] and [B, n_exp] (same B) and cast to the buffers' dtype."""
        if id_coeffs.ndim != 2 or id_coeffs.shape[1] != self.n_id:
            raise ValueError(f"{self.kind}: id_coeffs has shape {tuple(id_coeffs.shape)}, expected [B, {self.n_id}]")
        if exp_coeffs.ndim != 2 or exp_coeffs.shape[1] != self.n_exp:
            raise ValueError(
                f"{self.kind}: exp_coeffs has shape {tuple(exp_coeffs.shape)}, expected [B, {self.n_exp}]")
        if id_coeffs.shape[0] != exp_coeffs.shape[0]:
            raise ValueError(f"{self.kind}: id_coeffs has batch {id_coeffs.shape[0]}, "
                             f"exp_coeffs has batch {exp_coeffs.shape[0]}")
        dtype = self.exp_scale.dtype
        return id_coeffs.to(dtype), exp_coeffs.to(dtype)


def check_count(kind: str, what: str, asked: int | None, default: int, available: int) -> int:
    """The number of coefficients to use: `asked` (or `default`, capped at `available`)."""
    if asked is None:
        return min(default, available)
    if not 0 <= asked <= available:
        raise ValueError(f"{kind}: {what}={asked} asked for, the model file offers 0..{available}")
    return int(asked)
