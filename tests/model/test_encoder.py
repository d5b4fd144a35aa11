"""The image encoders (E_exp, E_nf) see their input from the start: at initialisation the codes of
different images differ, and the first convolution gets gradients of the same order as the last."""

from __future__ import annotations

import torch

from model.nets.encoder import ConvEncoder


def test_an_untrained_encoder_tells_images_apart_and_passes_gradients_down():
    torch.manual_seed(0)
    encoder = ConvEncoder(16, (8, 16, 32, 32), 64)
    images = torch.rand(8, 3, 64, 64)
    codes = encoder(images)
    spread = float(codes.std(0).mean() / codes.abs().mean())
    assert spread > 0.1, spread  # PyTorch's default initialisation gave ~1e-4: one code for every image
    codes.pow(2).sum().backward()
    convs = [m for m in encoder.blocks if isinstance(m, torch.nn.Conv2d)]
    first, last = (float(c.weight.grad.abs().mean()) for c in (convs[0], convs[-1]))
    assert first / last > 0.05, (first, last)
