"""The Kuhn tet grid (counts, volumes, conformity, edge tables) and differentiable marching tetrahedra
(closed, outward, accurate surfaces of analytic sdfs; gradients against finite differences; the
memory-aware end point path against the dense one)."""

from __future__ import annotations

import math

import pytest
import torch

from model.geometry.marching_tets import crossing_edges, crossing_vertices, marching_tets
from model.geometry.tet_grid import TET_EDGE_PAIRS, tet_grid

CENTRE = torch.tensor([0.05, -0.03, 0.02])
RADIUS = 0.6


def _sphere_sdf(x: torch.Tensor) -> torch.Tensor:
    return (x - CENTRE.to(x)).norm(dim=-1) - RADIUS


def _torus_sdf(x: torch.Tensor, big: float = 0.5, small: float = 0.2) -> torch.Tensor:
    ring = torch.stack([x[:, :2].norm(dim=-1) - big, x[:, 2]], -1)
    return ring.norm(dim=-1) - small


def _signed_volumes(verts: torch.Tensor, tets: torch.Tensor) -> torch.Tensor:
    v = verts.double()[tets]
    return torch.linalg.det(v[:, 1:] - v[:, :1]) / 6


def _check_closed(faces: torch.Tensor) -> int:
    """Asserts every edge is used by two faces in opposite directions; returns the undirected edge count."""
    directed = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    assert torch.unique(directed, dim=0).shape[0] == directed.shape[0], "a directed edge is used twice"
    undirected, counts = torch.unique(directed.sort(-1).values, dim=0, return_counts=True)
    assert (counts == 2).all(), "an edge is not shared by exactly two faces"
    return undirected.shape[0]


def _mesh_volume(verts: torch.Tensor, faces: torch.Tensor) -> float:
    a, b, c = verts.double()[faces].unbind(1)
    return float((a * torch.linalg.cross(b, c)).sum() / 6)


@pytest.mark.parametrize("resolution", [1, 3])
def test_tet_grid_counts_and_volumes(resolution):
    bound = 1.5
    grid = tet_grid(resolution, bound)
    r = resolution
    assert grid.verts.shape == ((r + 1) ** 3, 3) and grid.verts.dtype == torch.float32
    assert grid.tets.shape == (6 * r ** 3, 4) and grid.tets.dtype == torch.int64
    assert grid.edges.shape == (3 * r * (r + 1) ** 2 + 3 * r * r * (r + 1) + r ** 3, 2)
    assert grid.tet_edges.shape == (6 * r ** 3, 6)
    assert grid.cell == pytest.approx(2 * bound / r)
    assert grid.verts.min() == -bound and grid.verts.max() == bound
    vol = _signed_volumes(grid.verts, grid.tets)
    assert torch.allclose(vol, torch.full_like(vol, grid.cell ** 3 / 6)), "every tet positive, 1/6 of a cell"
    assert float(vol.sum()) == pytest.approx((2 * bound) ** 3)


def test_tet_grid_edge_tables():
    grid = tet_grid(3)
    pairs = grid.tets[:, torch.tensor(TET_EDGE_PAIRS)].sort(-1).values  # [T, 6, 2]
    assert torch.equal(grid.edges[grid.tet_edges], pairs)
    assert (grid.edges[:, 0] < grid.edges[:, 1]).all()
    assert torch.equal(torch.unique(grid.edges, dim=0), torch.unique(pairs.reshape(-1, 2), dim=0))


def test_tet_grid_is_conforming():
    bound = 1.0
    grid = tet_grid(4, bound)
    tri = grid.tets[:, [0, 1, 2, 1, 2, 3, 0, 2, 3, 0, 1, 3]].reshape(-1, 3).sort(-1).values  # [4T, 3]
    faces, counts = torch.unique(tri, dim=0, return_counts=True)
    x = grid.verts[faces]  # [F, 3 corners, 3]
    on_side = ((x.abs() == bound).all(1)) & (x == x[:, :1]).all(1)  # one coordinate shared at +-bound
    boundary = on_side.any(-1)
    assert (counts[boundary] == 1).all() and (counts[~boundary] == 2).all()
    assert int(boundary.sum()) == 6 * 2 * 4 ** 2  # two triangles per boundary square


def test_tet_grid_int32_storage_and_to():
    big, small = tet_grid(3), tet_grid(3, index_dtype=torch.int32).to("cpu")
    assert small.tets.dtype == small.edges.dtype == small.tet_edges.dtype == torch.int32
    for name in ("tets", "edges", "tet_edges"):
        assert torch.equal(getattr(big, name), getattr(small, name).long())
    a, b = marching_tets(big, _sphere_sdf(big.verts)), marching_tets(small, _sphere_sdf(small.verts))
    assert torch.equal(a.verts, b.verts) and torch.equal(a.faces, b.faces)


def test_sphere_is_closed_accurate_and_outward():
    grid = tet_grid(24)
    mesh = marching_tets(grid, _sphere_sdf(grid.verts))
    n_edges = _check_closed(mesh.faces)
    assert mesh.verts.shape[0] - n_edges + mesh.faces.shape[0] == 2, "Euler characteristic of a sphere"
    assert torch.unique(mesh.faces).shape[0] == mesh.verts.shape[0], "every vertex is used"
    err = ((mesh.verts - CENTRE).norm(dim=-1) - RADIUS).abs().max().item()
    print(f"sphere r=24: {mesh.verts.shape[0]} verts, {mesh.faces.shape[0]} faces, max radius error {err:.2e} "
          f"({err / grid.cell:.3f} cell)")
    assert err < grid.cell / 2
    volume = _mesh_volume(mesh.verts, mesh.faces)
    assert volume == pytest.approx(4 / 3 * math.pi * RADIUS ** 3, rel=0.03)
    a, b, c = mesh.verts[mesh.faces].unbind(1)
    outward = (torch.linalg.cross(b - a, c - a) * (a + b + c - 3 * CENTRE)).sum(-1)
    assert (outward > 0).all(), "every face normal points away from the centre"


def test_torus_has_genus_one():
    grid = tet_grid(24)
    mesh = marching_tets(grid, _torus_sdf(grid.verts))
    n_edges = _check_closed(mesh.faces)
    assert mesh.verts.shape[0] - n_edges + mesh.faces.shape[0] == 0
    assert _mesh_volume(mesh.verts, mesh.faces) == pytest.approx(2 * math.pi ** 2 * 0.5 * 0.2 ** 2, rel=0.05)


def _random_sdf(grid, seed=0):
    """float64 sdf of a blob with no value near zero, so small perturbations keep the topology."""
    gen = torch.Generator().manual_seed(seed)
    sdf = grid.verts.double().norm(dim=-1) - 0.7 + 0.2 * torch.rand(grid.verts.shape[0], generator=gen,
                                                                  dtype=torch.float64)
    return torch.where(sdf.abs() < 0.02, torch.full_like(sdf, 0.05), sdf)


def test_gradients_match_finite_differences():
    grid = tet_grid(3)
    grid.verts = grid.verts.double()
    sdf = _random_sdf(grid).requires_grad_()
    features = torch.randn(grid.verts.shape[0], 2, dtype=torch.float64, requires_grad=True)
    positions = grid.verts.clone().requires_grad_()

    def extract(s, f, x):
        grid.verts = x
        mesh = marching_tets(grid, s, f)
        return mesh.verts, mesh.features

    assert marching_tets(grid, sdf).faces.shape[0] > 0
    assert torch.autograd.gradcheck(extract, (sdf, features, positions), eps=1e-6, atol=1e-6)


def test_features_interpolate_like_positions():
    grid = tet_grid(8)
    mesh = marching_tets(grid, _sphere_sdf(grid.verts), features=grid.verts * 1)
    assert torch.equal(mesh.features, mesh.verts)
    assert torch.equal(mesh.verts, marching_tets(grid, _sphere_sdf(grid.verts)).verts)


def test_endpoint_path_equals_dense_path():
    grid = tet_grid(6)
    grid.verts = grid.verts.double()
    base, features = _random_sdf(grid, seed=1), torch.randn(grid.verts.shape[0], 3, dtype=torch.float64)

    dense_sdf, dense_feat = base.clone().requires_grad_(), features.clone().requires_grad_()
    dense = marching_tets(grid, dense_sdf, dense_feat)
    (dense.verts.square().sum() + dense.features.sin().sum()).backward()

    with torch.no_grad():
        nograd = base.clone()
    edge_ids = crossing_edges(nograd, grid)
    vert_ids, inverse = crossing_vertices(grid, edge_ids)
    assert torch.equal(vert_ids[inverse], grid.edges[edge_ids])
    assert vert_ids.shape[0] < grid.verts.shape[0]
    sparse_sdf, sparse_feat = base.clone().requires_grad_(), features.clone().requires_grad_()  # "the network"
    s, f = sparse_sdf[vert_ids], sparse_feat[vert_ids]  # evaluated only at the end points
    sparse = marching_tets(grid, nograd, edge_ids=edge_ids, edge_sdf=s[inverse], edge_features=f[inverse])
    (sparse.verts.square().sum() + sparse.features.sin().sum()).backward()

    assert torch.equal(sparse.verts, dense.verts) and torch.equal(sparse.features, dense.features)
    assert torch.equal(sparse.faces, dense.faces) and torch.equal(sparse.edge_ids, dense.edge_ids)
    assert torch.allclose(sparse_sdf.grad, dense_sdf.grad) and torch.allclose(sparse_feat.grad, dense_feat.grad)
    # without edge_ids the crossing edges are recomputed from the no-grad sdf
    again = marching_tets(grid, nograd, edge_sdf=s[inverse].detach(), edge_verts=grid.verts[grid.edges[edge_ids]])
    assert torch.equal(again.verts, dense.verts)


@pytest.mark.parametrize("offset", [5.0, -5.0])
def test_empty_mesh(offset):
    grid = tet_grid(4)
    sdf = (_sphere_sdf(grid.verts) + offset).requires_grad_()
    mesh = marching_tets(grid, sdf, features=torch.zeros(grid.verts.shape[0], 4))
    assert mesh.verts.shape == (0, 3) and mesh.faces.shape == (0, 3) and mesh.faces.dtype == torch.int64
    assert mesh.features.shape == (0, 4) and mesh.edge_ids.shape == (0,)
    assert crossing_edges(sdf, grid).shape == (0,)
    mesh.verts.sum().backward()  # an empty surface still backpropagates (zero gradients)
    assert (sdf.grad == 0).all()
