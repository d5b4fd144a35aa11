"""Configuration of the guiding geometry model (stage 1) and its presets.

`paper` holds the published GPHMv2 values (sections 3.2-3.4); where the paper is silent the value is
marked "not in the paper" and was chosen here. `paper-v1` is the earlier variant (supplementary of
GPHM v1): learned per-expression codes instead of encoders, a 3-layer injection MLP, rendering at 256
and upsampling to 512 in Psi. `tiny` is for CPUs: a 32^3 grid, 128 px, small widths and larger
learning rates.
"""

from __future__ import annotations

from dataclasses import dataclass

from datasets.config import pick_preset
from datasets.errors import ConfigError


@dataclass
class GuidingConfig:
    # mean geometry: f_mean(x) -> (sdf, gamma), Deep Marching Tetrahedra on a generated grid
    grid_resolution: int = 256  # tetrahedral grid cells per axis over the canonical cube
    grid_bound: float = 1.0  # the grid spans [-bound, bound]^3 in canonical units (head length about 1)
    mean_width: int = 512  # f_mean width
    mean_hidden: int = 4  # f_mean hidden layers
    feature_dim: int = 512  # per-vertex feature gamma (not in the paper: the last layer's width)
    encoding_freqs: int = 6  # Fourier frequencies of the position encoding of f_mean (not in the paper)
    init_steps: int = 400  # fitting steps of f_mean to the initial ellipsoid
    # identity
    id_dim: int = 512  # identity code z_id (v1: 128); norms are kept below 1
    width: int = 512  # width of f_inj, f_id, f_exp, f_nf, f_col
    hidden: int = 4  # hidden layers of f_id, f_exp, f_nf, f_col
    inj_hidden: int = 8  # hidden layers of the injection MLP f_inj (v1: 3)
    # motion
    motion: str = "encoders"  # encoders (v2: E_exp, E_nf from images) | codes (v1: a learned code per frame)
    exp_dim: int = 128  # expression code z_exp (not in the v2 paper; v1: 128)
    nf_dim: int = 128  # non-face motion code z_nf (not in the paper)
    encoder_channels: tuple[int, ...] = (32, 64, 128, 256)  # the 4 conv blocks (not in the paper)
    encoder_input: int = 256  # encoder image size, face crop and non-face image (not in the paper)
    t1: float = 0.1  # l_exp = 1 closer than t1 to the nearest canonical landmark
    t2: float = 0.12  # l_exp = 0 farther than t2, linear between
    # appearance and rendering
    color_dim: int = 32  # channels of the per-vertex colour f_col(H); the first 3 are the coarse image
    render_resolution: int = 512  # feature map size (v1: 256, Psi upsamples to 512)
    output_resolution: int = 512  # image size compared with the ground truth
    refine_width: int = 64  # Psi's first-level channels (not in the paper)
    silhouette_sigma: float = 0.7  # soft silhouette edge width, pixels
    # losses
    w_sil: float = 0.1
    w_coarse: float = 0.1
    w_lmk: float = 0.1
    w_reg: float = 0.001
    w_lap: float = 100.0
    # optimisation (Adam)
    lr: float = 1e-4  # identity codes, every network and P0
    lr_pose: float = 1e-5  # per-frame head pose refinement
    lr_exp_codes: float = 1e-3  # v1 per-expression codes
    batch_size: int = 8  # frames (subject x expression) per batch
    views: int = 4  # views of each frame per batch


    @property
    def refine_upsample(self) -> int:
        return self.output_resolution // self.render_resolution

    def __post_init__(self) -> None:
        if self.motion not in ("encoders", "codes"):
            raise ConfigError(f"motion must be 'encoders' or 'codes', got {self.motion!r}")
        if self.output_resolution not in (self.render_resolution, 2 * self.render_resolution):
            raise ConfigError("output_resolution must equal render_resolution or twice it")
        if not 0 < self.t1 < self.t2:
            raise ConfigError("need 0 < t1 < t2")
        if self.color_dim < 3:
            raise ConfigError("color_dim must be at least 3 (the coarse image)")


def _tiny() -> GuidingConfig:
    return GuidingConfig(grid_resolution=32, mean_width=64, mean_hidden=3, feature_dim=32, encoding_freqs=4,
                         init_steps=200, id_dim=32, width=64, hidden=2, inj_hidden=3, exp_dim=16, nf_dim=16,
                         encoder_channels=(8, 16, 32, 32), encoder_input=64, render_resolution=128,
                         output_resolution=128, refine_width=16, lr=1e-3, lr_pose=1e-5, batch_size=2, views=4)


def _paper_v1() -> GuidingConfig:
    return GuidingConfig(id_dim=128, inj_hidden=3, motion="codes", exp_dim=128, render_resolution=256,
                         output_resolution=512, batch_size=2, views=6)


PRESETS = {"paper": GuidingConfig, "paper-v1": _paper_v1, "tiny": _tiny}


def preset(name: str) -> GuidingConfig:
    return pick_preset(PRESETS, name, "stage 1 (guiding)")
