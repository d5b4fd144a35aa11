"""LPIPS (Zhang et al. 2018), VGG variant, from weight files the user supplies (nothing is downloaded):

    lpips = LPIPS(vgg_path, lin_path)   # torchvision VGG16 state dict; the lpips package's weights/v0.1/vgg.pth
    d = lpips(a, b)                     # a, b: [B, 3, H, W] in [0, 1] -> [B]

    x -> 2x - 1 -> (x - shift) / scale                                  the lpips scaling layer
    f_l = VGG16 relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 of each image
    d = sum_l mean_hw( w_l . (f_l(a) / |f_l(a)| - f_l(b) / |f_l(b)|)^2 )  w_l: the 1x1 'lin' weights [C_l]
The lin file's keys are `lin{l}.model.1.weight` (lpips' default, with dropout) or `lin{l}.model.0.weight`,
each [1, C_l, 1, 1].
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn

from model.nets.vgg import VGGWeightsError, load_vgg16

TAPS = (3, 8, 15, 22, 29)  # relu1_2 .. relu5_3 in torchvision's vgg16().features
CHANNELS = (64, 128, 256, 512, 512)
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


class LPIPSWeightsError(VGGWeightsError):
    """The LPIPS linear-layer file is missing, unreadable or of another network."""


def load_lin_weights(path: str) -> list[Tensor]:
    """The five [C_l] non-negative layer weights of an lpips VGG 'lin' file."""
    if not path or not os.path.isfile(path):
        raise LPIPSWeightsError(f"no LPIPS weights at {path!r} (the lpips package's lpips/weights/v0.1/vgg.pth)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise LPIPSWeightsError(f"could not read LPIPS weights at {path}: {e}") from None
    weights = []
    for layer, channels in enumerate(CHANNELS):
        key = next((k for k in (f"lin{layer}.model.1.weight", f"lin{layer}.model.0.weight") if k in state), None)
        if key is None or tuple(state[key].shape) != (1, channels, 1, 1):
            raise LPIPSWeightsError(f"{path} is not an LPIPS VGG weight file: lin{layer}.model.1.weight of shape "
                                    f"(1, {channels}, 1, 1) expected")
        weights.append(state[key].reshape(channels).float())
    return weights


class LPIPS(nn.Module):
    def __init__(self, vgg_path: str, lin_path: str):
        super().__init__()
        self.net = load_vgg16(vgg_path, last=TAPS[-1])
        for i, w in enumerate(load_lin_weights(lin_path)):
            self.register_buffer(f"w{i}", w)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))

    @torch.no_grad()
    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """a, b: [B, 3, H, W] in [0, 1] -> [B] distances."""
        fa = self.net((2 * a.clamp(0, 1) - 1 - self.shift) / self.scale, TAPS)
        fb = self.net((2 * b.clamp(0, 1) - 1 - self.shift) / self.scale, TAPS)
        total = torch.zeros(a.shape[0], device=a.device)
        for i, (x, y) in enumerate(zip(fa, fb, strict=True)):
            x = x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            y = y / (y.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + ((x - y) ** 2 * getattr(self, f"w{i}").view(1, -1, 1, 1)).sum(1).mean((1, 2))
        return total
