"""Stage-2 losses (GPHMv2 eq. 19-20): L1 fine + 0.1 VGG + 0.1 L1 coarse + 0.1 landmarks + 0.001 motion."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from model.gaussian.config import GaussianConfig
from model.gaussian.model import GaussianOutputs
from model.guiding.losses import landmarks_to_canonical


@dataclass
class GaussianLossTerms:
    fine: Tensor
    vgg: Tensor
    coarse: Tensor
    landmarks: Tensor
    motion: Tensor
    total: Tensor

    def scalars(self) -> dict[str, float]:
        return {k: float(v.detach()) for k, v in self.__dict__.items()}


def gaussian_loss(config: GaussianConfig, out: GaussianOutputs, rgb: Tensor, coarse_rgb: Tensor, lmk3d: Tensor,
                  perceptual) -> GaussianLossTerms:
    """rgb: [B*V, 3, R_out, R_out] ground truth on black; coarse_rgb: [B*V, 3, R, R]; lmk3d: [B, L, 3] fitted
    world landmarks; perceptual: a PerceptualLoss (zero when it has no weights)."""
    fine = (out.fine - rgb).abs().mean()
    vgg = perceptual(out.fine, rgb)
    coarse = (out.coarse - coarse_rgb).abs().mean()
    target = landmarks_to_canonical(lmk3d, out.to_world)  # head lengths, whatever the world units
    landmarks = (out.landmarks_can - target).norm(dim=-1).mean()
    motion = out.delta_exp.norm(dim=-1).mean() + out.delta_nf.norm(dim=-1).mean()
    total = (fine + config.w_vgg * vgg + config.w_coarse * coarse + config.w_lmk * landmarks
             + config.w_reg * motion)
    return GaussianLossTerms(fine, vgg, coarse, landmarks, motion, total)
