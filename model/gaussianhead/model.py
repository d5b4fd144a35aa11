"""The GaussianHead model (sections 4.1-4.3, appendix A.3) in the head frame of a store clip's fit.

    x, q, s                [N, 3], [N, 4], [N, 3]     initial Gaussians (log scales), head-frame units
    (dx, dq, ds) = M_d(PE(x_n), e)                    8 x 256 ReLU MLP, input again before layer 4, linear heads
    core: x^ = x + dx, q^ = q + dq, s^ = s + ds       (x_n: x normalised by the tri-plane box)
    f = derived_features(tri-plane, x^_n, r)          [N, L] (derivation.py)
    (alpha logit, z) = D_alpha(f); SH = D_c(z, d)     d: unit view direction in the head frame
    colour = max(SH(d) + 0.5, 0); opacity = sigmoid(alpha logit)
then posed by the frame's fitted head pose (world = scale R x^ + t, the Gaussian's rotation composed with R)
and splatted by model.render.splat.render_gaussians into the clip's camera on black, as the ground truth
is composited. The paper anchors the head and moves the camera; posing the head instead is the same image.

Ablations: use_triplane=False (per-Gaussian opacity logits and SH coefficients, no decoders: "w/o
parametric tri-plane"), derivation="none" (axis-aligned tri-plane), derivation="global" (K rotations shared
by every Gaussian, TILTED-like).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from model.gaussian.quaternions import matrix_to_quat, quat_multiply
from model.gaussianhead.config import GaussianHeadConfig
from model.gaussianhead.derivation import derived_features, random_unit_quaternions
from model.gaussianhead.triplane import TriPlane
from model.render.splat import render_gaussians

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154, -0.4570457994644658,
         1.445305721320277, -0.5900435899266435)
DEFORM_INIT = 1e-2  # the offset heads start small: the core Gaussians start at the initial ones


def eval_sh(coeffs: Tensor, d: Tensor) -> Tensor:
    """Real SH up to degree 3 (3DGS's basis): coeffs [N, C, 3] with C in {1, 4, 9, 16}, d [N, 3] unit -> [N, 3]."""
    C = coeffs.shape[1]
    out = SH_C0 * coeffs[:, 0]
    if C == 1:
        return out
    x, y, z = d[:, :1], d[:, 1:2], d[:, 2:3]
    out = out - SH_C1 * y * coeffs[:, 1] + SH_C1 * z * coeffs[:, 2] - SH_C1 * x * coeffs[:, 3]
    if C == 4:
        return out
    xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
    out = (out + SH_C2[0] * xy * coeffs[:, 4] + SH_C2[1] * yz * coeffs[:, 5]
           + SH_C2[2] * (2 * zz - xx - yy) * coeffs[:, 6] + SH_C2[3] * xz * coeffs[:, 7]
           + SH_C2[4] * (xx - yy) * coeffs[:, 8])
    if C == 9:
        return out
    return (out + SH_C3[0] * y * (3 * xx - yy) * coeffs[:, 9] + SH_C3[1] * xy * z * coeffs[:, 10]
            + SH_C3[2] * y * (4 * zz - xx - yy) * coeffs[:, 11] + SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy) * coeffs[:, 12]
            + SH_C3[4] * x * (4 * zz - xx - yy) * coeffs[:, 13] + SH_C3[5] * z * (xx - yy) * coeffs[:, 14]
            + SH_C3[6] * x * (xx - 3 * yy) * coeffs[:, 15])


def positional_encoding(x: Tensor, freqs: int) -> Tensor:
    """[N, 3] -> [N, 3 + 6 freqs]: x, sin(2^i x), cos(2^i x) for i < freqs (NeRF's gamma)."""
    bands = 2.0 ** torch.arange(freqs, dtype=x.dtype, device=x.device)
    xb = (x[:, None, :] * bands[:, None]).flatten(1)
    return torch.cat([x, torch.sin(xb), torch.cos(xb)], -1)


def head_volume(landmarks: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """(centre [3], radii [3]) of the initial ellipsoid from head-frame landmarks [L, 3] (y up, z out of the
    face): half the landmarks' width a; the centre behind the face by 1.25 a and above the landmarks'
    middle by 0.35 a (the skull), radii margin * (a, 1.35 a, 1.25 a)."""
    lo, hi = landmarks.min(0), landmarks.max(0)
    a = (hi[0] - lo[0]) / 2
    centre = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2 + 0.35 * a, hi[2] - 1.25 * a])
    return centre.astype(np.float32), (margin * a * np.array([1.0, 1.35, 1.25])).astype(np.float32)


def initial_gaussians(centre: np.ndarray, radii: np.ndarray, n: int, generator: torch.Generator
                      ) -> dict[str, Tensor]:
    """n Gaussians uniform in the ellipsoid, identity rotations, isotropic scale half their mean spacing."""
    d = torch.randn(n, 3, generator=generator, dtype=torch.float64)
    d = d / d.norm(dim=1, keepdim=True) * torch.rand(n, 1, generator=generator, dtype=torch.float64) ** (1 / 3)
    xyz = torch.from_numpy(centre).double() + d * torch.from_numpy(radii).double()
    spacing = (4 / 3 * math.pi * float(np.prod(radii)) / n) ** (1 / 3)
    return {"xyz": xyz.float(), "rotation": torch.tensor([1.0, 0, 0, 0]).repeat(n, 1),
            "log_scale": torch.full((n, 3), math.log(0.5 * spacing))}


class DeformationField(nn.Module):
    """M_d: [PE(x_n), e] -> (dx, dq, ds), `depth` ReLU layers of `width`, the input again before `skip`."""

    def __init__(self, d_in: int, width: int, depth: int, skip: int):
        super().__init__()
        self.skip = skip
        self.layers = nn.ModuleList(
            [nn.Linear(d_in if i == 0 else width + (d_in if i == skip else 0), width) for i in range(depth)])
        self.heads = nn.ModuleList([nn.Linear(width, k) for k in (3, 4, 3)])
        with torch.no_grad():
            for head in self.heads:
                head.weight.mul_(DEFORM_INIT)
                head.bias.zero_()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        h = x
        for i, layer in enumerate(self.layers):
            h = torch.relu(layer(torch.cat([h, x], -1) if i == self.skip else h))
        return tuple(head(h) for head in self.heads)


def _mlp(d_in: int, width: int, linears: int, d_out: int) -> nn.Sequential:
    """`linears` linear layers (ReLU between them), the last giving d_out."""
    layers: list[nn.Module] = []
    d = d_in
    for _ in range(linears - 1):
        layers += [nn.Linear(d, width), nn.ReLU()]
        d = width
    layers.append(nn.Linear(d, d_out))
    return nn.Sequential(*layers)


@dataclass
class FrameInput:
    pose: Tensor  # [4, 4] head -> world (rotation part), with `scale`
    scale: Tensor  # [] head scale
    K: Tensor  # [3, 3] intrinsics at `resolution`
    world_to_cam: Tensor  # [4, 4] OpenCV
    expression: Tensor  # [E]
    resolution: int


@dataclass
class Render:
    image: Tensor  # [3, R, R] on black
    alpha: Tensor  # [R, R]
    means_world: Tensor  # [N, 3] (retain_grad() for densification statistics)
    opacity: Tensor  # [N]


PER_POINT = ("xyz", "rotation", "log_scale")  # per-Gaussian parameters besides the optional ones below


class GaussianHead(nn.Module):
    def __init__(self, config: GaussianHeadConfig, points: dict[str, Tensor], centre: Tensor, radius: float,
                 extent: float, expression_dim: int, generator: torch.Generator | None = None):
        """points: xyz [N, 3], rotation [N, 4], log_scale [N, 3] (optionally derivation, opacity_logit, sh_dc,
        sh_rest as a saved model has them); centre [3] and radius: the tri-plane box's centre and the head's
        largest radius; extent: the scene size the densification thresholds are shares of."""
        super().__init__()
        c = self.config = config
        N = points["xyz"].shape[0]
        for name in PER_POINT:
            setattr(self, name, nn.Parameter(points[name].detach().clone().float()))
        self.register_buffer("centre", torch.as_tensor(centre, dtype=torch.float32).clone())
        self.register_buffer("radius", torch.tensor(float(radius)))
        self.register_buffer("extent", torch.tensor(float(extent)))
        self.expression_dim = int(expression_dim)
        self.deform = DeformationField(3 + 6 * c.pe_freqs + expression_dim, c.deform_width, c.deform_depth,
                                       c.deform_skip)
        K, C = c.n_derivations, c.sh_coeffs
        self.derivation: nn.Parameter | None = None
        if c.use_triplane:
            self.triplane = TriPlane(c.plane_channels, c.plane_base, c.plane_scales, c.plane_init)
            if c.derivation != "none":
                shape = (N, K) if c.derivation == "per_gaussian" else (K,)
                r = points.get("derivation")
                self.derivation = nn.Parameter(r.clone() if r is not None else
                                               random_unit_quaternions(shape, generator))
            self.opacity_net = _mlp(c.plane_channels, c.opacity_width, c.opacity_depth, 1 + c.opacity_width)
            self.colour_net = _mlp(c.opacity_width + 3, c.colour_width, c.colour_depth - 1, c.colour_width) \
                if c.colour_depth > 1 else nn.Identity()
            d_hidden = c.colour_width if c.colour_depth > 1 else c.opacity_width + 3
            self.sh_dc_head = nn.Linear(d_hidden, 3)
            self.sh_rest_head = nn.Linear(d_hidden, 3 * (C - 1)) if C > 1 else None
        else:  # w/o parametric tri-plane: radiance optimised per Gaussian
            self.opacity_logit = nn.Parameter(points.get("opacity_logit", torch.full((N,), math.log(0.1 / 0.9))).clone())
            self.sh_dc = nn.Parameter(points.get("sh_dc", torch.zeros(N, 1, 3)).clone())
            self.sh_rest = nn.Parameter(points.get("sh_rest", torch.zeros(N, C - 1, 3)).clone())
        self.register_buffer("grad_accum", torch.zeros(N))  # densification statistics (densify.py)
        self.register_buffer("grad_count", torch.zeros(N))

    # --------------------------------------------------------------------------------------- structure
    @property
    def n_points(self) -> int:
        return self.xyz.shape[0]

    def per_point_names(self) -> list[str]:
        """The parameters with one row per Gaussian (densification edits them and their optimiser state)."""
        names = list(PER_POINT)
        if self.config.use_triplane and self.config.derivation == "per_gaussian":
            names.append("derivation")
        if not self.config.use_triplane:
            names += ["opacity_logit", "sh_dc", "sh_rest"]
        return names

    def points(self) -> dict[str, Tensor]:
        return {n: getattr(self, n).detach() for n in self.per_point_names()}

    def normalised(self, x: Tensor) -> Tensor:
        """Head-frame points [N, 3] -> the tri-plane box [-1, 1]^3 (the head inside +-1/plane_bound)."""
        return (x - self.centre) / (self.config.plane_bound * self.radius)

    # ----------------------------------------------------------------------------------------- forward
    def core(self, expression: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """expression [E] -> core Gaussians in the canonical space: x^ [N, 3], q^ [N, 4], s^ [N, 3] (log)."""
        x_n = self.normalised(self.xyz)
        e = expression.to(x_n)[None].expand(x_n.shape[0], -1)
        dx, dq, ds = self.deform(torch.cat([positional_encoding(x_n, self.config.pe_freqs), e], -1))
        return self.xyz + dx * self.radius, self.rotation + dq, self.log_scale + ds

    def radiance(self, x_core: Tensor, view_dir: Tensor) -> tuple[Tensor, Tensor]:
        """(opacity [N], colour [N, 3]) of core Gaussians x^ [N, 3] seen along view_dir [N, 3] (unit)."""
        c = self.config
        if not c.use_triplane:
            sh = torch.cat([self.sh_dc, self.sh_rest], 1)
            return torch.sigmoid(self.opacity_logit), torch.clamp_min(eval_sh(sh, view_dir) + 0.5, 0.0)
        r = None if self.derivation is None else self.derivation
        f = derived_features(self.triplane.planes, self.normalised(x_core), r, c.n_derivations)
        out = self.opacity_net(f)
        opacity, z = torch.sigmoid(out[:, 0]), out[:, 1:]
        h = self.colour_net(torch.cat([z, view_dir], -1))
        if c.colour_depth > 1:
            h = torch.relu(h)
        sh = self.sh_dc_head(h)[:, None]
        if self.sh_rest_head is not None:
            sh = torch.cat([sh, self.sh_rest_head(h).reshape(-1, c.sh_coeffs - 1, 3)], 1)
        else:
            sh = sh.reshape(-1, 1, 3)
        return opacity, torch.clamp_min(eval_sh(sh, view_dir) + 0.5, 0.0)

    def forward(self, frame: FrameInput) -> Render:
        x, q, s = self.core(frame.expression)
        R, t, k = frame.pose[:3, :3], frame.pose[:3, 3], frame.scale
        E = frame.world_to_cam
        cam_world = -E[:3, :3].T @ E[:3, 3]
        cam_head = R.T @ (cam_world - t) / k
        d = x - cam_head
        d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-9)
        opacity, colour = self.radiance(x, d)
        means = k * x @ R.T + t
        quats = quat_multiply(matrix_to_quat(R)[None], q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12))
        Rn = frame.resolution
        image, alpha = render_gaussians(means, quats, k * torch.exp(s), opacity, colour, frame.K[None], E[None],
                                        Rn, Rn, backend=self.config.backend)
        return Render(image=image[0].permute(2, 0, 1), alpha=alpha[0], means_world=means, opacity=opacity)


__all__ = ["DeformationField", "FrameInput", "GaussianHead", "Render", "eval_sh", "head_volume",
           "initial_gaussians", "positional_encoding"]
