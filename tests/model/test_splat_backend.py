"""render_gaussians: backend dispatch on CPU, and torch vs gsplat on CUDA (skipped without a GPU).

The two backends differ only in the footprint rule (see model/render/splat.py): the torch path cuts at
Mahalanobis^2 q <= 9, gsplat 1.5.3 lists a Gaussian in the tiles of its opacity-aware box
ceil(sqrt(2 ln(255 o)) * sigma_x|y) and composites wherever alpha >= 1/255. The cross-backend scene keeps
o <= 0.3 (so o exp(-4.5) < 1/255: the alpha threshold is the binding rule for both) and drops Gaussians with a
pixel within float32 round-off of alpha = 1/255; a CPU test checks this design against a dense emulation of
gsplat's selection rule, so the CUDA test only measures the kernels' arithmetic.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from datasets.capture.rig import look_at
from model.render.gaussians import project_gaussians, rasterize_gaussians
from model.render.splat import (
    BACKENDS,
    available_backends,
    render_gaussians,
    render_gaussians_batched,
)

GRAD_KEYS = ("means", "quats", "scales", "opacities", "colors")
ALPHA_MIN = 1.0 / 255.0


def _cameras(n_cams, H, W, f, distance=3.0, dtype=torch.float32):
    K = torch.tensor([[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1]], dtype=dtype)
    angles = np.linspace(-0.5, 0.5, n_cams) if n_cams > 1 else [0.0]
    E = [look_at(np.array([distance * np.sin(a), 0.3 * a, distance * np.cos(a)]), np.zeros(3)) for a in angles]
    return K[None].repeat(n_cams, 1, 1), torch.tensor(np.stack(E), dtype=dtype)


def _random_scene(n, d, n_cams, H, W, *, seed=0, f=80.0, opacity=(0.05, 0.3), per_camera_colors=False,
                  dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.rand(*s, generator=g, dtype=dtype)  # noqa: E731
    lo, hi = opacity
    K, E = _cameras(n_cams, H, W, f, dtype=dtype)
    return dict(
        means=(r(n, 3) - 0.5) * 1.0,
        quats=torch.randn(n, 4, generator=g, dtype=dtype),
        scales=0.01 + 0.05 * r(n, 3),
        opacities=lo + (hi - lo) * r(n),
        colors=r(n_cams, n, d) if per_camera_colors else r(n, d),
        K=K,
        world_to_cam=E,
    )


def _pair_q(scene, H, W):
    """float64 Mahalanobis^2 of every (camera, Gaussian, pixel) -> q [C,N,H*W], valid [C,N], depths [C,N],
    means2d [C,N,2], cov2d diagonal [C,N,2]."""
    s = {k: v.double() for k, v in scene.items()}
    m2, con, depths, radii = project_gaussians(s["means"], s["quats"], s["scales"], s["K"], s["world_to_cam"],
                                               width=W, height=H)
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64),
                            indexing="ij")
    dx = xs.reshape(1, 1, -1) - m2[..., 0:1]
    dy = ys.reshape(1, 1, -1) - m2[..., 1:2]
    a, b, c = con[..., 0:1], con[..., 1:2], con[..., 2:3]
    q = a * dx * dx + 2 * b * dx * dy + c * dy * dy
    det = (a * c - b * b)[..., 0]
    cov_diag = torch.stack([c[..., 0] / det, a[..., 0] / det], -1)  # cov2d = inverse of the conic
    return q, radii > 0, depths, m2, cov_diag


def _agreement_scene(n=200, d=32, n_cams=2, H=48, W=64, seed=0, margin=2e-3, **kw):
    """A random scene where both footprint rules select the same pairs, with every (pixel, Gaussian) pair at
    least `margin` (in q) away from the alpha = 1/255 contour, so float32 round-off cannot flip a decision."""
    scene = _random_scene(n, d, n_cams, H, W, seed=seed, **kw)
    assert float(scene["opacities"].max()) * math.exp(-4.5) < ALPHA_MIN  # beyond 3 sigma, alpha < 1/255
    q, valid, _, _, _ = _pair_q(scene, H, W)
    q_thr = 2 * torch.log(255.0 * scene["opacities"].double())  # alpha = 1/255 contour, always < 9 here
    near_contour = ((q - q_thr[None, :, None]).abs() < margin).any(-1) & valid  # [C,N]
    keep = ~near_contour.any(0)
    out = {k: (v[..., keep, :] if k == "colors" else v[keep]) if k not in ("K", "world_to_cam") else v
           for k, v in scene.items()}
    return out, int(keep.sum())


def _gsplat_rule_dense(scene, H, W, background=None):
    """Dense float64 emulation of gsplat 1.5.3's selection rule on our pixel grid: no sigma cut; a Gaussian is
    culled if o < 1/255 or outside the image by its box; it reaches the pixels of the tiles of its box
    radius = ceil(min(3.33, sqrt(2 ln(255 o))) * sqrt(cov2d diagonal)); alpha >= 1/255 composites, T <= 1e-4 stops.
    Coordinates are gsplat's (ours + 0.5)."""
    ts = 16
    s = {k: v.double() for k, v in scene.items()}
    q, valid, depths, m2, cov_diag = _pair_q(scene, H, W)
    C, N = q.shape[:2]
    o = s["opacities"]
    extend = torch.clamp(torch.sqrt(2 * torch.log(255.0 * o.clamp_min(ALPHA_MIN))), max=3.33)
    radius = torch.ceil(extend[None, :, None] * cov_diag.sqrt())  # [C,N,2]
    mg = m2 + 0.5  # gsplat pixel coordinates
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    tx, ty = (xs // ts).reshape(-1), (ys // ts).reshape(-1)
    images, alphas = [], []
    for cam in range(C):
        cols = s["colors"][cam] if s["colors"].dim() == 3 else s["colors"]
        image = torch.zeros(H * W, cols.shape[-1], dtype=torch.float64)
        T = torch.ones(H * W, dtype=torch.float64)
        done = torch.zeros(H * W, dtype=torch.bool)
        for n in torch.argsort(depths[cam]).tolist():
            rx, ry = radius[cam, n]
            mx, my = mg[cam, n]
            if not valid[cam, n] or o[n] < ALPHA_MIN:
                continue
            if mx + rx <= 0 or mx - rx >= W or my + ry <= 0 or my - ry >= H:
                continue
            in_tiles = ((tx >= math.floor((mx - rx) / ts)) & (tx < math.ceil((mx + rx) / ts))
                        & (ty >= math.floor((my - ry) / ts)) & (ty < math.ceil((my + ry) / ts)))
            alpha = torch.clamp(o[n] * torch.exp(-0.5 * q[cam, n]), max=0.999)
            considered = in_tiles & (alpha >= ALPHA_MIN) & ~done
            next_T = T * (1 - alpha)
            composite = considered & (next_T > 1e-4)
            done = done | (considered & ~composite)
            image = image + torch.where(composite, alpha * T, 0.0)[:, None] * cols[n]
            T = torch.where(composite, next_T, T)
        if background is not None:
            image = image + T[:, None] * background.double()
        images.append(image.view(H, W, -1))
        alphas.append((1 - T).view(H, W))
    return torch.stack(images), torch.stack(alphas)


def _args(scene, H, W):
    return (scene["means"], scene["quats"], scene["scales"], scene["opacities"], scene["colors"], scene["K"],
            scene["world_to_cam"], H, W)


# ------------------------------------------------------------------------------------------------ CPU


def test_torch_and_auto_backends_equal_rasterize_gaussians_on_cpu():
    H, W, d = 24, 32, 32
    scene = _random_scene(60, d, 2, H, W, seed=3, f=40.0, opacity=(0.2, 0.95))
    bg = torch.linspace(0, 1, d)
    ref_img, ref_alpha = rasterize_gaussians(*_args(scene, H, W), background=bg)
    assert ref_img.shape == (2, H, W, d) and ref_alpha.shape == (2, H, W)
    assert ref_alpha.max() > 0.5
    for backend in ("torch", "auto"):
        img, alpha = render_gaussians(*_args(scene, H, W), backend=backend, background=bg)
        assert torch.equal(img, ref_img) and torch.equal(alpha, ref_alpha), backend


def test_torch_backend_passes_options_through():
    H, W = 24, 32
    scene = _random_scene(40, 4, 2, H, W, seed=4, f=40.0, per_camera_colors=True, dtype=torch.float64)
    for kw in (dict(near=2.9), dict(eps2d=0.1)):
        ref = rasterize_gaussians(*_args(scene, H, W), **kw)
        out = render_gaussians(*_args(scene, H, W), backend="torch", **kw)
        assert torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1])


def test_gsplat_backend_on_cpu_tensors_raises():
    H, W = 16, 16
    scene = _random_scene(10, 32, 1, H, W)
    with pytest.raises(RuntimeError, match="gsplat"):
        render_gaussians(*_args(scene, H, W), backend="gsplat")


def test_unknown_backend_raises():
    H, W = 16, 16
    scene = _random_scene(10, 3, 1, H, W)
    with pytest.raises(ValueError, match="unknown Gaussian render backend"):
        render_gaussians(*_args(scene, H, W), backend="optix")


def test_available_backends():
    names = available_backends()
    assert names[0] == "torch" and set(names) <= set(BACKENDS) - {"auto"}
    if not torch.cuda.is_available():
        assert names == ["torch"]


def test_agreement_scene_selects_the_same_pairs_under_both_footprint_rules():
    """The cross-backend scene, checked without a GPU: our path equals a dense emulation of gsplat's rule."""
    H, W = 48, 64
    scene, n_kept = _agreement_scene(H=H, W=W)
    assert n_kept >= 150
    bg = torch.linspace(0, 1, 32, dtype=torch.float64)
    s64 = {k: v.double() for k, v in scene.items()}
    img, alpha = rasterize_gaussians(*_args(s64, H, W), background=bg)
    img_g, alpha_g = _gsplat_rule_dense(scene, H, W, background=bg)
    assert 0.5 < float(alpha.max()) < 0.99  # visible, and far from the T = 1e-4 stop
    assert (alpha > 0).float().mean() > 0.3
    torch.testing.assert_close(img, img_g, atol=1e-10, rtol=0)
    torch.testing.assert_close(alpha, alpha_g, atol=1e-10, rtol=0)


def test_footprint_rules_differ_for_opaque_gaussians():
    """The documented difference: with o > ~0.353 gsplat's rule adds a faint ring beyond 3 sigma."""
    H, W = 48, 64
    scene = _random_scene(40, 3, 1, H, W, seed=5, opacity=(0.8, 0.95))
    s64 = {k: v.double() for k, v in scene.items()}
    _, alpha = rasterize_gaussians(*_args(s64, H, W))
    _, alpha_g = _gsplat_rule_dense(scene, H, W)
    diff = (alpha_g - alpha).abs().max()
    assert 1e-4 < float(diff) < 0.05


def _batch_of_scenes(n_scenes, n, d, n_cams, H, W, per_camera_colors=False, dtype=torch.float32, **kw):
    """B scenes of n Gaussians each, every scene with its own cameras (a training batch) -> dict of [B, ...]."""
    scenes = [_random_scene(n, d, n_cams, H, W, seed=10 + b, per_camera_colors=per_camera_colors, dtype=dtype,
                            **kw) for b in range(n_scenes)]
    for b, s in enumerate(scenes):  # different cameras per scene too
        s["world_to_cam"][:, :3, 3] += 0.1 * b
    return {k: torch.stack([s[k] for s in scenes]) for k in scenes[0]}


def _render_batched_with_grads(batch, H, W, backend, background, batched=True, seed=2):
    leaves = {k: (v.clone().requires_grad_(True) if k in GRAD_KEYS else v) for k, v in batch.items()}
    if batched:
        image, alpha = render_gaussians_batched(*_args(leaves, H, W), backend=backend, background=background)
    else:
        parts = [render_gaussians(*_args({k: v[b] for k, v in leaves.items()}, H, W), backend=backend,
                                  background=background) for b in range(batch["means"].shape[0])]
        image, alpha = torch.stack([p[0] for p in parts]), torch.stack([p[1] for p in parts])
    g = torch.Generator(device="cpu").manual_seed(seed)
    w_img = torch.randn(image.shape, generator=g, dtype=image.dtype).to(image.device)
    w_alpha = torch.randn(alpha.shape, generator=g, dtype=alpha.dtype).to(alpha.device)
    ((image * w_img).sum() + (alpha * w_alpha).sum()).backward()
    return image.detach(), alpha.detach(), {k: leaves[k].grad for k in GRAD_KEYS}


@pytest.mark.parametrize("per_camera_colors", [False, True])
def test_batched_torch_path_equals_per_scene_calls(per_camera_colors):
    """The Gaussian model renders a batch through render_gaussians_batched: on the torch path it must give
    exactly the images and gradients of one render_gaussians call per scene."""
    H, W, d = 24, 32, 8
    batch = _batch_of_scenes(3, 40, d, 2, H, W, per_camera_colors=per_camera_colors, f=40.0, opacity=(0.2, 0.95))
    bg = torch.linspace(0, 1, d)
    for backend in ("torch", "auto"):
        img, alpha, grads = _render_batched_with_grads(batch, H, W, backend, bg)
        img_r, alpha_r, grads_r = _render_batched_with_grads(batch, H, W, backend, bg, batched=False)
        assert img.shape == (3, 2, H, W, d) and alpha.shape == (3, 2, H, W)
        assert alpha.max() > 0.5
        assert torch.equal(img, img_r) and torch.equal(alpha, alpha_r), backend
        for k in GRAD_KEYS:
            assert torch.equal(grads[k], grads_r[k]), (backend, k)


def test_batched_torch_path_passes_options_through():
    H, W = 24, 32
    batch = _batch_of_scenes(2, 30, 4, 2, H, W, f=40.0, dtype=torch.float64)
    for kw in ({"near": 2.9}, {"eps2d": 0.1}):
        img, alpha = render_gaussians_batched(*_args(batch, H, W), backend="torch", **kw)
        for b in range(2):
            ref = rasterize_gaussians(*_args({k: v[b] for k, v in batch.items()}, H, W), **kw)
            assert torch.equal(img[b], ref[0]) and torch.equal(alpha[b], ref[1])


def test_batched_shapes_are_checked_and_gsplat_refuses_cpu_tensors():
    H, W = 16, 16
    batch = _batch_of_scenes(2, 10, 3, 1, H, W)
    bad = dict(batch, opacities=batch["opacities"][:1])
    with pytest.raises(ValueError, match="opacities"):
        render_gaussians_batched(*_args(bad, H, W), backend="torch")
    with pytest.raises(ValueError, match="means must be"):
        render_gaussians_batched(*_args(dict(batch, means=batch["means"][0]), H, W), backend="torch")
    with pytest.raises(ValueError, match="colors must be"):
        render_gaussians_batched(*_args(dict(batch, colors=batch["colors"][:, :5]), H, W), backend="torch")
    with pytest.raises(RuntimeError, match="gsplat"):
        render_gaussians_batched(*_args(batch, H, W), backend="gsplat")


# ------------------------------------------------------------------------------------------------ CUDA


def _render_with_grads(scene, H, W, backend, background, seed=1):
    leaves = {k: (v.clone().requires_grad_(True) if k in GRAD_KEYS else v) for k, v in scene.items()}
    image, alpha = render_gaussians(*_args(leaves, H, W), backend=backend, background=background)
    g = torch.Generator(device="cpu").manual_seed(seed)
    w_img = torch.randn(image.shape, generator=g).to(image.device)
    w_alpha = torch.randn(alpha.shape, generator=g).to(alpha.device)
    ((image * w_img).sum() + (alpha * w_alpha).sum()).backward()
    return image.detach(), alpha.detach(), {k: leaves[k].grad for k in GRAD_KEYS}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="gsplat rasterizes only on CUDA")
@pytest.mark.parametrize("per_camera_colors", [False, True])
def test_gsplat_matches_torch_backend_on_cuda(per_camera_colors):
    pytest.importorskip("gsplat")
    assert "gsplat" in available_backends()
    H, W, d = 48, 64, 32
    scene, n_kept = _agreement_scene(n=200, d=d, n_cams=2, H=H, W=W, per_camera_colors=per_camera_colors)
    assert n_kept >= 150
    scene = {k: v.cuda() for k, v in scene.items()}
    bg = torch.linspace(0, 1, d, device="cuda")
    img_t, alpha_t, grads_t = _render_with_grads(scene, H, W, "torch", bg)
    img_g, alpha_g, grads_g = _render_with_grads(scene, H, W, "gsplat", bg)
    img_a, _ = render_gaussians(*_args(scene, H, W), backend="auto", background=bg)  # auto picks gsplat on CUDA
    assert img_g.shape == img_t.shape == (2, H, W, d) and alpha_g.shape == alpha_t.shape == (2, H, W)
    assert 0.5 < float(alpha_t.max()) < 0.99
    assert float((img_t - img_g).abs().max()) < 1e-4
    assert float((alpha_t - alpha_g).abs().max()) < 1e-4
    assert float((img_a - img_g).abs().max()) < 1e-6
    for k in GRAD_KEYS:
        gt, gg = grads_t[k], grads_g[k]
        assert gg is not None and gg.shape == gt.shape, k
        assert float(gt.norm()) > 0, k
        rel = float((gt - gg).norm() / gt.norm())
        assert rel < 1e-3, f"{k}: relative gradient difference {rel:.2e}"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="gsplat rasterizes only on CUDA")
@pytest.mark.parametrize("per_camera_colors", [False, True])
def test_batched_gsplat_call_matches_per_scene_calls_and_the_torch_path(per_camera_colors):
    """One gsplat call over a batch of scenes against one call per scene (the same kernels: equal to float
    round-off) and against the torch path (the cross-backend tolerances above)."""
    pytest.importorskip("gsplat")
    H, W, d = 48, 64, 32
    scenes = [_agreement_scene(n=200, d=d, n_cams=2, H=H, W=W, seed=s, per_camera_colors=per_camera_colors)[0]
              for s in range(3)]
    n = min(s["means"].shape[0] for s in scenes)  # a batch needs one N: keep the first n of each

    def first(k, v):  # the Gaussian axis is the last but one of per-camera colours, else the first
        if k in ("K", "world_to_cam"):
            return v
        return v[..., :n, :] if k == "colors" and v.dim() == 3 else v[:n]

    batch = {k: torch.stack([first(k, s[k]) for s in scenes]).cuda() for k in scenes[0]}
    bg = torch.linspace(0, 1, d, device="cuda")
    img_b, alpha_b, grads_b = _render_batched_with_grads(batch, H, W, "gsplat", bg)
    img_s, alpha_s, grads_s = _render_batched_with_grads(batch, H, W, "gsplat", bg, batched=False)
    img_t, alpha_t, grads_t = _render_batched_with_grads(batch, H, W, "torch", bg)
    assert img_b.shape == (3, 2, H, W, d) and alpha_b.shape == (3, 2, H, W)
    assert float((img_b - img_s).abs().max()) < 1e-6 and float((alpha_b - alpha_s).abs().max()) < 1e-6
    assert float((img_b - img_t).abs().max()) < 1e-4 and float((alpha_b - alpha_t).abs().max()) < 1e-4
    for k in GRAD_KEYS:
        assert float((grads_b[k] - grads_s[k]).norm() / grads_s[k].norm()) < 1e-5, k
        assert float((grads_b[k] - grads_t[k]).norm() / grads_t[k].norm()) < 1e-3, k
