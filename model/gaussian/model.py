"""The Gaussian parametric head model of GPHMv2 (stage 2), initialised from the guiding model.

    H = f_inj(z_id, Gamma0)                                       [B, N, width]
    X_can = X0 + f_id(H) + l_exp(X0) f_exp(H, z_exp) + l_nf(X0) f_nf(H, z_nf)       (eq. 5-9)
    C = f_col(H)                                                  [B, N, 32]        (eq. 10)
    {S, Q_can, A} = {S0, Q0, A0} + f_att(H)                       log scale, quaternion, logit (eq. 11)
    X = M X_can + t,  Q = q(M) Q_can,  S = s(M) S                 fitted pose (a similarity M) with the
                                                                  per-frame refinement, canonical -> world
    features, alpha = splat(X, Q, S, A, C)   I_coarse = features[:3]   I_fine = Psi(features)

The networks and tables (identity codes, P0, E_exp, E_nf, f_inj, f_id, f_exp, f_nf, f_col, Psi, pose
refinement) have the guiding model's names and shapes, so they load from a stage-1 checkpoint; f_att and
the per-point tensors are new (see init.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.profiler import record_function

from datasets.config import validate
from model.gaussian.config import GaussianConfig
from model.gaussian.quaternions import matrix_to_quat, quat_multiply
from model.guiding.canonical import CanonicalFrame, world_transform
from model.guiding.config import GuidingConfig
from model.guiding.model import Inputs, MotionDeformation, build_networks
from model.guiding.motion import expression_weights
from model.nets.mlp import MLP
from model.render.precision import at_least_float32, autocast_off
from model.render.splat import render_gaussians_batched

ATTRIBUTES = 3 + 4 + 1  # offsets of log scale, quaternion, opacity logit


@dataclass
class CanonicalGaussians:
    means: Tensor  # [B, N, 3] X_can
    quats: Tensor  # [B, N, 4] Q_can (not normalised)
    log_scales: Tensor  # [B, N, 3]
    opacities: Tensor  # [B, N] in (0, 1)
    colours: Tensor  # [B, N, C]
    delta_exp: Tensor  # [B, N, 3]
    delta_nf: Tensor  # [B, N, 3]
    landmarks: Tensor  # [B, L, 3] deformed canonical landmarks (before the pose refinement)


@dataclass
class GaussianOutputs:
    fine: Tensor  # [B*V, 3, R_out, R_out]
    coarse: Tensor  # [B*V, 3, R, R]
    alpha: Tensor  # [B*V, R, R] accumulated opacity
    mask: Tensor  # [B*V, R, R] alpha > 0.5 (no gradient)
    means_can: Tensor  # [B, N, 3]
    delta_exp: Tensor  # [B, N, 3]
    delta_nf: Tensor  # [B, N, 3]
    landmarks_can: Tensor  # [B, L, 3] after the pose refinement
    to_world: tuple[Tensor, Tensor]  # (A [B, 3, 3], b [B, 3]) of the fitted pose: world = A c + b


def splat_posed(g: CanonicalGaussians, M: Tensor, t: Tensor, K: Tensor, world_to_cam: Tensor, height: int,
                width: int, backend: str) -> tuple[Tensor, Tensor]:
    """Pose canonical Gaussians by world = M c + t (M: [B, 3, 3] a rotation times a positive scale; t: [B, 3])
    and render every sample's Gaussians into its cameras (K: [B, V, 3, 3], world_to_cam: [B, V, 4, 4])
    -> features [B*V, C, height, width], alpha [B*V, height, width].

    Posing and splatting run in float32 even inside a bf16 autocast region (TrainConfig.amp): a bf16 matmul
    would round the posed means to ~4 mm at 1 m, pixels at 512 px (model/render/precision.py)."""
    with autocast_off(M.device.type):
        M, t, K, world_to_cam = (at_least_float32(x) for x in (M, t, K, world_to_cam))
        g_means, g_quats, g_log_scales = (at_least_float32(x) for x in (g.means, g.quats, g.log_scales))
        s = torch.linalg.det(M).abs().pow(1 / 3)  # [B]
        q_pose = matrix_to_quat(M / s[:, None, None])  # [B, 4]
        means = g_means @ M.transpose(1, 2) + t[:, None]
        quats = quat_multiply(q_pose[:, None], g_quats / g_quats.norm(dim=-1, keepdim=True))
        scales = torch.exp(g_log_scales) * s[:, None, None]
        # each sample has its own Gaussians, seen by its own cameras: one batched call (one gsplat launch per kernel)
        image, alpha = render_gaussians_batched(means, quats, scales, g.opacities, g.colours, K, world_to_cam,
                                                height, width, backend=backend)  # [B, V, H, W, C], [B, V, H, W]
    B, V = K.shape[:2]
    return image.reshape(B * V, height, width, -1).permute(0, 3, 1, 2), alpha.reshape(B * V, height, width)


class GaussianModel(MotionDeformation):
    def __init__(self, guiding_config: GuidingConfig, config: GaussianConfig, frame: CanonicalFrame,
                 points: dict[str, Tensor], landmarks: Tensor, n_identities: int, n_frames: int):
        """points: the per-point tensors of init.py (positions [N, 3], features [N, D], scales [N, 3],
        rotations [N, 4], opacities [N], landmark_features [L, D]); landmarks: [L, 3] P0."""
        super().__init__()
        validate(guiding_config)
        validate(config)
        self.config, self.gaussian_config, self.frame = guiding_config, config, frame
        c = guiding_config
        for name, value in frame.state().items():
            self.register_buffer(f"canonical_{name}", value)
        self.landmarks = nn.Parameter(landmarks.clone().float())  # P0
        build_networks(self, c, n_identities, n_frames)
        self.f_att = MLP(c.width, ATTRIBUTES, c.width, c.hidden, out_scale=config.att_init)
        self.positions = nn.Parameter(points["positions"].clone())  # X0
        self.features = nn.Parameter(points["features"].clone())  # Gamma0
        self.scales = nn.Parameter(points["scales"].clone())  # S0
        self.rotations = nn.Parameter(points["rotations"].clone())  # Q0
        self.opacities = nn.Parameter(points["opacities"].clone())  # A0
        self.landmark_features = nn.Parameter(points["landmark_features"].clone())  # Gamma of P0

    @property
    def n_points(self) -> int:
        return self.positions.shape[0]

    def canonical(self, z_id: Tensor, z_exp: Tensor, z_nf: Tensor | None) -> CanonicalGaussians:
        """z_id: [B, id_dim]; z_exp: [B, exp_dim]; z_nf: [B, nf_dim] or None (v1) -> Gaussians in canonical space."""
        c = self.config
        weights = expression_weights(self.positions, self.landmarks, c.t1, c.t2)
        means, H, delta_exp, delta_nf = self.deform(self.positions, self.features, z_id, z_exp, z_nf, weights)
        att = self.f_att(H)  # [B, N, 8]
        lmk_weights = torch.ones(self.landmarks.shape[0], device=means.device)
        landmarks, _, _, _ = self.deform(self.landmarks, self.landmark_features, z_id, z_exp, z_nf, lmk_weights)
        return CanonicalGaussians(
            means=means, quats=self.rotations[None] + att[..., 3:7], log_scales=self.scales[None] + att[..., :3],
            opacities=torch.sigmoid(self.opacities[None] + att[..., 7]), colours=self.f_col(H),
            delta_exp=delta_exp, delta_nf=delta_nf, landmarks=landmarks)

    def splat(self, g: CanonicalGaussians, M: Tensor, t: Tensor, K: Tensor, world_to_cam: Tensor, height: int,
              width: int) -> tuple[Tensor, Tensor]:
        return splat_posed(g, M, t, K, world_to_cam, height, width, self.gaussian_config.backend)

    def forward(self, x: Inputs) -> GaussianOutputs:
        c = self.config
        with record_function("gaussian/encoders and per-point MLPs"):
            z_id = self.id_codes[x.identity]
            z_exp, z_nf = self.motion_codes(x)
            g = self.canonical(z_id, z_exp, z_nf)
            with autocast_off(x.pose.device.type):  # poses in float32 under amp too (see splat_posed)
                R, tau = self.pose_refine(x.frame_rows)  # per-frame refinement, in canonical space
                A, b = world_transform(self.frame, x.pose, x.scale)  # canonical -> world
                M, t = A @ R, (A @ tau[..., None])[..., 0] + b
        with record_function("gaussian/splatting"):
            features, alpha = self.splat(g, M, t, x.K, x.world_to_cam, c.render_resolution, c.render_resolution)
        with record_function("gaussian/refine U-Net"):
            fine = self.refine(features)
        with autocast_off(x.pose.device.type):
            landmarks = at_least_float32(g.landmarks) @ R.transpose(1, 2) + tau[:, None]
        return GaussianOutputs(fine=fine, coarse=features[:, :3], alpha=alpha, mask=alpha.detach() > 0.5,
                               means_can=g.means, delta_exp=g.delta_exp, delta_nf=g.delta_nf,
                               landmarks_can=landmarks, to_world=(A, b))
