"""Differentiable marching tetrahedra: the mesh extraction step of Deep Marching Tetrahedra (Shen et al. 2021).

Given signed distances on the vertices of a TetGrid (inside: sdf < 0, outside: sdf >= 0), every grid edge
whose end points lie on different sides gets one surface vertex, the zero crossing of the linear
interpolation along the edge:

    v = (x_a * s_b - x_b * s_a) / (s_b - s_a)  =  x_a + t (x_b - x_a),  t = s_a / (s_a - s_b)

(computed in the second form).

Per-vertex features are interpolated with the same weights. Vertices are shared by all tets using the
edge, so the mesh is closed wherever the surface stays inside the grid. A tet with 1 or 3 inside corners
gives one triangle, one with 2 inside corners a quad (i0,o0), (i0,o1), (i1,o1), (i1,o0) split into two
triangles. Triangles face outwards: the normal (b - a) x (c - a) points towards sdf >= 0. The case table
(16 sign patterns) is built programmatically and its orientation decided once on a positively oriented
reference tet (normal against mean(outside corners) - mean(inside corners)); at run time the triangles of
a tet whose detached signed volume is negative are flipped. This equals the per-triangle geometric test
for every non-degenerate triangle and stays consistent for (near) zero-area ones, where a computed normal
is noise.

The topology (which edges cross, which tets give which triangles) is piecewise constant, so it is decided
without gradients; the vertex positions and features are differentiable (torch autograd) with respect to
the sdf values, the features and the grid positions.

Dense use, small grids (everything with grad on all P grid vertices):

    mesh = marching_tets(grid, sdf, features)                 # sdf [P], features [P, D]

Memory-aware use, big grids (only the end points of crossing edges are evaluated with grad):

    with torch.no_grad():
        sdf = evaluate_in_chunks(net, grid.verts)             # [P], no graph
    edge_ids = crossing_edges(sdf, grid)                      # [K] crossing edges
    vert_ids, inverse = crossing_vertices(grid, edge_ids)     # [U] unique end points, [K, 2] into them
    s, f = net(grid.verts[vert_ids])                          # with grad: [U], [U, D]
    mesh = marching_tets(grid, sdf, edge_ids=edge_ids, edge_sdf=s[inverse], edge_features=f[inverse])

With edge_sdf given, the full sdf only decides the topology and the differentiable values come from
edge_sdf ([K, 2]) / edge_features ([K, 2, D]) / edge_verts ([K, 2, 3], e.g. deformed grid positions),
row k being the two end points (grid.edges order: smaller vertex index first) of edge edge_ids[k]. They
should equal the no-grad values; the interpolation weight is clamped to [0, 1] so small disagreements
near zero cannot throw vertices off their edge.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

from model.geometry.tet_grid import TET_EDGE_PAIRS, TetGrid

CHUNK = 1 << 22  # edges / tets handled at once when scanning the whole grid


@dataclass
class TetMesh:
    verts: Tensor  # [N, 3] surface vertices, differentiable w.r.t. sdf and grid positions
    faces: Tensor  # [F, 3] int64, counter-clockwise seen from outside (normal points to sdf >= 0)
    features: Tensor | None  # [N, D] per-vertex features interpolated like the positions, or None
    edge_ids: Tensor  # [N] int64 index into grid.edges of the edge each vertex lies on (sorted)


def crossing_edges(sdf: Tensor, grid: TetGrid) -> Tensor:
    """[K] int64 sorted ids of the grid edges whose end points lie on different sides (inside: sdf < 0).

    sdf: [P] values at the grid vertices (any grad is ignored)."""
    inside = (sdf.detach() < 0).to(torch.uint8)  # [P]
    ids = [torch.zeros(0, dtype=torch.int64, device=sdf.device)]
    for start in range(0, grid.edges.shape[0], CHUNK):
        ends = inside[grid.edges[start:start + CHUNK]].view(torch.int16)[:, 0]  # [n] both end flags in one word
        ids.append(torch.nonzero((ends != 0) & (ends != 0x0101))[:, 0] + start)
    return torch.cat(ids)


def crossing_vertices(grid: TetGrid, edge_ids: Tensor) -> tuple[Tensor, Tensor]:
    """The grid vertices to evaluate with grad for the memory-aware path.

    edge_ids: [K] from crossing_edges -> (vert_ids [U] int64 unique grid vertex ids,
    inverse [K, 2] int64 with grid.edges[edge_ids] == vert_ids[inverse])."""
    ends = grid.edges[edge_ids].long()  # [K, 2]
    vert_ids, inverse = torch.unique(ends, return_inverse=True)
    return vert_ids, inverse.reshape(ends.shape)


def crossing_tets(sdf: Tensor, grid: TetGrid) -> tuple[Tensor, Tensor]:
    """Tets with corners on both sides -> (tet_ids [M] int64, codes [M] int64 sign pattern, bit i = corner i inside).

    sdf: [P] values at the grid vertices (any grad is ignored)."""
    inside = (sdf.detach() < 0).to(torch.uint8)  # [P]
    empty = torch.zeros(0, dtype=torch.int64, device=sdf.device)
    ids, flags = [empty], [torch.zeros((0, 4), dtype=torch.uint8, device=sdf.device)]
    for start in range(0, grid.tets.shape[0], CHUNK):
        corners = inside[grid.tets[start:start + CHUNK]]  # [n, 4]
        word = corners.view(torch.int32)[:, 0]  # [n] the 4 corner flags in one word: all 0 or all 1 -> no crossing
        hit = torch.nonzero((word != 0) & (word != 0x01010101))[:, 0]
        ids.append(hit + start)
        flags.append(corners[hit])
    bits = torch.tensor([1, 2, 4, 8], dtype=torch.int64, device=sdf.device)
    return torch.cat(ids), (torch.cat(flags).long() * bits).sum(-1)


def _local_edge(u: int, w: int) -> int:
    return TET_EDGE_PAIRS.index((min(u, w), max(u, w)))


def _case_triangles(code: int) -> list[list[tuple[int, int]]]:
    """Triangles of one sign pattern as corner pairs (inside, outside), before orientation."""
    inside = [c for c in range(4) if code >> c & 1]
    outside = [c for c in range(4) if not code >> c & 1]
    if len(inside) == 1:
        return [[(inside[0], o) for o in outside]]
    if len(inside) == 3:
        return [[(i, outside[0]) for i in inside]]
    if len(inside) == 2:
        (i0, i1), (o0, o1) = inside, outside
        quad = [(i0, o0), (i0, o1), (i1, o1), (i1, o0)]
        return [[quad[0], quad[1], quad[2]], [quad[0], quad[2], quad[3]]]
    return []


def _outward(tri: list[tuple[int, int]], corners: Tensor) -> bool:
    """Whether the triangle through the midpoints of its edges faces away from the inside corners."""
    a, b, c = (corners[i] / 2 + corners[o] / 2 for i, o in tri)
    inside = sorted({i for i, _ in tri})
    outside = sorted({o for _, o in tri})
    direction = corners[outside].mean(0) - corners[inside].mean(0)
    return float(torch.dot(torch.linalg.cross(b - a, c - a), direction)) > 0


@lru_cache(maxsize=None)
def case_table() -> tuple[Tensor, Tensor]:
    """(triangles [16, 2, 3] int64 local edge ids (TET_EDGE_PAIRS) per sign pattern, counts [16] int64).

    Triangles are oriented outwards for a positively oriented tet (det(v1 - v0, v2 - v0, v3 - v0) > 0),
    decided on the reference tet 0, e_x, e_y, e_z; unused slots are 0."""
    corners = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.float64)
    table = torch.zeros((16, 2, 3), dtype=torch.int64)
    counts = torch.zeros(16, dtype=torch.int64)
    for code in range(16):
        tris = _case_triangles(code)
        counts[code] = len(tris)
        for t, tri in enumerate(tris):
            if not _outward(tri, corners):
                tri = [tri[0], tri[2], tri[1]]
            table[code, t] = torch.tensor([_local_edge(i, o) for i, o in tri])
    return table, counts


def _tet_orientation(grid: TetGrid, tet_ids: Tensor) -> Tensor:
    """[M] bool, whether each tet is positively oriented (detached grid positions)."""
    v = grid.verts.detach()[grid.tets[tet_ids].long()].double()  # [M, 4, 3]
    return torch.linalg.det(v[:, 1:] - v[:, :1]) > 0


def _face_edges(grid: TetGrid, tet_ids: Tensor, codes: Tensor) -> Tensor:
    """[F, 3] int64 grid edge ids of the oriented triangles of the crossing tets."""
    table, counts = (t.to(codes.device) for t in case_table())
    local = table[codes]  # [M, 2, 3]
    tet_edges = grid.tet_edges[tet_ids].long()  # [M, 6]
    tri = torch.gather(tet_edges, 1, local.reshape(len(codes), 6)).reshape(len(codes), 2, 3)  # [M, 2, 3]
    flip = ~_tet_orientation(grid, tet_ids)[:, None].expand(-1, 2)  # [M, 2]
    tri = torch.where(flip[..., None], tri[..., [0, 2, 1]], tri)
    keep = torch.arange(2, device=codes.device) < counts[codes][:, None]  # [M, 2]
    return tri[keep]


def _interpolate(edge_sdf: Tensor, values: list[Tensor | None]) -> list[Tensor | None]:
    """Zero crossings along edges: edge_sdf [K, 2], each value [K, 2, C] -> [K, C] (None stays None)."""
    s_a, s_b = edge_sdf.unbind(-1)  # [K]
    t = (s_a / (s_a - s_b)).clamp(0.0, 1.0)[:, None]  # [K, 1] weight of end point b
    return [None if x is None else x[:, 0] + t * (x[:, 1] - x[:, 0]) for x in values]


def marching_tets(grid: TetGrid, sdf: Tensor, features: Tensor | None = None, *, edge_ids: Tensor | None = None,
                  edge_sdf: Tensor | None = None, edge_features: Tensor | None = None,
                  edge_verts: Tensor | None = None) -> TetMesh:
    """Extract the sdf = 0 surface of a tet grid as a triangle mesh.

    grid: on the device of sdf. sdf: [P] values at the grid vertices (inside < 0); with grad unless edge_sdf
    is given. features: [P, D] per grid vertex, or None.
    edge_ids: [K] crossing_edges(sdf, grid) when already computed.
    edge_sdf: [K, 2] differentiable sdf at the end points of edges edge_ids (memory-aware path);
    edge_features: [K, 2, D] features there (instead of features); edge_verts: [K, 2, 3] positions
    there (default: grid.verts). See the module docstring.
    """
    if edge_ids is None:
        edge_ids = crossing_edges(sdf, grid)
    ends = grid.edges[edge_ids].long()  # [K, 2]
    if edge_sdf is None:
        edge_sdf = sdf[ends]
    if edge_features is None and features is not None:
        edge_features = features[ends]
    if edge_verts is None:
        edge_verts = grid.verts[ends]
    verts, feats = _interpolate(edge_sdf, [edge_verts, edge_features])
    tet_ids, codes = crossing_tets(sdf, grid)
    faces = torch.searchsorted(edge_ids, _face_edges(grid, tet_ids, codes))
    return TetMesh(verts=verts, faces=faces, features=feats, edge_ids=edge_ids)
