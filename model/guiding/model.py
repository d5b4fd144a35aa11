"""The guiding geometry model of GPHMv2 (stage 1): mean SDF -> DMTet mesh -> identity, expression and
non-face deformation -> posed, 32-channel mesh render -> refine network.

    V0, Gamma, F = DMTet(f_mean)                       mean mesh (shared by the batch)
    H = f_inj(z_id, Gamma)                             [B, N, width]
    V_can = V0 + f_id(H) + l_exp(V0) f_exp(H, z_exp) + l_nf(V0) f_nf(H, z_nf)
    C = f_col(H)                                       [B, N, 32]
    V = A (R_refine V_can + tau) + b                   fitted pose, canonical -> world, refined per frame
    features, mask = rasterize(V, F, C)   I_coarse = features[:3]   I_fine = Psi(features)

z_exp = E_exp(face crop) and z_nf = E_nf(non-face image) (v2), or learned codes per frame (v1 preset,
where every vertex follows the expression code: there is no separate non-face motion).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.profiler import record_function

from datasets.config import validate
from model.guiding.canonical import CanonicalFrame, world_transform
from model.guiding.config import GuidingConfig
from model.guiding.mean_shape import MeanShape
from model.guiding.motion import PoseRefinement, expression_weights
from model.nets.encoder import ConvEncoder
from model.nets.mlp import MLP, ConditionedMLP
from model.nets.refine import RefineUNet
from model.render.mesh import interpolate, rasterize, soft_silhouette
from model.render.precision import autocast_off

DISPLACEMENT_INIT = 1e-2  # displacement MLPs start with small outputs


@dataclass
class Inputs:
    """One training batch, already on the device and at the model's resolutions."""

    identity: Tensor  # [B] index into the identity codes
    frame_rows: Tensor  # [B] index into the per-frame tables (pose refinement, v1 expression codes)
    condition: Tensor  # [B, 3, S, S] expression-condition face image in [0, 1]
    non_face: Tensor  # [B, 3, S, S] non-face image in [0, 1]
    pose: Tensor  # [B, 4, 4] fitted head pose
    scale: Tensor  # [B] fitted scale
    K: Tensor  # [B, V, 3, 3] intrinsics at render resolution
    world_to_cam: Tensor  # [B, V, 4, 4]


@dataclass
class Outputs:
    fine: Tensor  # [B*V, 3, R_out, R_out]
    coarse: Tensor  # [B*V, 3, R, R]
    mask: Tensor  # [B*V, R, R] hard coverage (no gradient)
    soft_mask: Tensor  # [B*V, R, R] coverage with gradients to the vertices
    verts_can: Tensor  # [B, N, 3] canonical deformed vertices
    faces: Tensor  # [F, 3]
    delta_exp: Tensor  # [B, N, 3]
    delta_nf: Tensor  # [B, N, 3]
    landmarks_can: Tensor  # [B, L, 3] deformed canonical landmarks (after the pose refinement)
    to_world: tuple[Tensor, Tensor]  # (A [B, 3, 3], b [B, 3]): world = A c + b


def build_networks(module: nn.Module, c: GuidingConfig, n_identities: int, n_frames: int) -> None:
    """The networks and per-subject / per-frame tables shared by the guiding and the Gaussian model, set as
    attributes of `module` under the same names in both (stage 2 loads them from a stage-1 checkpoint)."""
    module.id_codes = nn.Parameter(torch.randn(n_identities, c.id_dim) * 0.01)
    module.f_inj = ConditionedMLP(c.feature_dim, c.id_dim, c.width, c.width, c.inj_hidden)
    module.f_id = MLP(c.width, 3, c.width, c.hidden, out_scale=DISPLACEMENT_INIT)
    module.f_col = MLP(c.width, c.color_dim, c.width, c.hidden)
    module.f_exp = ConditionedMLP(c.width, c.exp_dim, 3, c.width, c.hidden, out_scale=DISPLACEMENT_INIT)
    if c.motion == "encoders":
        module.E_exp = ConvEncoder(c.exp_dim, c.encoder_channels, c.width)
        module.E_nf = ConvEncoder(c.nf_dim, c.encoder_channels, c.width)
        module.f_nf = ConditionedMLP(c.width, c.nf_dim, 3, c.width, c.hidden, out_scale=DISPLACEMENT_INIT)
    else:
        module.exp_codes = nn.Parameter(torch.randn(n_frames, c.exp_dim) * 0.01)
    module.pose_refine = PoseRefinement(n_frames)
    module.refine = RefineUNet(c.color_dim, c.refine_width, c.refine_upsample)


class MotionDeformation(nn.Module):
    """Motion codes and the identity / expression / non-face deformation of canonical points, for a module
    made by `build_networks` that holds `config: GuidingConfig`."""

    def motion_codes(self, x: Inputs) -> tuple[Tensor, Tensor | None]:
        """-> (z_exp [B, exp_dim], z_nf [B, nf_dim] or None for the v1 variant)."""
        if self.config.motion == "encoders":
            return self.E_exp(x.condition), self.E_nf(x.non_face)
        return self.exp_codes[x.frame_rows], None

    def deform(self, points: Tensor, gamma: Tensor, z_id: Tensor, z_exp: Tensor, z_nf: Tensor | None,
               weights: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """points: [N, 3] canonical mean positions; gamma: [N, D]; z_*: [B, *]; weights: [N] l_exp
        -> (deformed [B, N, 3], colour features H-based [B, N, C], delta_exp [B, N, 3], delta_nf [B, N, 3])."""
        H = self.f_inj(gamma[None], z_id)  # [B, N, width]
        H = torch.relu(H)
        moved = points[None] + self.f_id(H)
        delta_exp = self.f_exp(H, z_exp)
        if z_nf is None:  # v1: the expression code moves every vertex
            delta_nf = torch.zeros_like(delta_exp)
            moved = moved + delta_exp
        else:
            delta_nf = self.f_nf(H, z_nf)
            w = weights[None, :, None]
            moved = moved + w * delta_exp + (1 - w) * delta_nf
        return moved, H, delta_exp, delta_nf


class GuidingModel(MotionDeformation):
    def __init__(self, config: GuidingConfig, frame: CanonicalFrame, landmarks: Tensor, n_identities: int,
                 n_frames: int, initialise: bool = True):
        """landmarks: [L, 3] initial canonical landmarks P0 (the training set's mean); initialise: fit f_mean
        to the initial head shape (skipped when a checkpoint's weights will be loaded)."""
        super().__init__()
        validate(config)
        c = self.config = config
        self.frame = frame
        for name, value in frame.state().items():
            self.register_buffer(f"canonical_{name}", value)
        self.mean_shape = MeanShape(c, initialise=initialise)
        self.landmarks = nn.Parameter(landmarks.clone().float())  # P0
        build_networks(self, c, n_identities, n_frames)

    # ------------------------------------------------------------------------------------------ forward
    def forward(self, x: Inputs) -> Outputs:
        c = self.config
        with record_function("guiding/mean mesh (f_mean + DMTet)"):
            mesh = self.mean_shape.extract()
        if mesh.faces.shape[0] == 0:
            raise RuntimeError("the mean SDF has no surface inside the grid (training diverged?)")
        B, V = x.K.shape[:2]
        with record_function("guiding/encoders, deformation and colour MLPs"):
            z_id = self.id_codes[x.identity]
            z_exp, z_nf = self.motion_codes(x)
            weights = expression_weights(mesh.verts, self.landmarks, c.t1, c.t2)
            verts_can, H, delta_exp, delta_nf = self.deform(mesh.verts, mesh.features, z_id, z_exp, z_nf, weights)
            colour = self.f_col(H)  # [B, N, C]
            R, tau = self.pose_refine(x.frame_rows)  # per-frame refinement, in canonical space
            with autocast_off(x.pose.device.type):  # posing in float32 under amp: bf16 would move pixels
                R, tau, verts_can = R.float(), tau.float(), verts_can.float()
                A, b = to_world = world_transform(self.frame, x.pose, x.scale)  # canonical -> world
                world = _affine(_affine(verts_can, R, tau), A, b)  # [B, N, 3]
            # landmarks: P0 through the same deformation (their l_exp is 1: distance 0 to themselves)
            _, lmk_gamma = self.mean_shape(self.landmarks)
            lmk_weights = torch.ones(self.landmarks.shape[0], device=world.device)
            lmk_can, _, _, _ = self.deform(self.landmarks, lmk_gamma, z_id, z_exp, z_nf, lmk_weights)
            with autocast_off(x.pose.device.type):
                lmk_can = _affine(lmk_can.float(), R, tau)

        cam_verts = world[:, None].expand(B, V, *world.shape[1:]).reshape(B * V, *world.shape[1:])
        cam_colour = colour[:, None].expand(B, V, *colour.shape[1:]).reshape(B * V, *colour.shape[1:])
        K, E = x.K.reshape(B * V, 3, 3), x.world_to_cam.reshape(B * V, 4, 4)
        R_px = c.render_resolution
        with record_function("guiding/rasterize + 32-channel interpolation"):
            rast = rasterize(cam_verts, mesh.faces, K, E, R_px, R_px)
            features = interpolate(cam_colour, mesh.faces, rast).permute(0, 3, 1, 2)  # [B*V, C, R, R]
        with record_function("guiding/soft silhouette"):
            soft = soft_silhouette(cam_verts, mesh.faces, K, E, R_px, R_px, sigma=c.silhouette_sigma)
        with record_function("guiding/refine U-Net"):
            fine = self.refine(features)
        return Outputs(fine=fine, coarse=features[:, :3], mask=rast.mask, soft_mask=soft, verts_can=verts_can,
                       faces=mesh.faces, delta_exp=delta_exp, delta_nf=delta_nf, landmarks_can=lmk_can,
                       to_world=to_world)


def _affine(points: Tensor, M: Tensor, t: Tensor) -> Tensor:
    """points: [B, N, 3]; M: [B, 3, 3]; t: [B, 3] -> [B, N, 3] = M p + t per sample."""
    return points @ M.transpose(1, 2) + t[:, None]
