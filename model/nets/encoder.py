"""Image -> code encoder (the expression encoder E_exp and the non-face encoder E_nf of GPHMv2): four
convolution blocks, each a stride-1 and a stride-2 3x3 convolution, then an MLP on the pooled map.

The convolutions start with He initialisation for their LeakyReLU (fan-in, slope 0.2, zero bias), so the
activations keep their scale through the eight layers. PyTorch's default (uniform with a = sqrt(5)) shrinks
them about threefold per layer: the pooled map was ~1e-3 of the input's scale, the code the MLP's biases
whatever the image, and the gradients reaching the convolutions too small to ever change that."""

from __future__ import annotations

from torch import Tensor, nn

from model.nets.mlp import MLP

LEAK = 0.2  # LeakyReLU slope


class ConvEncoder(nn.Module):
    """images [B, 3, S, S] in [0, 1] -> codes [B, d_code]."""

    def __init__(self, d_code: int, channels: tuple[int, ...] = (32, 64, 128, 256), mlp_width: int = 512,
                 mlp_hidden: int = 2, pooled: int = 4):
        super().__init__()
        blocks: list[nn.Module] = []
        c_in = 3
        for c in channels:
            blocks += [nn.Conv2d(c_in, c, 3, 1, 1), nn.LeakyReLU(LEAK), nn.Conv2d(c, c, 3, 2, 1), nn.LeakyReLU(LEAK)]
            c_in = c
        self.blocks = nn.Sequential(*blocks)
        for layer in self.blocks:
            if isinstance(layer, nn.Conv2d):
                nn.init.kaiming_normal_(layer.weight, a=LEAK, mode="fan_in", nonlinearity="leaky_relu")
                nn.init.zeros_(layer.bias)
        self.pool = nn.AdaptiveAvgPool2d(pooled)  # any input size; 256 px gives 16x16 before pooling
        self.mlp = MLP(c_in * pooled * pooled, d_code, mlp_width, mlp_hidden)

    def forward(self, images: Tensor) -> Tensor:
        x = self.pool(self.blocks(images * 2 - 1))
        return self.mlp(x.flatten(1))
