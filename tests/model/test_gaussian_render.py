"""The tile-based Gaussian rasterizer against a brute-force reference (images, alphas, gradients),
tiling/chunking invariance, and analytic projection checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datasets.capture.rig import look_at
from model.render.gaussians import project_gaussians, rasterize_gaussians
from tests.model.gaussian_reference import dense_reference

H, W = 24, 32


def _cameras(n_cams=2, f=40.0, distance=3.0):
    K = torch.tensor([[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1]], dtype=torch.float64)
    positions = [(0.0, 0.0, distance), (distance * np.sin(0.6), 0.4, distance * np.cos(0.6))][:n_cams]
    E = torch.stack([torch.tensor(look_at(np.array(p), np.zeros(3)), dtype=torch.float64) for p in positions])
    return K[None].repeat(len(positions), 1, 1), E


def _scene(n=40, d=4, seed=0, opaque=False, per_camera_colors=False, n_cams=2):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.rand(*s, generator=g, dtype=torch.float64)  # noqa: E731
    means = (r(n, 3) - 0.5) * 1.0
    quats = torch.randn(n, 4, generator=g, dtype=torch.float64)
    scales = 0.03 + 0.12 * r(n, 3) if not opaque else 0.1 + 0.15 * r(n, 3)
    opac = 0.2 + 0.75 * r(n) if not opaque else 0.9 + 0.099 * r(n)
    colors = r(n_cams, n, d) if per_camera_colors else r(n, d)
    K, E = _cameras(n_cams)
    return dict(means=means, quats=quats, scales=scales, opacities=opac, colors=colors, K=K, world_to_cam=E)


_GRAD_KEYS = ("means", "quats", "scales", "opacities", "colors")


def _render_with_grads(fn, scene, seed=1, **kw):
    leaves = {k: (v.clone().requires_grad_(True) if k in _GRAD_KEYS else v) for k, v in scene.items()}
    image, alpha = fn(leaves["means"], leaves["quats"], leaves["scales"], leaves["opacities"], leaves["colors"],
                      leaves["K"], leaves["world_to_cam"], H, W, **kw)
    g = torch.Generator().manual_seed(seed)
    loss = (image * torch.randn(image.shape, generator=g, dtype=image.dtype)).sum()
    loss = loss + (alpha * torch.randn(alpha.shape, generator=g, dtype=alpha.dtype)).sum()
    loss.backward()
    return image.detach(), alpha.detach(), {k: leaves[k].grad for k in _GRAD_KEYS}


@pytest.mark.parametrize(
    "n,d,seed,opaque,per_cam",
    [(20, 4, 0, False, False), (60, 32, 1, False, False), (40, 4, 2, True, False), (30, 8, 3, False, True)],
)
def test_matches_dense_reference(n, d, seed, opaque, per_cam):
    scene = _scene(n, d, seed, opaque, per_cam)
    bg = torch.linspace(0, 1, d, dtype=torch.float64)
    img, alpha, grads = _render_with_grads(rasterize_gaussians, scene, tile_size=8, background=bg)
    img_r, alpha_r, grads_r = _render_with_grads(dense_reference, scene, background=bg)
    assert alpha.max() > 0.5  # the scene is actually visible
    if opaque:  # some pixels hit the transmittance cut-off
        assert alpha.max() > 1 - 1e-3
    assert (img - img_r).abs().max() < 1e-4
    assert (alpha - alpha_r).abs().max() < 1e-4
    for k in _GRAD_KEYS:
        ref = grads_r[k]
        assert ref.norm() > 0, k
        assert (grads[k] - ref).norm() / ref.norm() < 1e-3, k


def test_tile_size_and_chunking_invariance():
    scene = _scene(50, 4, seed=5)
    args = [scene[k] for k in ("means", "quats", "scales", "opacities", "colors", "K", "world_to_cam")]
    img16, a16 = rasterize_gaussians(*args, H, W, tile_size=16)
    img8, a8 = rasterize_gaussians(*args, H, W, tile_size=8)
    img_small, a_small = rasterize_gaussians(*args, H, W, tile_size=8, max_pairs=64 * 3)  # 3 Gaussians per step
    for img, a in ((img8, a8), (img_small, a_small)):
        assert (img - img16).abs().max() < 1e-10
        assert (a - a16).abs().max() < 1e-10
    assert a16.max() > 0.5


def test_head_on_isotropic_gaussian_projection():
    f, z, s = 50.0, 2.0, 0.04
    K = torch.tensor([[[f, 0, 15.5], [0, f, 11.5], [0, 0, 1]]], dtype=torch.float64)
    E = torch.eye(4, dtype=torch.float64)[None]
    means = torch.tensor([[0.0, 0.0, z], [0.1, -0.05, z]], dtype=torch.float64)
    quats = torch.tensor([[1.0, 0, 0, 0], [0.3, 0.2, -0.5, 0.7]], dtype=torch.float64)
    scales = torch.full((2, 3), s, dtype=torch.float64)
    means2d, conics, depths, radii = project_gaussians(means, quats, scales, K, E, width=32, height=24)
    expected = torch.tensor([[15.5, 11.5], [15.5 + f * 0.1 / z, 11.5 - f * 0.05 / z]], dtype=torch.float64)
    assert torch.allclose(means2d[0], expected, atol=1e-12)
    assert torch.allclose(depths[0], torch.tensor([z, z], dtype=torch.float64))
    a, b, c = conics[0, 0]
    cov = torch.linalg.inv(torch.stack([torch.stack([a, b]), torch.stack([b, c])]))
    var = (f * s / z) ** 2 + 0.3
    assert torch.allclose(cov, var * torch.eye(2, dtype=torch.float64), atol=1e-10)
    assert int(radii[0, 0]) == int(np.ceil(3 * np.sqrt(var)))
    # the rendered peak sits at the projected centre
    image, alpha = rasterize_gaussians(means[:1], quats[:1], scales[:1], torch.tensor([0.8], dtype=torch.float64),
                                       torch.ones(1, 1, dtype=torch.float64), K, E, 24, 32)
    assert abs(float(alpha[0, 11:13, 15:17].max()) - 0.8 * np.exp(-0.5 * 0.5 / var)) < 1e-9
    assert float(alpha[0].sum() - alpha[0, 11:13, 15:17].sum()) < 4 * float(alpha[0, 11:13, 15:17].sum())


def test_gaussian_behind_camera_contributes_nothing():
    scene = _scene(20, 4, seed=7)
    args = [scene[k] for k in ("means", "quats", "scales", "opacities", "colors", "K", "world_to_cam")]
    img0, a0 = rasterize_gaussians(*args, H, W)
    # a large, opaque Gaussian on the optical axis behind the first camera (world z = +5, camera at z = 3)
    extra = dict(means=torch.tensor([[0.0, 0.0, 5.0]]), quats=torch.tensor([[1.0, 0, 0, 0]]),
                 scales=torch.tensor([[0.5, 0.5, 0.5]]), opacities=torch.tensor([1.0]), colors=torch.ones(1, 4))
    cat = {k: torch.cat([scene[k], extra[k].double()]) for k in extra}
    img1, a1 = rasterize_gaussians(cat["means"], cat["quats"], cat["scales"], cat["opacities"], cat["colors"],
                                   scene["K"][:1], scene["world_to_cam"][:1], H, W)
    _, _, depths, radii = project_gaussians(cat["means"], cat["quats"], cat["scales"], scene["K"][:1],
                                            scene["world_to_cam"][:1], width=W, height=H)
    assert depths[0, -1] < 0 and radii[0, -1] == 0
    assert torch.equal(img1, img0[:1]) and torch.equal(a1, a0[:1])
