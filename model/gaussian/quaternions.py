"""Quaternion helpers for posing Gaussians; quaternions are (w, x, y, z) like gsplat's."""

from __future__ import annotations

import torch
from torch import Tensor


def quat_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product a * b (rotation b, then a). a, b: [..., 4] broadcastable -> [..., 4]."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([aw * bw - ax * bx - ay * by - az * bz,
                        aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx,
                        aw * bz + ax * by - ay * bx + az * bw], -1)


def matrix_to_quat(R: Tensor) -> Tensor:
    """Rotation matrices [..., 3, 3] -> unit quaternions [..., 4] with w >= 0. Per matrix, the largest of
    (w, x, y, z) is taken from the diagonal (the well-conditioned branch), the others from off-diagonals."""
    m = R
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # 4 * the squares of w, x, y, z
    sq = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    big = sq.argmax(-1)
    root = torch.sqrt(sq.clamp_min(1e-12))  # 2 * |component|
    d21, d02, d10 = m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]
    s10, s02, s21 = m[..., 1, 0] + m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 2, 1] + m[..., 1, 2]
    # one candidate per branch, each 4 * that branch's component times the quaternion
    c0 = torch.stack([sq[..., 0], d21, d02, d10], -1)
    c1 = torch.stack([d21, sq[..., 1], s10, s02], -1)
    c2 = torch.stack([d02, s10, sq[..., 2], s21], -1)
    c3 = torch.stack([d10, s02, s21, sq[..., 3]], -1)
    cand = torch.stack([c0, c1, c2, c3], -2) / (2 * root[..., :, None])  # [..., 4 branches, 4]
    q = torch.gather(cand, -2, big[..., None, None].expand(*big.shape, 1, 4)).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)
