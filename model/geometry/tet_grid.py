"""A conforming tetrahedral grid of the cube [-bound, bound]^3 (Kuhn / Freudenthal subdivision).

The cube is cut into resolution^3 cells; each cell is split into 6 tetrahedra that all share the cell's
main diagonal from corner (0,0,0) to corner (1,1,1). The tet of the axis permutation (p0, p1, p2) has
the corners of the monotone path 0 -> e_p0 -> e_p0 + e_p1 -> (1,1,1). Every cell is split the same way,
so the faces of neighbouring cells match and the tets form a conforming mesh.

Layout:
- grid vertex (i, j, k) (i along x, j along y, k along z) has index (i * n + j) * n + k with n = resolution + 1;
- tet 6 * c + q is permutation q (itertools order) of cell c = (i * r + j) * r + k; its corners are in
  path order, except that the two middle corners are swapped for odd permutations so that every tet is
  positively oriented: det(v1 - v0, v2 - v0, v3 - v0) > 0 (corner 0 stays the cell's (0,0,0) corner and
  corner 3 its (1,1,1) corner);
- every edge joins a vertex v to v + d for one of the 7 offsets d in {0,1}^3 \\ {0}; the edges are grouped
  by d (EDGE_DIRS order) and, within a group, ordered by their start vertex. Since d >= 0 the start has the
  smaller index, so each pair is sorted (a < b). Edge ids of the tets are computed in closed form, no sort
  or unique over the whole grid.

Index storage: int64 up to resolution 128; above that the index tensors are int32 (resolution 256 would
take about 10 GB as int64, 5 GB as int32). torch indexing and index_select accept int32 indices; convert
slices with .long() where an op needs int64 (gather, scatter, searchsorted results, ...).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import torch
from torch import Tensor

# Local corner pairs of a tet's 6 edges, in the column order of TetGrid.tet_edges.
TET_EDGE_PAIRS = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))
# The 7 edge directions of the subdivision: every nonzero corner offset of a cell.
EDGE_DIRS = tuple(d for d in itertools.product((0, 1), repeat=3) if any(d))
# Largest resolution stored with int64 indices when no index dtype is asked for.
INT64_MAX_RESOLUTION = 128


@dataclass
class TetGrid:
    verts: Tensor  # [P, 3] float32 grid vertex positions, P = (r + 1)^3
    tets: Tensor  # [T, 4] int64 (int32 above INT64_MAX_RESOLUTION) vertex indices of each tet, T = 6 r^3
    edges: Tensor  # [E, 2] same dtype as tets; unique edges of all tets, sorted pairs (a < b)
    tet_edges: Tensor  # [T, 6] same dtype as tets; index into `edges` of each tet's edges, TET_EDGE_PAIRS order
    resolution: int
    cell: float  # edge length of one cube cell

    def to(self, device) -> TetGrid:
        return replace(self, verts=self.verts.to(device), tets=self.tets.to(device),
                       edges=self.edges.to(device), tet_edges=self.tet_edges.to(device))


def _odd(perm: tuple[int, ...]) -> bool:
    inversions = sum(perm[a] > perm[b] for a in range(len(perm)) for b in range(a + 1, len(perm)))
    return inversions % 2 == 1


def cell_tets() -> list[list[tuple[int, int, int]]]:
    """The 6 positively oriented tets of the unit cell, each as its 4 corner offsets in {0,1}^3."""
    tets = []
    for perm in itertools.permutations(range(3)):
        corner = [0, 0, 0]
        path = [tuple(corner)]
        for axis in perm:
            corner[axis] = 1
            path.append(tuple(corner))
        if _odd(perm):
            path[1], path[2] = path[2], path[1]
        tets.append(path)
    return tets


def _lattice(dims: tuple[int, int, int], strides: Tensor, const: Tensor, out: Tensor | None = None) -> Tensor:
    """[dims[0] * dims[1] * dims[2], Q] the values i * strides[0, q] + j * strides[1, q] + k * strides[2, q]
    + const[q] over the lattice (i, j, k) in C order; strides [3, Q], const [Q]; written into out if given.

    One pass over the output; the (k, q) term is materialised so that the inner loop runs over contiguous memory."""
    i, j, k = (torch.arange(n, dtype=const.dtype)[:, None] * s for n, s in zip(dims, strides, strict=True))  # [n, Q]
    ij = i[:, None, None] + j[None, :, None]  # [d0, d1, 1, Q]
    if out is None:
        out = torch.empty((*dims, const.shape[0]), dtype=const.dtype)
    torch.add(ij, (k + const)[None, None], out=out.view(*dims, const.shape[0]))
    return out.view(-1, const.shape[0])


def _edge_group_dims(resolution: int, d: tuple[int, int, int]) -> tuple[int, int, int]:
    """Extent of the start vertices of the edges with offset d: r along the axes d moves on, r + 1 elsewhere."""
    return tuple(resolution if da else resolution + 1 for da in d)


def _edge_group_offsets(resolution: int) -> list[int]:
    """First edge id of each EDGE_DIRS group."""
    sizes = [_prod(_edge_group_dims(resolution, d)) for d in EDGE_DIRS]
    return [sum(sizes[:g]) for g in range(len(sizes))]


def _n_edges(resolution: int) -> int:
    return sum(_prod(_edge_group_dims(resolution, d)) for d in EDGE_DIRS)


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= v
    return out


def _grid_verts(resolution: int, bound: float) -> Tensor:
    """[P, 3] float32 vertex positions."""
    x = torch.linspace(-bound, bound, resolution + 1, dtype=torch.float32)
    return torch.stack(torch.meshgrid(x, x, x, indexing="ij"), -1).reshape(-1, 3)


def _grid_tets(resolution: int, dtype: torch.dtype) -> Tensor:
    """[T, 4] vertex indices of the tets, cell-major."""
    n = resolution + 1
    corners = torch.tensor([(a * n + b) * n + c for tet in cell_tets() for a, b, c in tet], dtype=dtype)  # [24]
    strides = torch.tensor([n * n, n, 1], dtype=dtype)[:, None].expand(3, 24)
    return _lattice((resolution,) * 3, strides, corners).reshape(-1, 4)  # [C * 6, 4]


def _grid_edges(resolution: int, dtype: torch.dtype) -> Tensor:
    """[E, 2] sorted vertex pairs of all edges, grouped by EDGE_DIRS."""
    n = resolution + 1
    strides = torch.tensor([n * n, n, 1], dtype=dtype)[:, None].expand(3, 2)
    offsets = _edge_group_offsets(resolution) + [_n_edges(resolution)]
    out = torch.empty((offsets[-1], 2), dtype=dtype)
    for g, d in enumerate(EDGE_DIRS):
        step = torch.tensor([0, (d[0] * n + d[1]) * n + d[2]], dtype=dtype)  # start and end vertex
        _lattice(_edge_group_dims(resolution, d), strides, step, out=out[offsets[g]:offsets[g + 1]])
    return out


def _grid_tet_edges(resolution: int, dtype: torch.dtype) -> Tensor:
    """[T, 6] edge ids of each tet's edges (TET_EDGE_PAIRS order), in closed form: the edge from corner s of
    cell (i, j, k) along d has id offset_d + (i + s0) * D1 * D2 + (j + s1) * D2 + (k + s2), with (D0, D1, D2)
    the extent of group d."""
    offsets = _edge_group_offsets(resolution)
    strides, const = [], []
    for tet in cell_tets():
        for u, w in TET_EDGE_PAIRS:
            d = tuple(abs(a - b) for a, b in zip(tet[u], tet[w], strict=True))
            s = [min(a, b) for a, b in zip(tet[u], tet[w], strict=True)]  # edge start corner within the cell
            d1, d2 = _edge_group_dims(resolution, d)[1:]
            strides.append((d1 * d2, d2, 1))
            const.append(offsets[EDGE_DIRS.index(d)] + (s[0] * d1 + s[1]) * d2 + s[2])
    strides_t = torch.tensor(strides, dtype=dtype).T  # [3, 36]
    return _lattice((resolution,) * 3, strides_t, torch.tensor(const, dtype=dtype)).reshape(-1, 6)


def tet_grid(resolution: int, bound: float = 1.0, index_dtype: torch.dtype | None = None) -> TetGrid:
    """Kuhn tetrahedral grid of [-bound, bound]^3 with resolution^3 cells (6 tets each), on the CPU.

    index_dtype: dtype of tets / edges / tet_edges; None picks int64 up to INT64_MAX_RESOLUTION, else int32.
    """
    if resolution < 1:
        raise ValueError(f"resolution must be >= 1, got {resolution}")
    if index_dtype is None:
        index_dtype = torch.int64 if resolution <= INT64_MAX_RESOLUTION else torch.int32
    if max(_n_edges(resolution), 6 * resolution ** 3) >= torch.iinfo(index_dtype).max:
        raise ValueError(f"resolution {resolution} is too large for {index_dtype} indices")
    return TetGrid(verts=_grid_verts(resolution, bound), tets=_grid_tets(resolution, index_dtype),
                   edges=_grid_edges(resolution, index_dtype),
                   tet_edges=_grid_tet_edges(resolution, index_dtype),
                   resolution=resolution, cell=2.0 * bound / resolution)
