"""The GaussianHead baseline's settings: one dataclass, presets `paper` (the published appendix A) and `tiny`
(CPU tests). Where the paper is silent the choice is named in the field's comment."""

from __future__ import annotations

from dataclasses import dataclass, replace

from datasets.errors import ConfigError

DERIVATIONS = ("per_gaussian", "global", "none")  # the full method, TILTED-like global rotation, axis-aligned


@dataclass
class GaussianHeadConfig:
    # --- data and schedule
    iterations: int = 30000  # batch size 1 (the paper: ~3 h on an RTX 3090; iteration count not published)
    resolution: int = 512  # render and compare size (the paper trains at 512 x 512)
    n_gaussians: int = 10000  # initial Gaussians (appendix A.2: 10K)
    init_margin: float = 1.25  # the landmark ellipsoid's radii are this times the head's (module init.py)
    expression_dim: int = 32  # landmark expression: PCA components kept (ignored with fit/expression)
    # --- motion deformation field M_d (appendix A.3)
    deform_width: int = 256
    deform_depth: int = 8
    deform_skip: int = 4  # the input is concatenated again before this layer (0-based index of the linear)
    pe_freqs: int = 10
    # --- multi-resolution tri-plane and derivation
    use_triplane: bool = True  # False: ablation "w/o parametric tri-plane" (per-Gaussian opacity and SH)
    derivation: str = "per_gaussian"  # per_gaussian | global (one set for the scene) | none (axis-aligned)
    plane_base: int = 64  # base resolution H = W
    plane_scales: tuple[int, ...] = (1, 2, 4, 8)
    plane_channels: int = 32  # L per plane (the paper does not publish L; K = 4 needs L % 4 == 0)
    n_derivations: int = 4  # K (the paper's best, Fig. 7)
    plane_init: tuple[float, float] = (0.1, 0.5)  # U[a, b]
    plane_bound: float = 1.5  # the tri-plane spans +-bound x the head's largest radius around its centre
    # --- decoders
    opacity_width: int = 64
    opacity_depth: int = 3  # linear layers of D_alpha (the last gives alpha's logit and z)
    colour_width: int = 64
    colour_depth: int = 2  # linear layers of D_c (input: z and the view direction)
    sh_degree: int = 3  # "4th-order" SH = degree 3, 16 coefficients per channel (3DGS)
    # --- learning rates (appendix A.3, A.4); "lin" decays linearly, "exp" log-linearly, to the final value
    lr_position: tuple[float, float] = (1.6e-4, 1.6e-6)  # linear
    lr_rotation: float = 1e-3
    lr_scale: float = 1e-3
    lr_deform: tuple[float, float] = (8e-4, 8e-6)  # "gradually": log-linear (the deformable-3DGS habit)
    lr_triplane: tuple[float, float] = (1e-3, 0.0)  # linear to 0 at the last iteration
    lr_opacity: float = 1e-4  # D_alpha (or the per-Gaussian opacity logits without the tri-plane)
    lr_sh_dc: float = 1e-3  # D_c's hidden layers and its DC head (or the per-Gaussian DC coefficients)
    lr_sh_rest: float = 5e-5  # D_c's higher-order head (or the per-Gaussian higher-order coefficients)
    lr_derivation: tuple[float, float] = (1e-3, 0.0)  # Riemannian Adam, linear to 0
    # --- loss (eq. 8)
    w_rgb: float = 0.8
    w_vgg: float = 0.01  # needs vgg_weights; without them the term is 0 (said once)
    w_dssim: float = 0.2
    vgg_weights: str = ""  # a torchvision VGG16 state dict (model/nets/vgg.py); never downloaded
    # --- densification and pruning (appendix A.2, the rest as 3DGS)
    densify_from: int = 3000
    densify_every: int = 500
    densify_until: int = 15000  # 3DGS's densify_until_iter (scaled with `iterations` by the tiny preset)
    densify_grad: float = 2e-4  # 3DGS's view-space gradient threshold (NDC units)
    percent_dense: float = 0.01  # clone below, split above this share of the scene extent
    prune_size: float = 0.01  # prune Gaussians whose largest axis exceeds this share of the scene (the paper)
    prune_opacity: float = 2e-4  # prune below this opacity (the paper)
    max_gaussians: int = 300000  # densification stops adding beyond this many
    # --- rendering
    backend: str = "auto"  # render_gaussians backend: auto | torch | gsplat

    def __post_init__(self) -> None:
        if self.derivation not in DERIVATIONS:
            raise ConfigError(f"derivation must be one of {', '.join(DERIVATIONS)}, got {self.derivation!r}")
        if self.n_derivations < 1 or self.plane_channels % self.n_derivations:
            raise ConfigError(f"K = {self.n_derivations} must divide the plane channels L = {self.plane_channels}")
        if self.deform_depth < 2 or not 0 < self.deform_skip < self.deform_depth:
            raise ConfigError("deform_skip must index a layer after the first and before the last")
        if self.opacity_depth < 1 or self.colour_depth < 1:
            raise ConfigError("the decoders need at least one layer")
        if self.iterations < 0 or self.n_gaussians < 1 or self.resolution < 16:
            raise ConfigError("iterations must be >= 0, n_gaussians >= 1 and resolution >= 16")
        self.plane_scales = tuple(int(s) for s in self.plane_scales)
        self.plane_init = tuple(float(v) for v in self.plane_init)
        for name in ("lr_position", "lr_deform", "lr_triplane", "lr_derivation"):
            setattr(self, name, tuple(float(v) for v in getattr(self, name)))

    @property
    def sh_coeffs(self) -> int:
        return (self.sh_degree + 1) ** 2


PRESETS = {
    "paper": {},
    "tiny": {"iterations": 60, "resolution": 32, "n_gaussians": 400, "expression_dim": 8, "deform_width": 32, "deform_depth": 4,
                 "deform_skip": 2, "pe_freqs": 4, "plane_base": 8, "plane_scales": (1, 2), "plane_channels": 8, "n_derivations": 2,
                 "opacity_width": 16, "colour_width": 16, "sh_degree": 1, "densify_from": 20, "densify_every": 10,
                 "densify_until": 50, "prune_size": 0.05, "max_gaussians": 2000},
}


def preset(name: str, **overrides) -> GaussianHeadConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown GaussianHead preset {name!r}; choose from {', '.join(PRESETS)}")
    return replace(GaussianHeadConfig(), **{**PRESETS[name], **overrides})


__all__ = ["DERIVATIONS", "PRESETS", "GaussianHeadConfig", "preset"]
