"""Parts of the guiding geometry model against values constructed here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from datasets.cameras import scale_intrinsics
from datasets.config import override
from model.fitting.geometry import to_head_frame
from model.fitting.template import build_template
from model.guiding.canonical import CanonicalFrame, world_transform
from model.guiding.config import preset
from model.guiding.losses import iou_loss, landmarks_to_canonical, uniform_laplacian
from model.guiding.mean_shape import MeanShape, initial_sdf
from model.guiding.model import GuidingModel
from model.guiding.motion import PoseRefinement, expression_weights, project_norm_
from model.nets.encoder import ConvEncoder


def _linears(module: nn.Module) -> list[nn.Linear]:
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


def test_expression_weights_follow_the_formula():
    landmarks = torch.zeros(1, 3)
    d = torch.tensor([0.0, 0.05, 0.0999, 0.1, 0.105, 0.11, 0.115, 0.12, 0.2])
    points = torch.stack([d, torch.zeros_like(d), torch.zeros_like(d)], 1)
    w = expression_weights(points, landmarks, 0.1, 0.12)
    expected = torch.tensor([1, 1, 1, 1, 0.75, 0.5, 0.25, 0, 0])
    assert torch.allclose(w, expected, atol=1e-5)
    # the nearest of several landmarks counts
    two = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    assert torch.allclose(expression_weights(torch.tensor([[0.89, 0.0, 0.0]]), two, 0.1, 0.12), torch.tensor([0.5]))


def _paper_model(name: str, n_frames: int = 5) -> GuidingModel:
    config = override(preset(name), {"init_steps": 0})
    frame = CanonicalFrame.from_landmarks(build_template())
    return GuidingModel(config, frame, torch.zeros(68, 3), n_identities=3, n_frames=n_frames)


def test_paper_preset_has_the_published_shapes():
    model = _paper_model("paper")
    assert model.id_codes.shape == (3, 512)
    inj = _linears(model.f_inj)  # the point and code halves of the first layer, 7 more hidden, output
    assert len(inj) == 2 + 7 + 1 and all(m.out_features == 512 for m in inj)
    for net in (model.f_id, model.f_col, model.mean_shape.net):
        layers = _linears(net)
        assert len(layers) == 5 and all(m.out_features == 512 for m in layers[:4])
    assert _linears(model.f_id)[-1].out_features == 3 and _linears(model.f_col)[-1].out_features == 32
    for net in (model.f_exp, model.f_nf):
        layers = _linears(net)
        assert len(layers) == 2 + 3 + 1 and layers[-1].out_features == 3
    for enc in (model.E_exp, model.E_nf):
        convs = [m for m in enc.blocks if isinstance(m, nn.Conv2d)]
        assert [c.stride[0] for c in convs] == [1, 2] * 4
        assert enc(torch.rand(2, 3, 256, 256)).shape == (2, 128)
    psi = model.refine
    assert [m.stride[0] for m in psi.modules() if isinstance(m, nn.Conv2d) and m.stride[0] == 2] == [2, 2]
    assert len([m for m in psi.modules() if isinstance(m, nn.ConvTranspose2d)]) == 2
    assert psi(torch.rand(1, 32, 64, 64)).shape == (1, 3, 64, 64)
    assert model.config.grid_resolution == 256 and model.config.render_resolution == 512
    assert (model.config.t1, model.config.t2) == (0.1, 0.12)
    assert (model.config.w_sil, model.config.w_coarse, model.config.w_lmk, model.config.w_reg,
            model.config.w_lap) == (0.1, 0.1, 0.1, 0.001, 100.0)


def test_v1_preset_uses_expression_codes_and_upsamples():
    model = _paper_model("paper-v1", n_frames=7)
    assert model.id_codes.shape == (3, 128) and model.exp_codes.shape == (7, 128)
    assert not hasattr(model, "E_exp") and not hasattr(model, "f_nf")
    assert len(_linears(model.f_inj)) == 2 + 2 + 1
    assert model.refine(torch.rand(1, 32, 32, 32)).shape == (1, 3, 64, 64)  # renders at 256, outputs 512


def test_encoder_takes_any_size():
    enc = ConvEncoder(16, (8, 8, 8, 8), 32)
    assert enc(torch.rand(3, 3, 64, 64)).shape == (3, 16)


def test_initial_mean_shape_is_the_head_ellipsoid():
    config = override(preset("tiny"), {"grid_resolution": 32})
    shape = MeanShape(config)
    mesh = shape.extract()
    verts = mesh.verts.detach()
    inside = verts[:, 1] > -1.25 + 2 * shape.grid.cell  # away from the cap that closes the neck at the grid
    err = initial_sdf(verts[inside]).abs()
    assert err.max() < 0.5 * shape.grid.cell, err.max()
    assert mesh.features.shape == (len(verts), config.feature_dim)
    # the mean mesh is differentiable w.r.t. f_mean
    mesh.verts.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in shape.parameters())


def _random_rotation(rng) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


def test_canonical_frame_round_trip():
    rng = np.random.default_rng(0)
    template = build_template()
    frame = CanonicalFrame.from_landmarks(template)
    # the template's head frame is nearly the canonical one (chin to nose bridge leans 4 degrees)
    assert np.allclose(frame.rotation, np.eye(3), atol=0.07) and np.isclose(np.linalg.det(frame.rotation), 1)
    assert math.isclose(frame.unit, 0.145 / 0.7, rel_tol=1e-9)
    T = 3
    pose = np.tile(np.eye(4), (T, 1, 1))
    pose[:, :3, :3] = [_random_rotation(rng) for _ in range(T)]
    pose[:, :3, 3] = rng.normal(size=(T, 3))
    scale = rng.uniform(0.5, 2.0, T)
    world = scale[:, None, None] * np.einsum("tij,lj->tli", pose[:, :3, :3], template) + pose[:, None, :3, 3]
    assert np.allclose(to_head_frame(world, pose, scale), template[None], atol=1e-9)
    A, b = world_transform(frame, torch.tensor(pose), torch.tensor(scale))
    can = torch.tensor(frame.to_canonical(template))
    posed = can @ A.transpose(1, 2) + b[:, None]
    assert torch.allclose(posed, torch.tensor(world), atol=1e-9)
    assert torch.allclose(landmarks_to_canonical(torch.tensor(world), (A, b)), can.expand(T, -1, -1), atol=1e-9)
    # a rotated head frame (another backend's axes) gives the same canonical landmarks
    R = _random_rotation(rng)
    other = CanonicalFrame.from_landmarks(template @ R.T * 1000)
    assert np.allclose(other.to_canonical(template @ R.T * 1000), can.numpy(), atol=1e-6)


def test_pose_refinement_starts_at_identity_and_rotates():
    refine = PoseRefinement(4)
    R, tau = refine(torch.tensor([0, 3]))
    assert torch.allclose(R, torch.eye(3).expand(2, 3, 3)) and torch.all(tau == 0)
    with torch.no_grad():
        refine.rotation[1] = torch.tensor([0.0, 0.0, math.pi / 2])
    R, _ = refine(torch.tensor([1]))
    assert torch.allclose(R[0] @ torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)


def test_codes_stay_in_the_unit_ball():
    codes = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
    project_norm_(codes)
    assert torch.allclose(codes, torch.tensor([[0.6, 0.8], [0.3, 0.4]]))


def test_iou_loss_and_laplacian():
    m = torch.zeros(1, 4, 4)
    m[0, :2] = 1
    assert iou_loss(m, m).item() == pytest.approx(0, abs=1e-6)
    other = torch.zeros(1, 4, 4)
    other[0, 1:3] = 1
    assert iou_loss(m, other).item() == pytest.approx(1 - 4 / 12, abs=1e-6)
    # a flat regular grid: interior Laplacians vanish, a lifted vertex makes it positive
    n = 5
    ys, xs = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    verts = torch.stack([xs, ys, torch.zeros_like(xs)], -1).reshape(1, -1, 3).float()
    idx = torch.arange(n * n).view(n, n)
    a, b, c, d = idx[:-1, :-1].reshape(-1), idx[:-1, 1:].reshape(-1), idx[1:, :-1].reshape(-1), idx[1:, 1:].reshape(-1)
    faces = torch.cat([torch.stack([a, b, d], 1), torch.stack([a, d, c], 1)])
    flat = uniform_laplacian(verts, faces)
    bumped = verts.clone()
    bumped[0, 12, 2] = 1.0
    assert uniform_laplacian(bumped, faces) > flat


def test_scale_intrinsics_keeps_pixel_centres():
    K = torch.tensor([[100.0, 0, 31.5], [0, 100.0, 31.5], [0, 0, 1]])
    point = torch.tensor([0.05, -0.02, 1.0])
    xy = (K @ point)[:2]
    xy_half = (scale_intrinsics(K, 0.5) @ point)[:2]
    assert torch.allclose(xy_half, (xy + 0.5) * 0.5 - 0.5)
