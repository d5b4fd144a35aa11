"""The multi-resolution tri-plane (GaussianHead section 4.2, appendix A.3) and its sampling.

    planes[i]: [3, L, H_i, W_i]   plane 0 = xy, 1 = xz, 2 = yz; H_i = W_i = base * scales[i]; U[a, b] at start
    sample_plane(plane [G, C, H, W], uv [G, N, 2]) -> [G, C, N]   bilinear, corners aligned, border-clamped:
        u in [-1, 1] maps to column (u + 1) / 2 * (W - 1), v to row (v + 1) / 2 * (H - 1)
Coordinates are the canonical positions normalised by the model (centre at 0, the head inside +-1/bound).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

PLANE_AXES = ((0, 1), (0, 2), (1, 2))  # xy, xz, yz: (column axis, row axis) of each plane


def sample_plane(plane: Tensor, uv: Tensor) -> Tensor:
    """plane [G, C, H, W], uv [G, N, 2] in [-1, 1] (u -> width, v -> height) -> [G, C, N]."""
    out = F.grid_sample(plane, uv[:, :, None, :], mode="bilinear", padding_mode="border", align_corners=True)
    return out[..., 0]


class TriPlane(nn.Module):
    """Planes at len(scales) resolutions, each [3, channels, base * s, base * s]."""

    def __init__(self, channels: int, base: int, scales: tuple[int, ...], init: tuple[float, float] = (0.1, 0.5)):
        super().__init__()
        self.channels = int(channels)
        self.planes = nn.ParameterList(
            [nn.Parameter(torch.empty(3, channels, base * s, base * s).uniform_(*init)) for s in scales])

    def __len__(self) -> int:
        return len(self.planes)


__all__ = ["PLANE_AXES", "TriPlane", "sample_plane"]
