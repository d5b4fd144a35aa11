"""Learnable Gaussian derivation (GaussianHead eq. 4): a core Gaussian's feature from K rotated copies.

    p_k = R(r_k) p                          doppelganger k of the core position p (normalised, centre 0)
    f_k = sum_i prod_j phi(P_ij[k], p_k)    P_ij[k]: channels k L/K .. (k+1) L/K of plane j at resolution i,
                                            phi: the projection of p_k onto plane j and bilinear sampling
    f = concat_k f_k                        [L]
(the text's order: summed over resolutions, concatenated over K.) Derivations r: [N, K, 4] one set per
Gaussian (the method), [K, 4] one set for the scene (the "global rotation" ablation), or None (every copy is
the core position: the axis-aligned tri-plane, "w/o derivation"). Quaternions are (w, x, y, z).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from model.gaussianhead.triplane import PLANE_AXES, sample_plane
from model.render.gaussians import quat_to_rotmat


def doppelgangers(points: Tensor, derivations: Tensor | None, K: int) -> Tensor:
    """points [N, 3], derivations [N, K, 4] | [K, 4] | None -> the rotated copies [K, N, 3]."""
    if derivations is None:
        return points[None].expand(K, -1, -1)
    R = quat_to_rotmat(derivations)  # [N, K, 3, 3] or [K, 3, 3]
    if R.dim() == 3:
        return torch.einsum("kij,nj->kni", R, points)
    return torch.einsum("nkij,nj->kni", R, points)


def derived_features(planes, points: Tensor, derivations: Tensor | None, K: int) -> Tensor:
    """planes: resolutions of [3, L, H, W]; points [N, 3] normalised -> f [N, L]."""
    copies = doppelgangers(points, derivations, K)  # [K, N, 3]
    total = None
    for plane in planes:
        L, H, W = plane.shape[1:]
        fused = None
        for j, (a, b) in enumerate(PLANE_AXES):
            grouped = plane[j].reshape(K, L // K, H, W)  # copy k reads its own L/K channels
            sampled = sample_plane(grouped, copies[..., [a, b]])  # [K, L/K, N]
            fused = sampled if fused is None else fused * sampled  # Hadamard over the three planes
        total = fused if total is None else total + fused  # sum over resolutions
    N = points.shape[0]
    return total.permute(2, 0, 1).reshape(N, -1)  # concatenation over K: [N, K * L/K]


def random_unit_quaternions(shape: tuple[int, ...], generator: torch.Generator | None = None) -> Tensor:
    """Uniform on S^3 (appendix A.4: random numbers mapped to the hypersphere; here Shoemake's method)."""
    u = torch.rand(shape + (3,), generator=generator, dtype=torch.float64)
    a, b = torch.sqrt(1 - u[..., 0]), torch.sqrt(u[..., 0])
    t1, t2 = 2 * math.pi * u[..., 1], 2 * math.pi * u[..., 2]
    q = torch.stack([b * torch.cos(t2), a * torch.sin(t1), a * torch.cos(t1), b * torch.sin(t2)], -1)
    return q.float()


__all__ = ["derived_features", "doppelgangers", "random_unit_quaternions"]
