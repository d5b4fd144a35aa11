"""Image metrics: PSNR and SSIM (Wang et al. 2004), per image of a batch.

SSIM uses a Gaussian window over the 'valid' region (no padding), which matches
skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
for window=11 (skimage's window for sigma=1.5 and truncate=3.5, whose cropped border leaves exactly the
valid region).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F


def psnr(image: Tensor, target: Tensor) -> Tensor:
    """[B] PSNR in dB of images [B, 3, H, W] in [0, 1] (the image clamped to [0, 1])."""
    mse = ((image.clamp(0, 1) - target) ** 2).flatten(1).mean(1)
    return -10 * torch.log10(mse.clamp_min(1e-10))


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """[size] normalised 1D Gaussian centred on the middle tap."""
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def ssim(image: Tensor, target: Tensor, window: int = 11, sigma: float = 1.5, data_range: float = 1.0) -> Tensor:
    """[B] SSIM of images [B, C, H, W] (image clamped to [0, 1]) against target [B, C, H, W].

    Local statistics use a separable `window`x`window` Gaussian (std `sigma`) without padding; the SSIM
    map is averaged over the valid pixels and the channels of each image.
    """
    if image.shape != target.shape or image.dim() != 4:
        raise ValueError(f"expected two [B, C, H, W] images of the same shape, got {tuple(image.shape)} "
                         f"and {tuple(target.shape)}")
    if window < 1:
        raise ValueError(f"window must be positive, got {window}")
    B, C, H, W = image.shape
    if H < window or W < window:
        raise ValueError(f"image {H}x{W} is smaller than the {window}x{window} SSIM window")
    dtype = torch.promote_types(image.dtype, target.dtype)
    if not dtype.is_floating_point:
        dtype = torch.float32
    x = image.clamp(0, 1).to(dtype)
    y = target.to(dtype)
    g = _gaussian_window(window, sigma, dtype, x.device)
    # all five local moments in one grouped conv: [B, 5C, H, W] -> [B, 5C, H-w+1, W-w+1]
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    stack = F.conv2d(stack, g.view(1, 1, 1, window).expand(5 * C, 1, 1, window), groups=5 * C)
    stack = F.conv2d(stack, g.view(1, 1, window, 1).expand(5 * C, 1, window, 1), groups=5 * C)
    mu_x, mu_y, e_xx, e_yy, e_xy = stack.split(C, dim=1)
    var_x = e_xx - mu_x * mu_x
    var_y = e_yy - mu_y * mu_y
    cov = e_xy - mu_x * mu_y
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return s.flatten(1).mean(1)  # every channel has the same number of valid pixels
