"""The renderers compute in float32 inside a bf16 autocast region (TrainConfig.amp): same images as without
autocast, float32 outputs, and bf16 inputs (an MLP's output under autocast) cast up. Checked with the CPU's
autocast; CUDA's takes the same code path (model/render/precision.py)."""

from __future__ import annotations

import numpy as np
import torch

from datasets.capture.rig import look_at
from model.gaussian.model import CanonicalGaussians, splat_posed
from model.render.mesh import interpolate, rasterize, soft_silhouette
from model.render.splat import render_gaussians, render_gaussians_batched

H, W = 24, 32


def _cameras(n: int = 2):
    K = torch.tensor([[40.0, 0, (W - 1) / 2], [0, 40.0, (H - 1) / 2], [0, 0, 1]])
    E = [look_at(np.array([3 * np.sin(a), 0.2, 3 * np.cos(a)]), np.zeros(3)) for a in np.linspace(-0.4, 0.4, n)]
    return K[None].repeat(n, 1, 1), torch.tensor(np.stack(E), dtype=torch.float32)


def _gaussians(n: int = 50, d: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, generator=g) - 0.5, torch.randn(n, 4, generator=g), 0.02 + 0.06 * torch.rand(n, 3, generator=g),
            0.2 + 0.7 * torch.rand(n, generator=g), torch.rand(n, d, generator=g))


def _bf16():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def test_gaussian_renders_are_float32_and_unchanged_under_autocast():
    K, E = _cameras()
    args = (*_gaussians(), K, E, H, W)
    ref_img, ref_alpha = render_gaussians(*args, backend="torch")
    with _bf16():
        assert torch.matmul(K, K).dtype == torch.bfloat16  # autocast is on
        img, alpha = render_gaussians(*args, backend="torch")
        batched, _ = render_gaussians_batched(*(a[None] for a in args[:7]), H, W, backend="torch")
    assert img.dtype == alpha.dtype == batched.dtype == torch.float32
    assert ref_alpha.max() > 0.5
    assert torch.equal(img, ref_img) and torch.equal(alpha, ref_alpha) and torch.equal(batched[0], ref_img)


def test_bf16_inputs_are_cast_up_to_float32():
    K, E = _cameras()
    means, quats, scales, opacities, colors = _gaussians()
    img, _ = render_gaussians(means, quats, scales, opacities, colors.bfloat16(), K, E, H, W, backend="torch")
    ref, _ = render_gaussians(means, quats, scales, opacities, colors.bfloat16().float(), K, E, H, W, backend="torch")
    assert img.dtype == torch.float32 and torch.equal(img, ref)


def test_posing_and_splatting_of_the_gaussian_model_stay_float32_under_autocast():
    K, E = _cameras()
    means, quats, scales, opacities, colors = _gaussians()
    zeros = torch.zeros(1, 50, 3)
    g = CanonicalGaussians(means=means[None], quats=quats[None], log_scales=scales.log()[None],
                           opacities=opacities[None], colours=colors[None], delta_exp=zeros, delta_nf=zeros,
                           landmarks=torch.zeros(1, 68, 3))
    c, s = np.cos(0.3), np.sin(0.3)
    M = 1.1 * torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=torch.float32)[None]
    t = torch.tensor([[0.0, 0.05, -0.1]])
    ref = splat_posed(g, M, t, K[None], E[None], H, W, "torch")
    with _bf16():
        out = splat_posed(g, M, t, K[None], E[None], H, W, "torch")
    assert out[0].dtype == torch.float32 and torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1])


def test_mesh_rasterization_is_float32_and_unchanged_under_autocast():
    from datasets.synthhead.proxies import ellipsoid

    v, f = ellipsoid((0.0, 0.0, 0.0), (0.5, 0.6, 0.5), 12, 16)
    verts, faces = torch.tensor(v, dtype=torch.float32), torch.tensor(f)
    K, E = _cameras()
    attrs = torch.rand(verts.shape[0], 5, generator=torch.Generator().manual_seed(3))
    ref = rasterize(verts, faces, K, E, H, W)
    ref_feat = interpolate(attrs, faces, ref)
    ref_soft = soft_silhouette(verts, faces, K, E, H, W)
    with _bf16():
        rast = rasterize(verts, faces, K, E, H, W)
        feat = interpolate(attrs, faces, rast)
        soft = soft_silhouette(verts, faces, K, E, H, W)
    assert ref.mask.float().mean() > 0.2
    assert torch.equal(rast.face_id, ref.face_id) and torch.equal(rast.bary_covered, ref.bary_covered)
    assert feat.dtype == soft.dtype == torch.float32
    assert torch.equal(feat, ref_feat) and torch.equal(soft, ref_soft)
