"""Renders of a trained Gaussian head model in its canonical space: a turntable of a subject, an identity
x expression grid (GPHMv2 Fig. 5) and expression transfer from another clip.

The Gaussians are posed by the identity (canonical = world); cameras orbit the head centre with the
canonical axes: y up, z out of the face. Psi turns the 32-channel splat into RGB; images are
`size` pixels (the splat is rendered at size / Psi's upsampling factor).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from model.gaussian.model import CanonicalGaussians, GaussianModel, splat_posed
from model.render.cameras import fov_to_fit, intrinsics_for, orbit_cameras

DISTANCE = 3.0  # camera distance from the head centre, head lengths
FIT_RADIUS = 0.75  # radius of the sphere that must fit in the image (head and upper neck)


def head_centre(landmarks: Tensor) -> Tensor:
    """[3] the orbit centre: the canonical origin (skull centre) raised to the canonical landmarks' [L, 3]
    mean height."""
    centre = torch.zeros(3)
    centre[1] = 0.5 * float(landmarks.detach()[:, 1].mean())
    return centre


def ring(landmarks: Tensor, n: int, size: int, sweep_deg: float = 360.0, elevation_deg: float = 0.0
         ) -> tuple[Tensor, Tensor]:
    """n cameras around the head of canonical landmarks [L, 3] (a model's P0), the first in front of the face
    -> (K [n, 3, 3], world_to_cam [n, 4, 4])."""
    E = orbit_cameras(n, head_centre(landmarks), DISTANCE, up=(0.0, 1.0, 0.0), front=(0.0, 0.0, 1.0),
                      sweep_deg=sweep_deg, elevation_deg=elevation_deg)
    K = intrinsics_for(size, fov_to_fit(FIT_RADIUS, DISTANCE))
    return K[None].repeat(n, 1, 1), E


def motion_codes(model: GaussianModel, condition: Tensor, non_face: Tensor, rows: Tensor
                 ) -> tuple[Tensor, Tensor | None]:
    """condition, non_face: [B, 3, S, S]; rows: [B] -> (z_exp, z_nf or None): the encoders, or the v1 codes."""
    if model.config.motion == "encoders":
        return model.E_exp(condition), model.E_nf(non_face)
    return model.exp_codes[rows], None


@torch.no_grad()
def render(model: GaussianModel, z_id: Tensor, z_exp: Tensor, z_nf: Tensor | None, K: Tensor, E: Tensor,
           size: int) -> np.ndarray:
    """z_*: [B, *]; K: [V, 3, 3] at `size`; E: [V, 4, 4] -> uint8 [B, V, size, size, 3] (fine images)."""
    return render_canonical(model, model.canonical(z_id, z_exp, z_nf), K, E, size)


@torch.no_grad()
def render_canonical(model, g: CanonicalGaussians, K: Tensor, E: Tensor, size: int) -> np.ndarray:
    """Canonical Gaussians of B samples (canonical = world) seen by cameras K [V, 3, 3] at `size`, E [V, 4, 4]
    -> uint8 [B, V, size, size, 3] fine images; `model`: a GaussianModel or an Avatar (its Psi and backend)."""
    up = model.config.refine_upsample
    R = size // up
    K_splat = K.clone()
    K_splat[:, :2, :2] /= up
    K_splat[:, :2, 2] = (K[:, :2, 2] + 0.5) / up - 0.5
    B, V = g.means.shape[0], K.shape[0]
    device = g.means.device
    eye = torch.eye(3, device=device)[None].repeat(B, 1, 1)
    images = []
    for v0 in range(0, V, 8):  # a few cameras at a time bounds the memory of Psi at 512 px
        Kv = K_splat[v0:v0 + 8].to(device)[None].expand(B, -1, -1, -1)
        Ev = E[v0:v0 + 8].to(device)[None].expand(B, -1, -1, -1)
        features, _ = splat_posed(g, eye, torch.zeros(B, 3, device=device), Kv, Ev, R, R,
                                  model.gaussian_config.backend)
        fine = model.refine(features).clamp(0, 1)  # [B*v, 3, size, size]
        images.append(fine.view(B, -1, *fine.shape[1:]))
    x = torch.cat(images, 1).permute(0, 1, 3, 4, 2)
    return (x * 255 + 0.5).to(torch.uint8).cpu().numpy()


def random_identities(model: GaussianModel, n: int, seed: int = 0) -> Tensor:
    """[n, id_dim] codes drawn from a per-dimension Gaussian fitted to the trained codes, in the unit ball."""
    codes = model.id_codes.detach()
    gen = torch.Generator().manual_seed(seed)
    std = codes.std(0) if codes.shape[0] > 1 else codes.abs().mean(0)
    z = codes.mean(0) + std * torch.randn(n, codes.shape[1], generator=gen).to(codes.device)
    norm = z.norm(dim=-1, keepdim=True)
    return torch.where(norm > 1, z / norm, z)

