"""Stage-1 losses (GPHMv2 eq. 12-18) and the evaluation metrics."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from model.guiding.config import GuidingConfig


def iou_loss(mask: Tensor, target: Tensor, eps: float = 1e-6) -> Tensor:
    """1 - soft IoU per image, averaged. mask, target: [B, H, W] in [0, 1]."""
    inter = (mask * target).flatten(1).sum(1)
    union = (mask + target - mask * target).flatten(1).sum(1)
    return (1 - inter / (union + eps)).mean()


def iou(mask: Tensor, target: Tensor) -> Tensor:
    """[B] IoU of boolean masks [B, H, W] (1 where both are empty)."""
    inter = (mask & target).flatten(1).sum(1).float()
    union = (mask | target).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def uniform_laplacian(verts: Tensor, faces: Tensor) -> Tensor:
    """Mean squared uniform Laplacian ||v - mean(neighbours)||^2. verts: [B, N, 3]; faces: [F, 3]."""
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    edges = torch.cat([edges, edges.flip(1)])  # both directions (each undirected edge twice on a closed mesh)
    N = verts.shape[1]
    degree = torch.zeros(N, device=verts.device).index_add_(0, edges[:, 0], torch.ones(len(edges), device=verts.device))
    summed = torch.zeros_like(verts).index_add_(1, edges[:, 0], verts[:, edges[:, 1]])
    lap = verts - summed / degree.clamp_min(1)[None, :, None]
    return (lap ** 2).sum(-1).mean()


def landmarks_to_canonical(landmarks: Tensor, to_world: tuple[Tensor, Tensor]) -> Tensor:
    """World landmarks [B, L, 3] -> canonical, inverting world = A c + b (A: [B, 3, 3], b: [B, 3])."""
    A, b = to_world
    return torch.linalg.solve(A[:, None], (landmarks - b[:, None])[..., None])[..., 0]


@dataclass
class LossTerms:
    fine: Tensor
    silhouette: Tensor
    coarse: Tensor
    landmarks: Tensor
    motion: Tensor
    laplacian: Tensor
    total: Tensor

    def scalars(self) -> dict[str, float]:
        return {k: float(v.detach()) for k, v in self.__dict__.items()}


def guiding_loss(config: GuidingConfig, out, rgb: Tensor, alpha: Tensor, coarse_rgb: Tensor, lmk3d: Tensor
                 ) -> LossTerms:
    """out: model Outputs; rgb: [B*V, 3, R_out, R_out] ground truth on black; alpha: [B*V, R, R] in [0, 1]
    at render resolution; coarse_rgb: [B*V, 3, R, R]; lmk3d: [B, L, 3] fitted world landmarks."""
    fine = (out.fine - rgb).abs().mean()
    silhouette = iou_loss(out.soft_mask, alpha)
    coarse = (out.coarse - coarse_rgb).abs().mean()
    target = landmarks_to_canonical(lmk3d, out.to_world)  # in head lengths, whatever the world units
    landmarks = (out.landmarks_can - target).norm(dim=-1).mean()
    motion = out.delta_exp.norm(dim=-1).mean() + out.delta_nf.norm(dim=-1).mean()
    laplacian = uniform_laplacian(out.verts_can, out.faces)
    total = (fine + config.w_sil * silhouette + config.w_coarse * coarse + config.w_lmk * landmarks
             + config.w_reg * motion + config.w_lap * laplacian)
    return LossTerms(fine, silhouette, coarse, landmarks, motion, laplacian, total)
