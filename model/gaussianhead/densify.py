"""Densification and pruning (appendix A.2; the rest as 3D Gaussian splatting, Kerbl et al. 2023).

Every `densify_every` iterations from `densify_from` to `densify_until`:
    g = mean view-space gradient norm of each Gaussian's projected mean over the iterations it was seen
    clone  g >= densify_grad and largest scale <= percent_dense * extent   (a copy at the same place)
    split  g >= densify_grad and largest scale >  percent_dense * extent   (two samples from the parent's
           Gaussian, scales / 1.6, the parent removed)
    prune  opacity < prune_opacity, or largest scale > prune_size * extent  (the paper's 0.0002 and 1%)
A clone or split child inherits every per-Gaussian parameter of its parent, the derivation quaternions
included (section 4.3, "inherited derivation initialisation"); its optimiser moments start at zero as in
3DGS, the survivors keep theirs. Opacities for pruning come from the decoders with the mean expression
(zero), as opacity is decoded per frame here.

The view-space gradient: d loss / d (NDC mean) is approximated from the world mean's gradient g_w as
|(R_cam g_w)_xy| * z / f * R / 2 (the 2D mean moves f / z pixels per unit of camera x, y; NDC is 2 / R per
pixel); the covariance's dependence on the mean is ignored.
"""

from __future__ import annotations

import torch
from torch import Tensor

from model.gaussianhead.model import GaussianHead
from model.render.gaussians import quat_to_rotmat


@torch.no_grad()
def accumulate(model: GaussianHead, means_world: Tensor, K: Tensor, world_to_cam: Tensor, resolution: int) -> None:
    """Add this iteration's view-space gradient norms of the Gaussians the camera sees (means_world [N, 3]
    after backward with retain_grad; K [3, 3], world_to_cam [4, 4])."""
    if means_world.grad is None:
        return
    Rc, tc = world_to_cam[:3, :3], world_to_cam[:3, 3]
    p = means_world.detach() @ Rc.T + tc
    g = means_world.grad @ Rc.T
    z = p[:, 2]
    f = 0.5 * (K[0, 0] + K[1, 1])
    u = K[0, 0] * p[:, 0] / z.clamp_min(1e-6) + K[0, 2]
    v = K[1, 1] * p[:, 1] / z.clamp_min(1e-6) + K[1, 2]
    seen = (z > 0.01) & (u >= 0) & (u < resolution) & (v >= 0) & (v < resolution)
    ndc = g[:, :2].norm(dim=1) * z / f * resolution / 2
    model.grad_accum += torch.where(seen, ndc, torch.zeros_like(ndc))
    model.grad_count += seen.float()


def replace_points(model: GaussianHead, optimizers, values: dict[str, Tensor], source: Tensor, fresh: Tensor
                   ) -> None:
    """Give every per-Gaussian parameter its new rows values[name] [M, ...]; the optimisers' per-row state
    becomes row source[i] of the old one (zero where fresh [M] is True). The statistics restart at zero."""
    for name in model.per_point_names():
        old = getattr(model, name)
        new = torch.nn.Parameter(values[name].detach().clone().contiguous())
        for opt in optimizers:
            for group in opt.param_groups:
                for i, p in enumerate(group["params"]):
                    if p is old:
                        group["params"][i] = new
                        state = opt.state.pop(old, None)
                        if state:
                            moved = {}
                            for k, v in state.items():
                                if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == old.shape[0]:
                                    v = v[source].clone()
                                    v[fresh] = 0
                                moved[k] = v
                            opt.state[new] = moved
        setattr(model, name, new)
    M = source.shape[0]
    model.grad_accum = torch.zeros(M, device=source.device)
    model.grad_count = torch.zeros(M, device=source.device)


def _opacity_at_rest(model: GaussianHead) -> Tensor:
    """[N] opacities decoded with the mean (zero) expression, seen from the front (+z)."""
    e = torch.zeros(model.expression_dim, device=model.xyz.device)
    x, _, _ = model.core(e)
    d = torch.zeros_like(x)
    d[:, 2] = -1.0
    opacity, _ = model.radiance(x, d)
    return opacity


@torch.no_grad()
def densify_and_prune(model: GaussianHead, optimizers, generator: torch.Generator | None = None) -> dict[str, int]:
    """One densification and pruning pass; returns the counts {cloned, split, pruned, total}."""
    c = model.config
    N = model.n_points
    grads = model.grad_accum / model.grad_count.clamp_min(1)
    size = torch.exp(model.log_scale).max(dim=1).values
    big = size > c.percent_dense * float(model.extent)
    hot = grads >= c.densify_grad
    room = max(0, c.max_gaussians - N)
    clone = hot & ~big
    split = hot & big
    if int(hot.sum()) > room:  # over the cap: the hottest first (a clone or a split adds one Gaussian net)
        order = torch.argsort(torch.where(hot, grads, torch.full_like(grads, -1.0)), descending=True)[:room]
        allowed = torch.zeros(N, dtype=torch.bool, device=grads.device)
        allowed[order] = True
        clone, split = clone & allowed, split & allowed
    points = model.points()
    idx_keep = torch.nonzero(~split).squeeze(1)
    idx_clone = torch.nonzero(clone).squeeze(1)
    idx_split = torch.nonzero(split).squeeze(1)
    source = torch.cat([idx_keep, idx_clone, idx_split, idx_split])
    fresh = torch.cat([torch.zeros(len(idx_keep), dtype=torch.bool),
                       torch.ones(len(idx_clone) + 2 * len(idx_split), dtype=torch.bool)]).to(source.device)
    values = {name: value[source].clone() for name, value in points.items()}
    if len(idx_split):
        n = len(idx_split)
        std = torch.exp(points["log_scale"][idx_split]).repeat(2, 1)
        sample = torch.randn(2 * n, 3, generator=generator).to(std) * std
        R = quat_to_rotmat(points["rotation"][idx_split]).repeat(2, 1, 1)
        start = len(idx_keep) + len(idx_clone)
        values["xyz"][start:] = points["xyz"][idx_split].repeat(2, 1) + torch.einsum("nij,nj->ni", R, sample)
        values["log_scale"][start:] = torch.log(std / (0.8 * 2))
    replace_points(model, optimizers, values, source, fresh)
    opacity = _opacity_at_rest(model)
    size = torch.exp(model.log_scale).max(dim=1).values
    prune = (opacity < c.prune_opacity) | (size > c.prune_size * float(model.extent))
    if bool(prune.all()):  # never prune everything: keep the most opaque half
        prune = opacity < opacity.median()
    keep = torch.nonzero(~prune).squeeze(1)
    if len(keep) < model.n_points:
        replace_points(model, optimizers, {name: v[keep] for name, v in model.points().items()}, keep,
                       torch.zeros(len(keep), dtype=torch.bool, device=keep.device))
    return {"cloned": len(idx_clone), "split": len(idx_split), "pruned": int(prune.sum()), "total": model.n_points}


__all__ = ["accumulate", "densify_and_prune", "replace_points"]
