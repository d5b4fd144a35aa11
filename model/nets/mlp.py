"""Per-point MLPs: a plain MLP and one conditioned on a per-sample code without materialising the
concatenation [point feature, code] for every point (the first layer is split into two linears)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "softplus":  # smooth, for SDFs whose gradients matter
        return nn.Softplus(beta=100)
    raise ValueError(f"unknown activation {name!r}")


class MLP(nn.Module):
    """x [..., d_in] -> [..., d_out] through `hidden` layers of `width` units."""

    def __init__(self, d_in: int, d_out: int, width: int, hidden: int, activation: str = "relu",
                 out_scale: float = 1.0):
        super().__init__()
        layers: list[nn.Module] = []
        d = d_in
        for _ in range(hidden):
            layers += [nn.Linear(d, width), _activation(activation)]
            d = width
        self.hidden = nn.Sequential(*layers)
        self.out = nn.Linear(d, d_out)
        if out_scale != 1.0:  # small initial outputs (displacements start near zero)
            with torch.no_grad():
                self.out.weight.mul_(out_scale)
                self.out.bias.mul_(out_scale)

    def features(self, x: Tensor) -> Tensor:
        """The last hidden layer's activations [..., width]."""
        return self.hidden(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.hidden(x))


class ConditionedMLP(nn.Module):
    """f(point feature [B|1, N, d_point], code [B, d_code]) -> [B, N, d_out]: an MLP over the concatenation,
    whose first layer is W_p p + W_c c so the code is added per sample instead of copied per point."""

    def __init__(self, d_point: int, d_code: int, d_out: int, width: int, hidden: int, out_scale: float = 1.0):
        super().__init__()
        if hidden < 1:
            raise ValueError("a conditioned MLP needs at least one hidden layer")
        self.point = nn.Linear(d_point, width)
        self.code = nn.Linear(d_code, width, bias=False)
        self.rest = MLP(width, d_out, width, hidden - 1, out_scale=out_scale)
        self.d_code = d_code

    def forward(self, point: Tensor, code: Tensor) -> Tensor:
        h = self.point(point) + self.code(code)[:, None, :]
        return self.rest(torch.relu(h))
