"""The morphable-model fit against known parameters: small synthetic models written in the BFM 2009,
BFM 2017 and FLAME file formats, posed and projected into the 16-camera rig (or one frontal camera),
noised, then fitted from scratch (automatic initialisation, no tuning per case)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datasets.capture.rig import make_rig
from model.fitting.geometry import axis_angle_to_matrix, rotation_angle_deg
from model.fitting.model_fit import FitSettings, fit_model
from model.fitting.template import head_size
from model.fitting.triangulate import reproject
from model.morphable import load_morphable_model
from model.morphable.example_files import make_model_files

FRONTAL = 8  # the rig camera facing the head


# Coefficients fitted. Several views: the models' defaults (FLAME with 50 identity and 30 expression
# blendshapes + jaw: with its default 100 + 50 the 68 landmarks leave pose and coefficients partly
# interchangeable for these random bases, measured up to 2.3 degrees). One view gives 136 numbers per
# frame: 20 identity and 10 expression coefficients (with 80 + 64 the pose error measured 2 to 5 degrees).
COUNTS = {"bfm2009": {}, "bfm2017": {}, "flame": {"n_id": 50, "n_exp": 30}}
MONOCULAR_COUNTS = {"n_id": 20, "n_exp": 10}


def _load(folder, kind: str, counts: dict):
    path, lmk_path, truth = make_model_files(str(folder), kind)
    return load_morphable_model(kind, path, landmarks_path=lmk_path, **counts), truth


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return {kind: _load(tmp_path_factory.mktemp(kind), kind, COUNTS[kind]) for kind in ("bfm2009", "bfm2017", "flame")}


@pytest.fixture(scope="module")
def small_models(tmp_path_factory):
    return {kind: _load(tmp_path_factory.mktemp(kind), kind, MONOCULAR_COUNTS) for kind in ("bfm2009", "bfm2017", "flame")}


def _scene(model, truth, T: int, seed: int):
    """Known parameters -> world landmarks [T, 68, 3], poses, and the rig."""
    rng = np.random.default_rng(seed)
    ident = rng.normal(0, 0.7, (1, model.n_id))
    exp = rng.normal(0, 0.7, (T, model.n_exp)) * model.exp_scale.numpy()
    if truth.kind == "flame":
        exp[:, -3] = np.abs(exp[:, -3])  # the jaw opens, it does not overextend
    lmk = truth.landmarks(np.repeat(ident, T, 0), exp)  # [T, 68, 3] model units
    R = axis_angle_to_matrix(rng.normal(0, 1, (T, 3)) * np.array([0.15, 0.35, 0.08]))
    t = rng.normal(0, 0.02, (T, 3)) + np.array([0.0, 0.0, 0.03])
    world = truth.unit * np.einsum("tij,tlj->tli", R, lmk) + t[:, None]
    rig = make_rig(560, 800, target=(0.0, 0.0, 0.03))
    K = np.stack([c.K for c in rig])
    E = np.stack([c.world_to_cam for c in rig])
    return world, R, K, E


def _observe(world, K, E, noise_px: float, seed: int):
    uv, _ = reproject(world, K, E)
    uv = uv + np.random.default_rng(seed).normal(0, noise_px, uv.shape)
    return uv, np.ones(uv.shape[:-1])


@pytest.mark.parametrize("kind", ["bfm2009", "bfm2017", "flame"])
def test_multiview_fit_recovers_pose_and_landmarks(models, kind):
    model, truth = models[kind]
    world, R, K, E = _scene(model, truth, T=6, seed=1)
    uv, conf = _observe(world, K, E, noise_px=1.0, seed=2)
    fit = fit_model(model, uv, conf, K, E, FitSettings())
    size = head_size(world[0])
    pose_err = rotation_angle_deg(fit.rotation, R)
    lmk_err = np.linalg.norm(fit.landmarks - world, axis=-1) / size
    assert pose_err.max() < 1.0, pose_err
    assert lmk_err.max() < 0.01, lmk_err.max()
    assert abs(fit.scale / truth.unit - 1) < 0.02
    assert fit.ok.all() and not fit.outlier_views.any()
    assert np.nanmedian(fit.residual) < 2.0  # pixels, against 1 px noise


@pytest.mark.parametrize("kind", ["bfm2009", "flame"])
def test_outlier_view_does_not_move_the_fit(models, kind):
    model, truth = models[kind]
    world, R, K, E = _scene(model, truth, T=6, seed=3)
    uv, conf = _observe(world, K, E, noise_px=1.0, seed=4)
    clean = fit_model(model, uv, conf, K, E, FitSettings())
    # view 5 detects something else: the landmarks mirrored left-right and shifted by 40 px
    bad = uv.copy()
    bad[:, 5] = uv[:, 5, ::-1] + np.array([40.0, -25.0])
    fit = fit_model(model, bad, conf, K, E, FitSettings())
    size = head_size(world[0])
    assert rotation_angle_deg(fit.rotation, R).max() < 1.0
    assert (np.linalg.norm(fit.landmarks - world, axis=-1) / size).max() < 0.01
    assert (np.linalg.norm(fit.landmarks - clean.landmarks, axis=-1) / size).max() < 0.005
    assert fit.outlier_views[:, 5].all() and fit.outlier_views.sum() == len(world)


@pytest.mark.parametrize("kind", ["bfm2009", "bfm2017", "flame"])
def test_monocular_fit_recovers_pose(small_models, kind):
    model, truth = small_models[kind]
    world, R, K, E = _scene(model, truth, T=6, seed=5)
    K1, E1 = K[FRONTAL:FRONTAL + 1], E[FRONTAL:FRONTAL + 1]
    uv, conf = _observe(world, K1, E1, noise_px=1.0, seed=6)
    # one view cannot tell size from distance: the scale is given (here the true one)
    fit = fit_model(model, uv, conf, K1, E1, FitSettings(), scale=truth.unit)
    assert rotation_angle_deg(fit.rotation, R).max() < 1.0
    assert np.nanmedian(fit.residual) < 2.0


def test_identity_given_is_kept_and_batched_equals_per_frame(models):
    """A clip fitted at once gives what fitting its frames one by one gives (same identity, same
    iterations): frames are independent problems sharing only identity and scale."""
    model, truth = models["bfm2009"]
    world, R, K, E = _scene(model, truth, T=4, seed=7)
    uv, conf = _observe(world, K, E, noise_px=1.0, seed=8)
    subject = fit_model(model, uv, conf, K, E, FitSettings())
    settings = FitSettings(tol=0.0, rigid_iters=150, full_iters=200)
    batched = fit_model(model, uv, conf, K, E, settings, identity=subject.identity, scale=subject.scale)
    assert np.array_equal(batched.identity, subject.identity) and batched.scale == subject.scale
    single = [fit_model(model, uv[t:t + 1], conf[t:t + 1], K, E, settings, identity=subject.identity,
                        scale=subject.scale) for t in range(len(world))]
    per_frame = np.concatenate([s.landmarks for s in single])
    assert np.abs(per_frame - batched.landmarks).max() < 1e-3 * head_size(world[0])


def test_fit_runs_under_no_grad_free_defaults_on_cpu(models):
    """The fitter leaves no gradient state behind and returns float arrays."""
    model, truth = models["flame"]
    world, R, K, E = _scene(model, truth, T=2, seed=9)
    uv, conf = _observe(world, K, E, noise_px=0.5, seed=10)
    fit = fit_model(model, uv, conf, K, E, FitSettings(rigid_iters=50, full_iters=50))
    assert fit.expression.shape == (2, model.n_exp) and fit.identity.shape == (model.n_id,)
    assert all(p.grad is None for p in model.parameters())
    assert torch.is_grad_enabled()


def test_temporal_smoothness_reduces_frame_to_frame_jitter(models):
    model, truth = models["bfm2009"]
    world, R, K, E = _scene(model, truth, T=6, seed=11)
    world = np.repeat(world[:1], 6, 0)  # a still head: every difference between frames is noise
    uv, conf = _observe(world, K, E, noise_px=2.0, seed=12)
    jitter = []
    for temporal in (0.0, 10.0):
        fit = fit_model(model, uv, conf, K, E, FitSettings(temporal=temporal))
        jitter.append(np.abs(np.diff(fit.expression, axis=0)).mean())
    assert jitter[1] < 0.5 * jitter[0], jitter
