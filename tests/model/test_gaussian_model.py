"""The stage-2 model: initialisation from a guiding model, posing of the Gaussians, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from datasets.config import override
from model.gaussian import init as gaussian_init
from model.gaussian.config import GaussianConfig
from model.gaussian.model import GaussianModel
from model.gaussian.quaternions import matrix_to_quat, quat_multiply
from model.guiding.canonical import CanonicalFrame
from model.guiding.config import preset
from model.guiding.model import GuidingModel, Inputs
from model.render.gaussians import quat_to_rotmat
from model.render.splat import render_gaussians
from model.showcase.render import ring
from tests.model.test_guiding_trainer import SMALL


@pytest.fixture(scope="module")
def guiding():
    torch.manual_seed(0)
    config = override(preset("tiny"), SMALL)
    frame = CanonicalFrame(np.eye(3), np.zeros(3), 1.0)
    landmarks = torch.randn(68, 3) * 0.2 + torch.tensor([0.0, 0.0, 0.35])
    return GuidingModel(config, frame, landmarks, n_identities=3, n_frames=5)


def _gaussian(guiding, init: str = "stage1") -> GaussianModel:
    config = GaussianConfig(init=init, backend="torch")
    points = (gaussian_init.from_guiding if init == "stage1" else gaussian_init.from_template)(guiding, config)
    model = GaussianModel(guiding.config, config, guiding.frame, points, guiding.landmarks.detach(), 3, 5)
    inherited = {k: v for k, v in guiding.state_dict().items() if not k.startswith("mean_shape.")}
    model.load_state_dict(inherited, strict=False)
    return model


def _inputs(config, B: int = 2, V: int = 2, size: int = 32) -> Inputs:
    gen = torch.Generator().manual_seed(1)
    K, E = ring(torch.zeros(68, 3), V, size, sweep_deg=60.0)  # the same cameras for every sample
    pose = torch.eye(4).repeat(B, 1, 1)
    return Inputs(identity=torch.tensor([0, 2][:B]), frame_rows=torch.tensor([1, 4][:B]),
                  condition=torch.rand(B, 3, config.encoder_input, config.encoder_input, generator=gen),
                  non_face=torch.rand(B, 3, config.encoder_input, config.encoder_input, generator=gen),
                  pose=pose, scale=torch.ones(B), K=K.repeat(B, 1, 1, 1), world_to_cam=E.repeat(B, 1, 1, 1))


def _codes(config) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(2)
    return (torch.randn(1, config.exp_dim, generator=gen, dtype=torch.float64),
            torch.randn(1, config.nf_dim, generator=gen, dtype=torch.float64))


def test_points_start_on_the_stage1_mean_mesh_with_3dgs_attributes(guiding):
    model = _gaussian(guiding)
    mesh = guiding.mean_shape.extract()
    # every mesh vertex, each once (marching tets repeats a point where edges cross at a grid vertex)
    distinct = torch.unique(mesh.verts.detach(), dim=0)
    assert model.n_points == distinct.shape[0] and torch.equal(torch.unique(model.positions.detach(), dim=0), distinct)
    match = torch.cdist(model.positions.detach(), mesh.verts.detach()).argmin(1)
    assert torch.allclose(model.features, mesh.features.detach()[match])
    # 3DGS: log sqrt(mean squared distance to the 3 nearest), isotropic; identity rotation; opacity 0.1
    v = model.positions.detach().double()
    d2 = torch.cdist(v, v) ** 2
    nearest = d2.topk(4, largest=False).values[:, 1:].mean(1)
    expected = 0.5 * torch.log(nearest).float()
    diff = (model.scales - expected[:, None]).abs()
    assert diff.max() < 1e-5, (diff.max(), expected[diff.argmax() // 3], model.scales.view(-1)[diff.argmax()])
    assert torch.equal(model.rotations, torch.tensor([1.0, 0, 0, 0]).expand(model.n_points, 4))
    assert torch.allclose(torch.sigmoid(model.opacities), torch.tensor(0.1))
    # the networks are the stage-1 ones, f_att is new and starts near zero offsets
    mine = model.state_dict()
    for name, value in guiding.state_dict().items():
        if not name.startswith("mean_shape."):
            assert torch.equal(mine[name], value), name
    zeros = torch.zeros(2, guiding.config.exp_dim), torch.zeros(2, guiding.config.nf_dim)
    g = model.canonical(model.id_codes[:2], *zeros)
    assert (g.log_scales - model.scales).abs().max() < 0.05
    assert (torch.logit(g.opacities) - model.opacities).abs().max() < 0.05


def test_template_points_have_zero_features_and_keep_the_architecture(guiding):
    model = _gaussian(guiding, "template")
    assert torch.count_nonzero(model.features) == 0 and torch.count_nonzero(model.landmark_features) == 0
    assert model.features.shape[1] == guiding.config.feature_dim


def test_quaternions_compose_like_rotation_matrices():
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(50, 4, generator=gen, dtype=torch.float64) for _ in range(2))
    assert torch.allclose(quat_to_rotmat(quat_multiply(a, b)), quat_to_rotmat(a) @ quat_to_rotmat(b), atol=1e-12)
    q = a / a.norm(dim=-1, keepdim=True)
    q = torch.where(q[:, :1] < 0, -q, q)
    assert torch.allclose(matrix_to_quat(quat_to_rotmat(q)), q, atol=1e-12)


def test_posing_by_a_similarity_equals_moving_the_camera(guiding):
    """Rendering X = s R c + t from camera E is rendering c from camera E [R | t] scaled by 1/s: the same
    image, whatever the Gaussians' orientation and size (the pose reaches means, quaternions and scales)."""
    torch.manual_seed(3)
    model = _gaussian(guiding).double()
    with torch.no_grad():
        model.rotations.copy_(torch.randn_like(model.rotations))
        model.scales.add_(torch.randn_like(model.scales) * 0.3)
        model.opacities.fill_(1.0)
    x = _inputs(guiding.config, B=1, V=2)
    g = model.canonical(model.id_codes[:1], *_codes(guiding.config))
    angle, axis = 0.7, torch.tensor([0.3, -0.8, 0.5], dtype=torch.float64)
    axis = axis / axis.norm()
    R = torch.linalg.matrix_exp(torch.tensor([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]],
                                              [-axis[1], axis[0], 0]], dtype=torch.float64) * angle)
    s, t = 1.7, torch.tensor([0.2, -0.1, 0.4], dtype=torch.float64)
    E = x.world_to_cam[0].double()  # cameras looking at the canonical head
    # the posed scene X = s R c + t seen by cameras that follow it: E' = [s R | t] o E o scale(1/s)
    world_from_can = torch.eye(4, dtype=torch.float64)
    world_from_can[:3, :3], world_from_can[:3, 3] = R, t
    E_posed = E.clone()
    E_posed[:, :3, 3] *= s
    E_posed = E_posed @ torch.linalg.inv(world_from_can)
    K = x.K[0].double()
    posed, posed_alpha = model.splat(g, (s * R)[None], t[None], K[None], E_posed[None], 32, 32)
    eye, zero = torch.eye(3, dtype=torch.float64)[None], torch.zeros(1, 3, dtype=torch.float64)
    plain, plain_alpha = model.splat(g, eye, zero, K[None], E[None], 32, 32)
    assert plain_alpha.max() > 0.5
    assert torch.allclose(posed, plain, atol=1e-6) and torch.allclose(posed_alpha, plain_alpha, atol=1e-6)


def test_splat_matches_the_renderer_on_explicitly_posed_gaussians(guiding):
    """The same image as render_gaussians given world means and covariances R_M R_q S^2 R_q^T R_M^T s^2."""
    model = _gaussian(guiding).double()
    x = _inputs(guiding.config, B=1, V=1)
    g = model.canonical(model.id_codes[:1], *_codes(guiding.config))
    c, sn = math.cos(0.4), math.sin(0.4)
    R = torch.tensor([[c, 0, sn], [0, 1, 0], [-sn, 0, c]], dtype=torch.float64)
    M, t = 1.3 * R, torch.tensor([0.0, 0.1, -0.2], dtype=torch.float64)
    image, _ = model.splat(g, M[None], t[None], x.K.double(), x.world_to_cam.double(), 32, 32)
    # independent: rotate the quaternions by matrix product, not by quaternion algebra
    Rq = R @ quat_to_rotmat(g.quats[0])
    quats = matrix_to_quat(Rq)
    ref, _ = render_gaussians(g.means[0] @ M.T + t, quats, torch.exp(g.log_scales[0]) * 1.3, g.opacities[0],
                              g.colours[0], x.K[0].double(), x.world_to_cam[0].double(), 32, 32, backend="torch")
    assert torch.allclose(image, ref.permute(0, 3, 1, 2), atol=1e-9)


def test_one_backward_reaches_every_trained_tensor(guiding):
    model = _gaussian(guiding)
    out = model(_inputs(guiding.config))
    assert out.fine.shape == (4, 3, 32, 32) and out.alpha.shape == (4, 32, 32)
    loss = out.fine.mean() + out.landmarks_can.square().mean() + 0.01 * out.delta_nf.square().mean()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
