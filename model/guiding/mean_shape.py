"""The mean geometry: an SDF MLP f_mean(x) -> (s, gamma) over canonical space, turned into a mesh
(V0, Gamma, F) by Deep Marching Tetrahedra on a tetrahedral grid the project generates.

Extraction evaluates the SDF on every grid vertex without gradients (in chunks), finds the edges the
surface crosses, and re-evaluates f_mean with gradients only at those edges' end points; so a 256^3
grid costs one no-grad pass plus a pass over the surface band. The SDF is clamped to a box one cell
inside the grid, so the mesh is always closed (a neck leaving the grid is capped).

f_mean starts as a head-sized ellipsoid on a neck (fitted for `init_steps` steps at construction).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from model.geometry.marching_tets import TetMesh, crossing_edges, crossing_vertices, marching_tets
from model.geometry.tet_grid import TetGrid, tet_grid
from model.guiding.config import GuidingConfig
from model.nets.mlp import MLP

GRID_CENTRE = (0.0, -0.25, 0.0)  # the grid reaches further down than up: neck and shoulders
HEAD_CENTRE, HEAD_RADII = (0.0, 0.05, 0.0), (0.42, 0.58, 0.55)  # canonical units (head length about 1)
NECK_RADIUS, NECK_Z, NECK_TOP = 0.25, -0.08, -0.2
CHUNK = 1 << 16


def initial_sdf(x: Tensor) -> Tensor:
    """x: [P, 3] canonical -> [P] signed distance (approximate away from the surface) of an ellipsoid head
    on a vertical cylinder neck, joined by a smooth minimum."""
    centre = x.new_tensor(HEAD_CENTRE)
    radii = x.new_tensor(HEAD_RADII)
    head = (((x - centre) / radii).norm(dim=-1) - 1) * radii.min()
    radial = torch.stack([x[:, 0], x[:, 2] - NECK_Z], -1).norm(dim=-1) - NECK_RADIUS
    neck = torch.maximum(radial, x[:, 1] - NECK_TOP)
    k = 0.08  # smooth-minimum blend width
    h = (0.5 + 0.5 * (neck - head) / k).clamp(0, 1)
    return torch.lerp(neck, head, h) - k * h * (1 - h)


def fourier_encoding(x: Tensor, freqs: int) -> Tensor:
    """x: [P, 3] -> [P, 3 + 6 * freqs]: x, sin and cos of 2^k pi x."""
    if freqs == 0:
        return x
    scales = 2.0 ** torch.arange(freqs, device=x.device, dtype=x.dtype) * math.pi
    angles = (x[:, None, :] * scales[:, None]).reshape(x.shape[0], 3 * freqs)
    return torch.cat([x, torch.sin(angles), torch.cos(angles)], -1)


class MeanShape(nn.Module):
    def __init__(self, config: GuidingConfig, initialise: bool = True):
        super().__init__()
        self.resolution, self.bound, self.freqs = config.grid_resolution, config.grid_bound, config.encoding_freqs
        self.net = MLP(3 + 6 * self.freqs, 1 + config.feature_dim, config.mean_width, config.mean_hidden,
                       activation="softplus")
        self._grid: TetGrid | None = None
        if initialise:
            self.fit_initial(config.init_steps)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: [P, 3] canonical -> (sdf [P], gamma [P, D])."""
        out = self.net(fourier_encoding(x, self.freqs))
        return out[:, 0], out[:, 1:]

    @property
    def grid(self) -> TetGrid:
        device = next(self.parameters()).device
        if self._grid is None:
            grid = tet_grid(self.resolution, self.bound)
            grid.verts = grid.verts + torch.tensor(GRID_CENTRE)
            self._grid = grid
        if self._grid.verts.device != device:
            self._grid = self._grid.to(device)
        return self._grid

    def box(self, x: Tensor) -> Tensor:
        """[P] > 0 outside the box one cell inside the grid (the clamp that closes the mesh)."""
        centre = x.new_tensor(GRID_CENTRE)
        return (x - centre).abs().max(dim=-1).values - (self.bound - self.grid.cell)

    @torch.no_grad()
    def grid_sdf(self) -> Tensor:
        """[P] clamped SDF at every grid vertex, without gradients."""
        verts = self.grid.verts
        sdf = torch.cat([self(verts[i:i + CHUNK])[0] for i in range(0, verts.shape[0], CHUNK)])
        return torch.maximum(sdf, self.box(verts))

    def extract(self) -> TetMesh:
        """The mean mesh: V0 [N, 3], faces [F, 3], Gamma [N, D], differentiable w.r.t. f_mean."""
        grid = self.grid
        sdf = self.grid_sdf()
        edge_ids = crossing_edges(sdf, grid)  # [K]
        vert_ids, inverse = crossing_vertices(grid, edge_ids)  # [U], [K, 2]
        points = grid.verts[vert_ids]
        s, gamma = self(points)  # with gradients, on the surface band only
        s = torch.maximum(s, self.box(points))
        return marching_tets(grid, sdf, edge_ids=edge_ids, edge_sdf=s[inverse], edge_features=gamma[inverse])

    def fit_initial(self, steps: int, seed: int = 0) -> float:
        """Fit f_mean to `initial_sdf` (L1 on SDF values; half the points near the surface)
        -> final loss. Deterministic for a seed."""
        if steps <= 0:
            return float("nan")
        gen = torch.Generator().manual_seed(seed)
        centre = torch.tensor(GRID_CENTRE)
        opt = torch.optim.Adam(self.net.parameters(), lr=2e-3)
        loss = torch.zeros(())
        for _ in range(steps):
            uniform = (torch.rand(2048, 3, generator=gen) * 2 - 1) * self.bound + centre
            pool = (torch.rand(16384, 3, generator=gen) * 2 - 1) * self.bound + centre
            near = pool[initial_sdf(pool).abs() < 0.05][:2048]
            x = torch.cat([uniform, near])
            loss = (self(x)[0] - initial_sdf(x)).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return float(loss.detach())
