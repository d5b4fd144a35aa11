"""Riemannian Adam on the unit sphere (Becigneul and Ganea 2019), for the derivation quaternions (eq. 5).

Each vector along the last dimension of a parameter is one point x on the sphere S^{d-1} (a product
manifold of them); the adaptivity is per point, as in the paper's product-manifold form:

    g  = grad - <grad, x> x                    the Riemannian gradient (tangent projection)
    m  = b1 m + (1 - b1) g                     first moment, a tangent vector at x
    v  = b2 v + (1 - b2) <g, g>                second moment, one scalar per point
    u  = -lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
    x' = Exp_x(u) = cos|u| x + sin|u| u / |u|  the exponential map (eq. 5), renormalised against round-off
    m  = m - <m, x'> x'                        moved to x' by projection (vector transport)
"""

from __future__ import annotations

import torch
from torch import Tensor


def sphere_exp(x: Tensor, u: Tensor) -> Tensor:
    """Exp_x(u) on the unit sphere, u tangent at x; [..., d] -> [..., d] unit vectors."""
    n = u.norm(dim=-1, keepdim=True)
    safe = n.clamp_min(1e-12)
    y = torch.where(n > 1e-12, torch.cos(n) * x + torch.sin(n) * u / safe, x + u)
    return y / y.norm(dim=-1, keepdim=True)


def tangent(x: Tensor, v: Tensor) -> Tensor:
    """v projected on the tangent space of the sphere at x."""
    return v - (v * x).sum(-1, keepdim=True) * x


class RiemannianAdam(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float64)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p[..., :1])
                state["step"] += 1
                t = float(state["step"])
                g = tangent(p, p.grad)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).add_((g * g).sum(-1, keepdim=True), alpha=1 - b2)
                u = -group["lr"] * (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)).sqrt() + group["eps"])
                x = sphere_exp(p, u)
                p.copy_(x)
                m.copy_(tangent(x, m))
        return loss


__all__ = ["RiemannianAdam", "sphere_exp", "tangent"]
