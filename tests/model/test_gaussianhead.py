"""The GaussianHead baseline (model/gaussianhead/): its pieces against independent references, and a short
fit on a tiny store clip (the rendered heads of model/head_shards.py) with resume and evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from typer.testing import CliRunner

from model.avatar.frames import AvatarFrames
from model.gaussianhead import densify
from model.gaussianhead.config import preset
from model.gaussianhead.derivation import derived_features, random_unit_quaternions
from model.gaussianhead.fit import BaselineConfig, GaussianHeadFit, load_baseline
from model.gaussianhead.model import GaussianHead, eval_sh
from model.gaussianhead.riemannian_adam import RiemannianAdam
from model.gaussianhead.triplane import sample_plane

CLIP = "000/SEQ-0"


def _bilinear(plane: np.ndarray, u: float, v: float) -> np.ndarray:
    """plane [C, H, W] at u, v in [-1, 1] (corners aligned, clamped to the border), written out by hand."""
    _C, H, W = plane.shape
    x = min(max((u + 1) / 2 * (W - 1), 0.0), W - 1.0)
    y = min(max((v + 1) / 2 * (H - 1), 0.0), H - 1.0)
    x0, y0 = int(np.floor(x)), int(np.floor(y))
    x1, y1 = min(x0 + 1, W - 1), min(y0 + 1, H - 1)
    fx, fy = x - x0, y - y0
    return ((1 - fx) * (1 - fy) * plane[:, y0, x0] + fx * (1 - fy) * plane[:, y0, x1]
            + (1 - fx) * fy * plane[:, y1, x0] + fx * fy * plane[:, y1, x1])


def test_triplane_sampling_matches_a_direct_bilinear_computation():
    g = torch.Generator().manual_seed(0)
    plane = torch.rand(2, 5, 7, 9, generator=g, dtype=torch.float64)
    uv = torch.rand(2, 40, 2, generator=g, dtype=torch.float64) * 2.4 - 1.2  # some outside: border-clamped
    uv[0, 0] = torch.tensor([-1.0, -1.0])
    uv[0, 1] = torch.tensor([1.0, 1.0])
    got = sample_plane(plane, uv).numpy()  # [G, C, N]
    for gi in range(2):
        for n in range(40):
            want = _bilinear(plane[gi].numpy(), float(uv[gi, n, 0]), float(uv[gi, n, 1]))
            np.testing.assert_allclose(got[gi, :, n], want, atol=1e-12)
    np.testing.assert_allclose(got[0, :, 0], plane[0, :, 0, 0].numpy())  # the corners are texels
    np.testing.assert_allclose(got[0, :, 1], plane[0, :, -1, -1].numpy())


@pytest.mark.parametrize("mode", ["per_gaussian", "global", "none"])
def test_the_derivation_fusion_matches_a_loop(mode):
    g = torch.Generator().manual_seed(1)
    L, K, N = 8, 4, 6
    planes = [torch.rand(3, L, 4 * s, 4 * s, generator=g, dtype=torch.float64) for s in (1, 2)]
    points = torch.rand(N, 3, generator=g, dtype=torch.float64) * 1.2 - 0.6
    r = {"per_gaussian": random_unit_quaternions((N, K), g).double(), "global": random_unit_quaternions((K,), g).double(),
         "none": None}[mode]
    got = derived_features(planes, points, r, K).numpy()
    want = np.zeros((N, L))
    for n in range(N):
        for k in range(K):
            if r is None:
                p = points[n].numpy()
            else:
                q = (r[n, k] if mode == "per_gaussian" else r[k]).numpy()
                p = Rotation.from_quat([q[1], q[2], q[3], q[0]]).apply(points[n].numpy())  # scipy: x, y, z, w
            feature = np.zeros(L // K)
            for plane in planes:
                fused = np.ones(L // K)
                for j, (a, b) in enumerate([(0, 1), (0, 2), (1, 2)]):  # xy, xz, yz
                    fused = fused * _bilinear(plane[j, k * L // K:(k + 1) * L // K].numpy(), p[a], p[b])
                feature = feature + fused
            want[n, k * L // K:(k + 1) * L // K] = feature
    np.testing.assert_allclose(got, want, atol=1e-10)


def test_riemannian_adam_keeps_quaternions_unit_and_matches_a_hand_computed_step():
    g = torch.Generator().manual_seed(2)
    x0 = random_unit_quaternions((5, 2), g).double()
    x0 = x0 / x0.norm(dim=-1, keepdim=True)
    p = torch.nn.Parameter(x0.clone())
    lr, b1, b2, eps = 0.05, 0.9, 0.999, 1e-8
    opt = RiemannianAdam([p], lr=lr, betas=(b1, b2), eps=eps)
    grads = [torch.randn(5, 2, 4, generator=g, dtype=torch.float64) for _ in range(3)]
    x, m, v = x0.numpy().copy(), np.zeros((5, 2, 4)), np.zeros((5, 2, 1))
    for t, grad in enumerate(grads, 1):
        p.grad = grad.clone()
        opt.step()
        e = grad.numpy()
        rg = e - (e * x).sum(-1, keepdims=True) * x  # the tangent projection
        m = b1 * m + (1 - b1) * rg
        v = b2 * v + (1 - b2) * (rg * rg).sum(-1, keepdims=True)
        u = -lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
        n = np.linalg.norm(u, axis=-1, keepdims=True)
        x = np.cos(n) * x + np.sin(n) * u / n  # the exponential map
        m = m - (m * x).sum(-1, keepdims=True) * x  # transported to the new point
        np.testing.assert_allclose(p.detach().numpy(), x, atol=1e-12)
        np.testing.assert_allclose(p.detach().norm(dim=-1).numpy(), 1.0, atol=1e-12)
        np.testing.assert_allclose(opt.state[p]["exp_avg"].numpy(), m, atol=1e-12)
    # the first step moves every quaternion by lr along the sphere (Adam's unit step, the geodesic length)
    p2 = torch.nn.Parameter(x0.clone())
    one = RiemannianAdam([p2], lr=lr, eps=0.0)
    p2.grad = grads[0].clone()
    one.step()
    angle = np.arccos(np.clip((p2.detach().numpy() * x0.numpy()).sum(-1), -1, 1))
    np.testing.assert_allclose(angle, lr, atol=1e-9)


def _small_model(n: int = 8, **kw) -> GaussianHead:
    config = preset("tiny", **{"percent_dense": 0.01, "densify_grad": 1e-3, "prune_opacity": 0.0, "prune_size": 10.0,
                               **kw})
    g = torch.Generator().manual_seed(3)
    points = {"xyz": torch.rand(n, 3, generator=g) * 0.1 - 0.05, "rotation": random_unit_quaternions((n,), g),
              "log_scale": torch.log(torch.tensor([0.005, 0.02]).repeat_interleave(n // 2)[:, None].expand(n, 3))}
    return GaussianHead(config, points, torch.zeros(3), 0.1, 1.0, 4, g)


def test_densification_inherits_the_parents_derivations_and_keeps_optimiser_state():
    model = _small_model()
    opt = torch.optim.Adam([model.xyz, model.rotation, model.log_scale], eps=1e-15)
    radam = RiemannianAdam([model.derivation])
    for o, params in ((opt, [model.xyz, model.rotation, model.log_scale]), (radam, [model.derivation])):
        for p in params:
            p.grad = torch.randn_like(p)
        o.step()
    before = {k: v.clone() for k, v in model.points().items()}
    moments = radam.state[model.derivation]["exp_avg"].clone()
    # Gaussians 0, 1 (small: cloned) and 5, 6 (large: split) are hot
    model.grad_accum[:] = torch.tensor([1.0, 1.0, 0, 0, 0, 1.0, 1.0, 0]) * 1e-2
    model.grad_count[:] = 1.0
    counts = densify.densify_and_prune(model, [opt, radam], torch.Generator().manual_seed(0))
    assert counts == {"cloned": 2, "split": 2, "pruned": 0, "total": 8 - 2 + 2 + 4}
    r = model.derivation.detach()
    kept = [0, 1, 2, 3, 4, 7]
    torch.testing.assert_close(r[:6], before["derivation"][kept])
    torch.testing.assert_close(r[6:8], before["derivation"][[0, 1]])  # the clones'
    torch.testing.assert_close(r[8:12], before["derivation"][[5, 6, 5, 6]])  # the split children's
    torch.testing.assert_close(model.xyz.detach()[6:8], before["xyz"][[0, 1]])
    torch.testing.assert_close(model.log_scale.detach()[8:], before["log_scale"][[5, 6, 5, 6]] - np.log(1.6))
    assert not torch.equal(model.xyz.detach()[8:], before["xyz"][[5, 6, 5, 6]])  # sampled in the parent
    # the optimisers hold the new parameters, the survivors' moments kept, the newcomers' zero
    assert radam.param_groups[0]["params"][0] is model.derivation
    assert opt.param_groups[0]["params"][0] is model.xyz
    state = radam.state[model.derivation]["exp_avg"]
    torch.testing.assert_close(state[:6], moments[kept])
    assert torch.all(state[6:] == 0) and torch.all(opt.state[model.xyz]["exp_avg"][6:] == 0)
    assert model.grad_accum.shape == (12,)
    # the next steps run on the grown set
    model.derivation.grad = torch.randn_like(model.derivation)
    radam.step()
    np.testing.assert_allclose(model.derivation.detach().norm(dim=-1).numpy(), 1.0, atol=1e-6)


def test_pruning_drops_transparent_and_oversized_gaussians():
    model = _small_model(prune_size=0.015)  # extent 1: the 0.02 half is too large
    opt = torch.optim.Adam([model.xyz])
    counts = densify.densify_and_prune(model, [opt])
    assert counts["pruned"] == 4 and model.n_points == 4
    assert bool((torch.exp(model.log_scale).max(1).values < 0.015).all())


def test_the_ablations_build_and_render():
    for kw, has in [({}, (8, 2, 4)), ({"derivation": "global"}, (2, 4)), ({"derivation": "none"}, None),
                    ({"use_triplane": False}, None)]:
        model = _small_model(**kw)
        assert (None if model.derivation is None else tuple(model.derivation.shape)) == has
        assert ("opacity_logit" in model.per_point_names()) == (kw.get("use_triplane") is False)
    coeffs = torch.randn(5, 16, 3)
    d = torch.nn.functional.normalize(torch.randn(5, 3), dim=1)
    assert eval_sh(coeffs[:, :1], d).shape == (5, 3)
    np.testing.assert_allclose(eval_sh(coeffs[:, :1], d).numpy(), 0.28209479177387814 * coeffs[:, 0].numpy(),
                               rtol=1e-6)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from model.head_shards import make_head_shards

    root = tmp_path_factory.mktemp("gaussianhead")
    make_head_shards(str(root / "heads"), frames=6)
    return str(root / "heads" / "store.zarr")


def _fit(store, out, **kw) -> GaussianHeadFit:
    frames = AvatarFrames.load(store, CLIP, view=0, holdout=0.2)
    run = BaselineConfig(out=str(out), threads=1, checkpoint_every=kw.pop("checkpoint_every", 0))
    return GaussianHeadFit(run, preset("tiny", w_vgg=0.0, **kw), frames, log=False)


def test_a_short_fit_learns_and_a_resumed_fit_gives_the_same_model(store, tmp_path):
    from model.gaussianhead.evaluate import evaluate_baseline

    kw = {"iterations": 40, "densify_from": 10, "densify_every": 10, "densify_until": 30, "checkpoint_every": 15}
    plain = _fit(store, tmp_path / "plain", iterations=40, densify_from=100)
    plain.run()
    first, last = np.mean([h["l1"] for h in plain.history[:10]]), np.mean([h["l1"] for h in plain.history[-10:]])
    assert last < 0.9 * first
    straight = _fit(store, tmp_path / "straight", **kw)
    straight.run()
    assert len(straight.densified) == 3 and straight.model.n_points != 400  # densification ran

    class Killed(Exception):
        pass

    def kill_at(phase, step, total, terms):
        if step == 22:
            raise Killed

    killed = _fit(store, tmp_path / "killed", **kw)
    killed.progress = kill_at
    with pytest.raises(Killed):
        killed.run()
    resumed = _fit(store, tmp_path / "killed", **kw)
    assert resumed.step == 15
    resumed.run()
    assert resumed.history == straight.history and resumed.densified == straight.densified
    a, pa = load_baseline(str(tmp_path / "straight"))
    b, _ = load_baseline(str(tmp_path / "killed"))
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name
    metrics = evaluate_baseline(a, pa, AvatarFrames.of_avatar(pa["frames"]))
    assert metrics["on"] == "held-out frames" and metrics["frames"] == 1 and np.isfinite(metrics["psnr"])
    with pytest.raises(Exception, match="other iterations"):
        _fit(store, tmp_path / "killed", **{**kw, "iterations": 41})


def test_the_baseline_command_and_the_side_by_side_table(store, tmp_path):
    import cli

    runner = CliRunner()
    outs = []
    for name, flags in (("full", []), ("noder", ["--no-derivation"])):
        out = str(tmp_path / name)
        run = runner.invoke(cli.app, ["avatar", "baseline", "--store", store, "--clip", CLIP, "--out", out,
                                      "--preset", "tiny", "--iterations", "3", "--threads", "1", *flags])
        assert run.exit_code == 0, run.output
        outs.append(out)
    run = runner.invoke(cli.app, ["avatar", "evaluate", *outs, "--no-face-distance"])
    assert run.exit_code == 0, run.output
    assert "GaussianHead w/o derivation" in run.stdout and "held-out frames: 1" in run.stdout
    run = runner.invoke(cli.app, ["avatar", "evaluate", outs[0], "--json", "--no-face-distance"])
    assert run.exit_code == 0, run.output
    metrics = json.loads(run.stdout)
    assert metrics["frames"] == 1 and np.isfinite(metrics["psnr"]) and metrics["method"] == "GaussianHead"
    both = runner.invoke(cli.app, ["avatar", "baseline", "--store", store, "--out", str(tmp_path / "x"),
                                   "--no-derivation", "--global-rotation"])
    assert both.exit_code == 2 and "one of" in both.output
