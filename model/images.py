"""Resizing batches of images for the networks and losses (targets, condition crops, renders)."""

from __future__ import annotations

import numpy as np
from torch import Tensor
from torch.nn import functional as F


def to_uint8(image: Tensor) -> np.ndarray:
    """One image [3, H, W] in [0, 1] -> uint8 [H, W, 3] (clamped, rounded)."""
    return (image.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)


def resize_images(images: Tensor, size: int) -> Tensor:
    """images: [B, C, H, W] float -> [B, C, size, size] (area average when shrinking)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    mode = "area" if images.shape[-1] > size else "bilinear"
    return F.interpolate(images, size=(size, size), mode=mode, **({} if mode == "area" else {"align_corners": False}))
