"""The Gaussian renderer the models call: one function, two backends.

    image, alpha = render_gaussians(means, quats, scales, opacities, colors, K, world_to_cam, H, W)
    image, alpha = render_gaussians(..., backend="torch" | "gsplat" | "auto")

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


def _render_gsplat(means, quats, scales, opacities, colors, K, world_to_cam, height, width, background, near,
                   eps2d):
    rasterization, err = _gsplat_rasterization()
    if rasterization is None:
        raise RuntimeError(f"backend 'gsplat' requested but gsplat cannot be imported ({err}); use backend='torch'")
    tensors = dict(means=means, quats=quats, scales=scales, opacities=opacities, colors=colors, K=K,
                   world_to_cam=world_to_cam)
    off = [name for name, t in tensors.items() if t.device.type != "cuda"]
    if background is not None and background.device.type != "cuda":
        off.append("background")
    if off:
        raise RuntimeError(f"backend 'gsplat' needs CUDA tensors, but {', '.join(off)} "
                           f"{'is' if len(off) == 1 else 'are'} on {tensors.get(off[0], background).device}; "
                           "use backend='torch' (or 'auto') off the GPU")
    if bool((K[:, 0, 1] != 0).any()):
        raise ValueError("backend 'gsplat' ignores the skew K[0,1]; use backend='torch' for skewed intrinsics")
    C, N = K.shape[0], means.shape[0]
    D = colors.shape[-1]
    out_dtype = means.dtype
    f32 = torch.float32
    K_shifted = K.to(f32).clone()
    K_shifted[:, 0, 2] += 0.5
    K_shifted[:, 1, 2] += 0.5
    cols = colors.to(f32)
    if cols.dim() == 3:
        cols = cols.expand(C, N, D)
    bgs = None if background is None else background.to(f32).reshape(1, D).expand(C, D).contiguous()
    render_colors, render_alphas, _ = rasterization(
        means.to(f32),
        quats.to(f32),
        scales.to(f32),
        opacities.to(f32),
        cols,
        viewmats=world_to_cam.to(f32),
        Ks=K_shifted,
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
