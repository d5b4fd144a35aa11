"""Where expression and non-face motion apply, and the per-frame terms refined during training."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def expression_weights(points: Tensor, landmarks: Tensor, t1: float, t2: float) -> Tensor:
    """l_exp of GPHMv2 eq. 4: 1 where the distance to the nearest landmark is below t1, 0 beyond t2,
    linear between. points: [N, 3]; landmarks: [L, 3] (canonical) -> [N]; l_nf = 1 - l_exp."""
    dist = torch.cdist(points, landmarks).min(dim=1).values
    return ((t2 - dist) / (t2 - t1)).clamp(0.0, 1.0)


def skew(v: Tensor) -> Tensor:
    """v: [B, 3] -> [B, 3, 3] cross-product matrices."""
    zero = torch.zeros_like(v[:, 0])
    return torch.stack([zero, -v[:, 2], v[:, 1], v[:, 2], zero, -v[:, 0], -v[:, 1], v[:, 0], zero], 1).view(-1, 3, 3)


class PoseRefinement(nn.Module):
    """A small rigid correction per frame, applied in canonical space before the fitted pose:
    c -> exp([w]x) c + tau. Starts at the identity (the fitted pose)."""

    def __init__(self, n_frames: int):
        super().__init__()
        self.rotation = nn.Parameter(torch.zeros(n_frames, 3))
        self.translation = nn.Parameter(torch.zeros(n_frames, 3))

    def forward(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        """rows: [B] -> (R [B, 3, 3], tau [B, 3])."""
        return torch.linalg.matrix_exp(skew(self.rotation[rows])), self.translation[rows]


def project_norm_(codes: Tensor, max_norm: float = 1.0) -> None:
    """In place: rows with norm above max_norm are scaled back onto it (codes stay in the unit ball)."""
    with torch.no_grad():
        norm = codes.norm(dim=-1, keepdim=True)
        codes.mul_(torch.where(norm > max_norm, max_norm / norm.clamp_min(1e-12), torch.ones_like(norm)))
