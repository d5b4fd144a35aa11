"""Configuration of the Gaussian parametric head model (stage 2) and its presets.

The networks' shapes, the canonical frame and the render resolutions come from the stage-1 checkpoint the
model starts from (its GuidingConfig); this config holds what stage 2 adds: the Gaussian attributes'
initialisation, the loss weights and the learning rates. `paper` holds GPHMv2's values (sections 3.2-3.4);
`tiny` is for a few CPU minutes: learning rates of the Gaussian attributes near 3D Gaussian Splatting's own
(the paper's are meant for 7 days on 8 GPUs) and a batch of 4.
"""

from __future__ import annotations

from dataclasses import dataclass

from datasets.config import pick_preset
from datasets.errors import ConfigError

INITS = ("stage1", "template")


@dataclass
class GaussianConfig:
    # initialisation (3D Gaussian Splatting: scale from the 3 nearest neighbours, identity rotation, opacity 0.1)
    init: str = "stage1"  # stage1: X0 = V0 of the stage-1 mean mesh | template: the ablation (see init.py)
    points_resolution: int = 0  # tet grid at which V0 is extracted from f_mean (0: the stage-1 grid)
    knn: int = 3
    opacity_init: float = 0.1
    att_init: float = 1e-2  # f_att's output layer starts small: attributes start at {S0, Q0, A0}
    # losses (eq. 19-20)
    w_vgg: float = 0.1
    w_coarse: float = 0.1
    w_lmk: float = 0.1
    w_reg: float = 0.001
    vgg_weights: str = ""  # torchvision VGG16 state dict; without it the perceptual term is off (with a warning)
    # optimisation (Adam)
    lr_codes: float = 1e-5  # identity codes
    lr_networks: float = 1e-4  # E_exp, E_nf, f_inj, f_id, f_exp, f_nf, f_col, f_att, Psi
    lr_landmarks: float = 1e-4  # P0 (and the landmarks' bound features)
    lr_positions: float = 1e-5  # X0
    lr_features: float = 1e-5  # Gamma0
    lr_scales: float = 3e-5  # S0 (log scale)
    lr_rotations: float = 1e-5  # Q0 (quaternion)
    lr_opacities: float = 1e-4  # A0 (logit)
    lr_pose: float = 1e-5  # per-frame head pose refinement
    lr_exp_codes: float = 1e-3  # v1 per-expression codes (paper-v1 stage-1 models)
    batch_size: int = 8  # single images per batch
    backend: str = "auto"  # Gaussian rasterizer: auto (gsplat on CUDA, else torch) | torch | gsplat

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise ConfigError(f"init must be one of {INITS}, got {self.init!r}")
        if self.backend not in ("auto", "torch", "gsplat"):
            raise ConfigError(f"backend must be auto, torch or gsplat, got {self.backend!r}")
        if not 0 < self.opacity_init < 1:
            raise ConfigError("opacity_init must be in (0, 1)")
        if self.knn < 1 or self.batch_size < 1:
            raise ConfigError("knn and batch_size must be at least 1")


def _tiny() -> GaussianConfig:
    return GaussianConfig(lr_codes=1e-4, lr_networks=1e-3, lr_landmarks=1e-3, lr_positions=1e-4, lr_features=1e-3,
                          lr_scales=5e-3, lr_rotations=1e-3, lr_opacities=5e-2, batch_size=4)


PRESETS = {"paper": GaussianConfig, "tiny": _tiny}


def preset(name: str) -> GaussianConfig:
    return pick_preset(PRESETS, name, "stage 2 (gaussian)")
