"""Resizing batches of images for the networks and losses (targets, condition crops, renders)."""

from __future__ import annotations

from torch import Tensor
from torch.nn import functional as F


def resize_images(images: Tensor, size: int) -> Tensor:
    """images: [B, C, H, W] float -> [B, C, size, size] (area average when shrinking)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    mode = "area" if images.shape[-1] > size else "bilinear"
    return F.interpolate(images, size=(size, size), mode=mode, **({} if mode == "area" else {"align_corners": False}))
