"""A head avatar from a trained Gaussian parametric head model (GPHMv2 section 3.5).

GPHM fitting (phase 1): the trained model with one new identity code z_id, optimised alone:
    render_gphm(gphm, z_id, x)     the GPHM's forward with z_id, the fitted head poses as they are
Finetune (phase 2): what the code gives becomes the avatar's own parameters, and f_inj, f_id, f_col, f_att
and the code are dropped:
    H_id = relu(f_inj(Gamma0, z_id))                                   [N, width]  (kept: f_exp and f_nf read it)
    X_id = X0 + f_id(H_id),  C_id = f_col(H_id),  {S, Q, A}_id = {S0, Q0, A0} + f_att(H_id)    parameters
    X = X_id + l_exp f_exp(H_id, z_exp) + (1 - l_exp) f_nf(H_id, z_nf)   z_exp = E_exp(face), z_nf = E_nf(non-face)
    {dC, dS, dQ, dA} = f_dyn(Gamma0, z_exp)                             the new tiny MLP (expression-dependent
    C = C_id + dC, S = S_id + dS, Q = Q_id + dQ, A = sigmoid(A_id + dA)  colour and attribute changes)
then posed by the fitted head pose, splatted and refined by Psi like the GPHM.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from model.gaussian.config import GaussianConfig
from model.gaussian.model import CanonicalGaussians, GaussianModel, GaussianOutputs, splat_posed
from model.guiding.canonical import CanonicalFrame, world_transform
from model.guiding.config import GuidingConfig
from model.guiding.model import Inputs, build_networks
from model.guiding.motion import expression_weights
from model.nets.mlp import ConditionedMLP

DYN_INIT = 1e-2  # f_dyn's output layer starts small: the avatar starts as the fitted GPHM
PER_POINT = ("X_id", "C_id", "S_id", "Q_id", "A_id")  # the identity-specific Gaussians (parameters)
FIXED = ("H_id", "gamma", "weights", "P_id", "H_lmk")  # computed once from the code (buffers)


def _outputs(gphm_like, g: CanonicalGaussians, x: Inputs, backend: str) -> GaussianOutputs:
    """Pose by the fitted head pose, splat, refine: the GPHM's forward after its canonical Gaussians."""
    A, b = world_transform(gphm_like.frame, x.pose, x.scale)  # canonical -> world
    R = gphm_like.config.render_resolution
    features, alpha = splat_posed(g, A, b, x.K, x.world_to_cam, R, R, backend)
    fine = gphm_like.refine(features)
    return GaussianOutputs(fine=fine, coarse=features[:, :3], alpha=alpha, mask=alpha.detach() > 0.5,
                           means_can=g.means, delta_exp=g.delta_exp, delta_nf=g.delta_nf, landmarks_can=g.landmarks,
                           to_world=(A, b))


def check_encoders(config: GuidingConfig, what: str) -> None:
    if config.motion != "encoders":
        raise ValueError(f"{what} needs a model driven by its expression and non-face encoders (GPHMv2); this one "
                         f"keeps an expression code per training frame (motion={config.motion!r}, the v1 preset)")


def render_gphm(gphm: GaussianModel, z_id: Tensor, x: Inputs) -> GaussianOutputs:
    """Phase 1: the GPHM with identity code z_id [1, id_dim] for every sample of the batch."""
    z_exp, z_nf = gphm.motion_codes(x)
    g = gphm.canonical(z_id.expand(z_exp.shape[0], -1), z_exp, z_nf)
    return _outputs(gphm, g, x, gphm.gaussian_config.backend)


class Avatar(nn.Module):
    """Phase 2 and after: one person's Gaussians, driven by the encoders (see the module docstring)."""

    def __init__(self, config: GuidingConfig, gaussian_config: GaussianConfig, frame: CanonicalFrame,
                 tensors: dict[str, Tensor], dyn_width: int = 32, use_dyn: bool = True):
        """tensors: PER_POINT and FIXED by name (X_id [N, 3], C_id [N, C], S_id [N, 3], Q_id [N, 4], A_id [N],
        H_id [N, width], gamma [N, D], weights [N], P_id [L, 3], H_lmk [L, width])."""
        super().__init__()
        check_encoders(config, "an avatar")
        self.config, self.gaussian_config, self.frame = config, gaussian_config, frame
        self.dyn_width, self.use_dyn = int(dyn_width), bool(use_dyn)
        for name, value in frame.state().items():
            self.register_buffer(f"canonical_{name}", value)
        for name in PER_POINT:
            setattr(self, name, nn.Parameter(tensors[name].detach().clone().float()))
        for name in FIXED:
            self.register_buffer(name, tensors[name].detach().clone().float())
        build_networks(self, config, 1, 1)  # the motion networks and Psi, with the GPHM's shapes ...
        for name in ("id_codes", "f_inj", "f_id", "f_col", "pose_refine"):  # ... without what the code replaced
            delattr(self, name)
        c = config
        self.f_dyn = ConditionedMLP(self.gamma.shape[1], c.exp_dim, c.color_dim + 8, self.dyn_width, 2,
                                    out_scale=DYN_INIT)

    @staticmethod
    def from_gphm(gphm: GaussianModel, z_id: Tensor, dyn_width: int = 32, use_dyn: bool = True) -> "Avatar":
        """The finetune start: the Gaussians the code z_id [1, id_dim] gives, the GPHM's motion networks."""
        with torch.no_grad():
            H = torch.relu(gphm.f_inj(gphm.features[None], z_id))[0]  # [N, width]
            att = gphm.f_att(H)
            H_lmk = torch.relu(gphm.f_inj(gphm.landmark_features[None], z_id))[0]
            c = gphm.config
            tensors = {
                "X_id": gphm.positions + gphm.f_id(H), "C_id": gphm.f_col(H), "S_id": gphm.scales + att[:, :3],
                "Q_id": gphm.rotations + att[:, 3:7], "A_id": gphm.opacities + att[:, 7], "H_id": H,
                "gamma": gphm.features, "weights": expression_weights(gphm.positions, gphm.landmarks, c.t1, c.t2),
                "P_id": gphm.landmarks + gphm.f_id(H_lmk), "H_lmk": H_lmk}
        avatar = Avatar(gphm.config, gphm.gaussian_config, gphm.frame, tensors, dyn_width, use_dyn)
        for name in ("E_exp", "E_nf", "f_exp", "f_nf", "refine"):
            getattr(avatar, name).load_state_dict(getattr(gphm, name).state_dict())
        return avatar.to(gphm.positions.device)

    @property
    def n_points(self) -> int:
        return self.X_id.shape[0]

    def motion_codes(self, x: Inputs) -> tuple[Tensor, Tensor]:
        return self.E_exp(x.condition), self.E_nf(x.non_face)

    def canonical(self, z_exp: Tensor, z_nf: Tensor) -> CanonicalGaussians:
        """z_exp: [B, exp_dim], z_nf: [B, nf_dim] -> the avatar's Gaussians in canonical space."""
        H = self.H_id[None]
        delta_exp, delta_nf = self.f_exp(H, z_exp), self.f_nf(H, z_nf)  # [B, N, 3]
        w = self.weights[None, :, None]
        means = self.X_id[None] + w * delta_exp + (1 - w) * delta_nf
        B, C = z_exp.shape[0], self.config.color_dim
        if self.use_dyn:
            dyn = self.f_dyn(self.gamma[None], z_exp)  # [B, N, C + 8]
        else:
            dyn = means.new_zeros(B, self.n_points, C + 8)
        return CanonicalGaussians(
            means=means, quats=self.Q_id[None] + dyn[..., C + 3:C + 7], log_scales=self.S_id[None] + dyn[..., C:C + 3],
            opacities=torch.sigmoid(self.A_id[None] + dyn[..., C + 7]), colours=self.C_id[None] + dyn[..., :C],
            delta_exp=delta_exp, delta_nf=delta_nf, landmarks=self.expression_landmarks(z_exp))

    def expression_landmarks(self, z_exp: Tensor) -> Tensor:
        """z_exp: [B, exp_dim] -> [B, L, 3] the canonical landmarks, which follow the expression."""
        return self.P_id[None] + self.f_exp(self.H_lmk[None], z_exp)

    def forward(self, x: Inputs, z_nf: Tensor | None = None) -> GaussianOutputs:
        """z_nf: a fixed non-face code [1, nf_dim] instead of E_nf(x.non_face) (driving with --fixed-non-face)."""
        z_exp, own_nf = self.motion_codes(x)
        g = self.canonical(z_exp, own_nf if z_nf is None else z_nf.expand(z_exp.shape[0], -1))
        return _outputs(self, g, x, self.gaussian_config.backend)
