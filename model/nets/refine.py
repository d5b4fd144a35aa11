"""The refine network Psi: a small U-Net from the rendered 32-channel feature map to RGB.

GPHMv2: two stride-2 convolutions down, two transposed convolutions up, skip connections, same
resolution out as in. GPHMv1 variant (`upsample=2`): rendered at half resolution, one convolution down
and two up, so the output has twice the input's size.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _act() -> nn.Module:
    return nn.LeakyReLU(0.2)


class RefineUNet(nn.Module):
    """features [B, C, H, W] -> rgb [B, 3, H * upsample, W * upsample]."""

    def __init__(self, in_channels: int = 32, width: int = 64, upsample: int = 1):
        super().__init__()
        if upsample not in (1, 2):
            raise ValueError("upsample must be 1 (GPHMv2) or 2 (GPHMv1)")
        self.upsample = upsample
        w = width
        self.inp = nn.Sequential(nn.Conv2d(in_channels, w, 3, 1, 1), _act())
        self.down1 = nn.Sequential(nn.Conv2d(w, 2 * w, 4, 2, 1), _act())
        self.down2 = nn.Sequential(nn.Conv2d(2 * w, 4 * w, 4, 2, 1), _act()) if upsample == 1 else None
        if upsample == 1:
            self.up1 = nn.Sequential(nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1), _act())
            self.up2 = nn.Sequential(nn.ConvTranspose2d(4 * w, w, 4, 2, 1), _act())
            self.out = nn.Conv2d(2 * w, 3, 3, 1, 1)
        else:  # v1: down once, up twice (the second up is past the input resolution: no skip there)
            self.up1 = nn.Sequential(nn.ConvTranspose2d(2 * w, w, 4, 2, 1), _act())
            self.up2 = nn.Sequential(nn.ConvTranspose2d(2 * w, w, 4, 2, 1), _act())
            self.out = nn.Conv2d(w, 3, 3, 1, 1)

    def forward(self, features: Tensor) -> Tensor:
        x0 = self.inp(features)  # [B, w, H, W]
        x1 = self.down1(x0)  # [B, 2w, H/2, W/2]
        if self.upsample == 1:
            x2 = self.down2(x1)  # [B, 4w, H/4, W/4]
            y = self.up1(x2)  # [B, 2w, H/2, W/2]
            y = self.up2(torch.cat([y, x1], 1))  # [B, w, H, W]
            return self.out(torch.cat([y, x0], 1))
        y = self.up1(x1)  # [B, w, H, W]
        y = self.up2(torch.cat([y, x0], 1))  # [B, w, 2H, 2W]
        return self.out(y)
