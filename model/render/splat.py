"""The Gaussian renderer the models call: one function, two backends.

    image, alpha = render_gaussians(means, quats, scales, opacities, colors, K, world_to_cam, H, W)
    image, alpha = render_gaussians(..., backend="torch" | "gsplat" | "auto")
    image, alpha = render_gaussians_batched(means[B,N,3], ..., K[B,C,3,3], world_to_cam[B,C,4,4], H, W)
                                                    # B scenes, each in its own cameras -> [B,C,H,W,D], [B,C,H,W]

Conventions (those of `model.render.gaussians.rasterize_gaussians`, whatever the backend):
    - OpenCV cameras: K [C,3,3] intrinsics, world_to_cam [C,4,4] (x right, y down, z forward).
    - Pixel (x, y) has its centre at integer coordinates (x, y). gsplat puts pixel centres at (x+0.5, y+0.5),
      so the gsplat backend is given K with cx + 0.5, cy + 0.5; the projected means then land on the same pixels.
    - means [N,3], quats [N,4] (w,x,y,z, any norm), scales [N,3] (linear std devs, not log), opacities [N] in
      [0,1], colors [N,D] or [C,N,D] post-activation features of any width D (e.g. 32; no spherical harmonics),
      background None or [D] (added as T_final * background).
    - Returns image [C,H,W,D] and alpha [C,H,W] (alpha = 1 - final transmittance).
    - Same projection (EWA, J clamped to 1.3x the field of view, eps2d dilation, cull at depth `near`) and the
      same compositing (alpha = min(0.999, o exp(-q/2)), skip alpha < 1/255, stop before T <= 1e-4).

Backends:
    "torch"  - `rasterize_gaussians`: pure PyTorch, any device and dtype, gradients by autograd (K included).
    "gsplat" - `gsplat.rasterization` (1.5.3, CUDA only, float32 kernels: other dtypes are cast to float32 and
               the outputs cast back), classic mode, packed=False, sh_degree=None. Not differentiable w.r.t. K,
               and gsplat's pinhole projection ignores the skew K[0,1] (a non-zero skew is refused).
               Feature widths: the kernels are compiled for D in {1,2,3,4,5,8,9,16,17,32,33,64,65,...,512,513};
               `rasterize_to_pixels` zero-pads any other D up to the next power of two and slices the padding
               off again, and `rasterization` renders D > channel_chunk (32) in chunks of 32 channels, so any
               D works; D = 32 is a single native launch. The installed 1.5.3 ships no prebuilt extension:
               its first CUDA call JIT-compiles gsplat's kernels (needs nvcc, takes minutes, cached afterwards).
    "auto"   - gsplat when the tensors are on CUDA and gsplat imports, otherwise torch.

Precision: both entry points run with autocast off and bf16/fp16 inputs cast up to float32 (precision.py), so
a bf16 autocast training step (TrainConfig.amp) renders in float32 and gets float32 images back.

Batches (`render_gaussians_batched`, what the Gaussian model calls: one head per training sample): gsplat takes
leading batch dims itself, so a batch of B scenes is one `rasterization` call, with the same K shift, skew
refusal, background, near and eps2d as a single scene; the torch backend loops over the scenes with the
reference rasterizer, so its batched result equals B single calls exactly.

Known difference between the paths (the footprint, i.e. which (pixel, Gaussian) pairs are evaluated):
    - torch: a Gaussian is evaluated at a pixel only inside its 3-sigma ellipse (Mahalanobis^2 q <= 9), and is
      then composited if alpha >= 1/255.
    - gsplat 1.5.3 has no per-pixel sigma cut: every pixel of every tile the Gaussian is listed in is
      composited if alpha >= 1/255. The tile listing uses an opacity-aware, axis-aligned box
      (`fully_fused_projection`, arXiv 2402.00525 B.2): extend = min(3.33, sqrt(2 ln(255 o))),
      radius_x = ceil(extend * sqrt(cov2d_xx)), radius_y = ceil(extend * sqrt(cov2d_yy)), and a Gaussian with
      o < 1/255 is culled outright. sqrt(2 ln 255) = 3.329 < 3.33, so for every o <= 1 the box is the bounding
      box of exactly the ellipse where o exp(-q/2) >= 1/255 (rounded up to whole pixels): gsplat includes
      every contribution above the alpha threshold, never clips one.
    Hence the two paths differ only at pixels with 9 < q <= 2 ln(255 o), which exist only when
    o exp(-4.5) >= 1/255, i.e. o > ~0.353: gsplat then composites a faint ring (alpha between 1/255 and
    o exp(-4.5) <= 0.011) outside the 3-sigma ellipse that the torch path drops. For opacities <= 0.35 the
    alpha threshold is the tighter rule in both and the images agree to float round-off; that is why the
    cross-backend test uses such scenes (and keeps (pixel, Gaussian) pairs away from the alpha = 1/255 and
    T = 1e-4 thresholds, where float32 round-off could flip a discrete decision).
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

from model.render.gaussians import rasterize_gaussians
from model.render.precision import float32_region

BACKENDS = ("auto", "torch", "gsplat")


@lru_cache(maxsize=1)
def _gsplat_rasterization():
    """gsplat.rasterization, or the ImportError (as a string) if gsplat cannot be imported."""
    try:
        from gsplat import rasterization
    except Exception as exc:  # ImportError, or an extension failing at import
        return None, f"{type(exc).__name__}: {exc}"
    return rasterization, None


def gsplat_available() -> bool:
    """gsplat imports and a CUDA device is present."""
    return torch.cuda.is_available() and _gsplat_rasterization()[0] is not None


def available_backends() -> list[str]:
    """Concrete backends usable on this machine: ["torch"] plus "gsplat" when CUDA is present and gsplat
    imports ("auto" always works and picks one of these per call)."""
    return ["torch", "gsplat"] if gsplat_available() else ["torch"]


def _resolve(backend: str, device: torch.device) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown Gaussian render backend {backend!r}; expected one of {BACKENDS}")
    if backend == "auto":
        return "gsplat" if device.type == "cuda" and _gsplat_rasterization()[0] is not None else "torch"
    return backend


def _check_gsplat_inputs(tensors: dict[str, Tensor], background: Tensor | None, K: Tensor) -> None:
    """The refusals of the gsplat backend, before any kernel runs: CPU tensors and a non-zero skew K[..., 0, 1]
    (gsplat's pinhole projection drops it, so the image would silently differ from the torch path's)."""
    off = [name for name, t in tensors.items() if t.device.type != "cuda"]
    if background is not None and background.device.type != "cuda":
        off.append("background")
    if off:
        raise RuntimeError(f"backend 'gsplat' needs CUDA tensors, but {', '.join(off)} "
                           f"{'is' if len(off) == 1 else 'are'} on {tensors.get(off[0], background).device}; "
                           "use backend='torch' (or 'auto') off the GPU")
    if bool((K[..., 0, 1] != 0).any()):
        raise ValueError("backend 'gsplat' ignores the skew K[0,1]; use backend='torch' for skewed intrinsics")


def _render_gsplat(means, quats, scales, opacities, colors, K, world_to_cam, height, width, background, near,
                   eps2d):
    """One `gsplat.rasterization` call over any leading batch dims `...` (none for a single scene):
    means [..., N, 3], colors [..., N, D] or [..., C, N, D], K [..., C, 3, 3], world_to_cam [..., C, 4, 4],
    background None or [D] -> image [..., C, H, W, D], alpha [..., C, H, W]. gsplat's own batch dims keep
    every scene's Gaussians apart (each scene is seen only by its own cameras), so a batch is one launch per
    kernel instead of one Python round-trip per scene."""
    rasterization, err = _gsplat_rasterization()
    if rasterization is None:
        raise RuntimeError(f"backend 'gsplat' requested but gsplat cannot be imported ({err}); use backend='torch'")
    _check_gsplat_inputs({"means": means, "quats": quats, "scales": scales, "opacities": opacities, "colors": colors,
                          "K": K, "world_to_cam": world_to_cam}, background, K)
    batch = means.shape[:-2]
    C, N, D = K.shape[-3], means.shape[-2], colors.shape[-1]
    out_dtype = means.dtype
    f32 = torch.float32
    K_shifted = K.to(f32).clone()  # gsplat's pixel centres are at +0.5 (module docstring)
    K_shifted[..., 0, 2] += 0.5
    K_shifted[..., 1, 2] += 0.5
    cols = colors.to(f32)
    if cols.dim() == len(batch) + 3:  # per-camera colours
        cols = cols.expand(batch + (C, N, D))
    bgs = None if background is None else background.to(f32).reshape(D).expand(batch + (C, D)).contiguous()

    def dense(t: Tensor) -> Tensor:  # expanded inputs (one camera set for a whole batch, say) made dense
        return t.to(f32).contiguous()

    render_colors, render_alphas, _ = rasterization(
        dense(means),
        dense(quats),
        dense(scales),
        dense(opacities),
        dense(cols),
        viewmats=dense(world_to_cam),
        Ks=K_shifted.contiguous(),
        width=width,
        height=height,
        near_plane=near,
        eps2d=eps2d,
        sh_degree=None,
        packed=False,
        tile_size=16,
        backgrounds=bgs,
        render_mode="RGB",
        rasterize_mode="classic",
    )
    return render_colors.to(out_dtype), render_alphas[..., 0].to(out_dtype)


@float32_region
def render_gaussians(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    K: Tensor,
    world_to_cam: Tensor,
    height: int,
    width: int,
    *,
    backend: str = "auto",
    background: Tensor | None = None,
    near: float = 0.01,
    eps2d: float = 0.3,
) -> tuple[Tensor, Tensor]:
    """Splat N Gaussians into C cameras. -> image [C,H,W,D], alpha [C,H,W]. See the module docstring for the
    conventions (those of `rasterize_gaussians`) and how the backends differ.

    Raises ValueError for an unknown backend, RuntimeError if backend="gsplat" is asked for without CUDA
    tensors or without an importable gsplat."""
    which = _resolve(backend, means.device)
    if which == "torch":
        return rasterize_gaussians(means, quats, scales, opacities, colors, K, world_to_cam, height, width,
                                   background=background, near=near, eps2d=eps2d)
    return _render_gsplat(means, quats, scales, opacities, colors, K, world_to_cam, height, width, background,
                          near, eps2d)


def _check_batched_shapes(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
                          K: Tensor, world_to_cam: Tensor) -> None:
    """One clear error for mismatched batch shapes (instead of an indexing error deep inside a backend)."""
    if means.dim() != 3:
        raise ValueError(f"means must be [B, N, 3], got {tuple(means.shape)}")
    B, N = means.shape[:2]
    C = K.shape[1] if K.dim() == 4 else -1
    want = {"quats": (quats, (B, N, 4)), "scales": (scales, (B, N, 3)), "opacities": (opacities, (B, N)),
            "K": (K, (B, C, 3, 3)), "world_to_cam": (world_to_cam, (B, C, 4, 4))}
    for name, (t, shape) in want.items():
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must be {list(shape)} for means {list(means.shape)}, got {list(t.shape)}")
    if not (colors.dim() == 3 and colors.shape[:2] == (B, N)) and not (
            colors.dim() == 4 and colors.shape[:3] == (B, C, N)):
        raise ValueError(f"colors must be [B, N, D] or [B, C, N, D] (B={B}, C={C}, N={N}), got {list(colors.shape)}")


@float32_region
def render_gaussians_batched(
    means: Tensor,  # [B, N, 3] each scene its own Gaussians
    quats: Tensor,  # [B, N, 4]
    scales: Tensor,  # [B, N, 3]
    opacities: Tensor,  # [B, N]
    colors: Tensor,  # [B, N, D] or [B, C, N, D]
    K: Tensor,  # [B, C, 3, 3] scene b is seen by its own C cameras
    world_to_cam: Tensor,  # [B, C, 4, 4]
    height: int,
    width: int,
    *,
    backend: str = "auto",
    background: Tensor | None = None,  # [D]
    near: float = 0.01,
    eps2d: float = 0.3,
) -> tuple[Tensor, Tensor]:
    """Splat B scenes of N Gaussians each into their own C cameras. -> image [B,C,H,W,D], alpha [B,C,H,W].

    Scene b's Gaussians are seen only by scene b's cameras (a training batch: one head per sample). Same
    conventions and backends as `render_gaussians`, and scene b's result is exactly what
    `render_gaussians(means[b], ..., K[b], world_to_cam[b], ...)` gives: the gsplat backend makes one
    `rasterization` call with a batch dimension (one launch per kernel for the whole batch); the torch backend
    runs the reference `rasterize_gaussians` scene by scene (its memory bound `max_pairs` then holds per scene).
    """
    _check_batched_shapes(means, quats, scales, opacities, colors, K, world_to_cam)
    which = _resolve(backend, means.device)
    if which == "gsplat":
        return _render_gsplat(means, quats, scales, opacities, colors, K, world_to_cam, height, width, background,
                              near, eps2d)
    images, alphas = [], []
    for b in range(means.shape[0]):
        image, alpha = rasterize_gaussians(means[b], quats[b], scales[b], opacities[b], colors[b], K[b],
                                           world_to_cam[b], height, width, background=background, near=near,
                                           eps2d=eps2d)
        images.append(image)
        alphas.append(alpha)
    return torch.stack(images), torch.stack(alphas)
