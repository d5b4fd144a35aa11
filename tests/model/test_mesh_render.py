"""The mesh rasterizer against analytic values, an independent point-in-triangle reference and
finite differences."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from datasets.capture.rig import look_at, make_rig
from model.render.mesh import interpolate, project, rasterize, soft_silhouette


def _camera(width=64, height=48, f=60.0, position=(0.0, 0.0, 2.0)):
    K = torch.tensor([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1]], dtype=torch.float64)
    E = torch.tensor(look_at(np.array(position), np.zeros(3)), dtype=torch.float64)
    return K[None], E[None]


def _inside_reference(tri2d: np.ndarray, H: int, W: int) -> np.ndarray:
    """Pixel centres inside a 2D triangle, by the same-side test (independent of the rasterizer)."""
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    p = np.stack([xs, ys], -1)
    signs = []
    for i in range(3):
        a, b = tri2d[i], tri2d[(i + 1) % 3]
        signs.append((b[0] - a[0]) * (p[..., 1] - a[1]) - (b[1] - a[1]) * (p[..., 0] - a[0]))
    s = np.stack(signs)
    return (s >= 0).all(0) | (s <= 0).all(0)


def _icosphere(subdivisions=2):
    t = (1 + 5**0.5) / 2
    v = [(-1, t, 0), (1, t, 0), (-1, -t, 0), (1, -t, 0), (0, -1, t), (0, 1, t), (0, -1, -t), (0, 1, -t),
         (t, 0, -1), (t, 0, 1), (-t, 0, -1), (-t, 0, 1)]
    f = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4), (11, 10, 2), (10, 7, 6),
         (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9), (4, 9, 5), (2, 4, 11), (6, 2, 10),
         (8, 6, 7), (9, 8, 1)]
    verts = [np.array(p, float) / np.linalg.norm(p) for p in v]
    for _ in range(subdivisions):
        cache, new_f = {}, []

        def mid(a, b):
            key = (min(a, b), max(a, b))
            if key not in cache:
                m = verts[a] + verts[b]
                verts.append(m / np.linalg.norm(m))
                cache[key] = len(verts) - 1
            return cache[key]

        for a, b, c in f:
            ab, bc, ca = mid(a, b), mid(b, c), mid(c, a)
            new_f += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
        f = new_f
    return torch.tensor(np.array(verts)), torch.tensor(f)


def test_single_triangle_coverage_and_perspective_correct_attributes():
    K, E = _camera()
    # a triangle tilted in depth, so perspective correction matters
    verts = torch.tensor([[-0.6, -0.4, 0.3], [0.7, -0.3, -0.5], [0.0, 0.6, 0.1]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2]])
    rast = rasterize(verts, faces, K, E, 48, 64)
    xy, _ = project(verts, K, E)
    expected = _inside_reference(xy[0].numpy(), 48, 64)
    assert (rast.mask[0].numpy() == expected).all()
    # the interpolated world position is where the pixel's ray meets the triangle's plane
    pos = interpolate(verts, faces, rast)[0]
    ys, xs = np.nonzero(expected)
    cam_center = -E[0, :3, :3].T @ E[0, :3, 3]
    normal = torch.linalg.cross(verts[1] - verts[0], verts[2] - verts[0])
    for x, y in zip(xs[::7], ys[::7]):
        ray = E[0, :3, :3].T @ torch.linalg.solve(K[0], torch.tensor([x, y, 1.0], dtype=torch.float64))
        t = ((verts[0] - cam_center) @ normal) / (ray @ normal)
        np.testing.assert_allclose(pos[y, x].numpy(), (cam_center + t * ray).numpy(), atol=1e-9)
        depth = (E[0, :3, :3] @ (cam_center + t * ray) + E[0, :3, 3])[2]
        assert rast.depth[0, y, x].item() == pytest.approx(depth.item(), abs=1e-9)
    assert (interpolate(verts, faces, rast)[0][~rast.mask[0]] == 0).all()


def test_nearer_triangle_wins_whatever_the_face_order():
    K, E = _camera()
    square = lambda z: torch.tensor([[-0.5, -0.5, z], [0.5, -0.5, z], [0.0, 0.5, z]], dtype=torch.float64)  # noqa
    verts = torch.cat([square(-0.3), square(0.4) * torch.tensor([0.6, 0.6, 1.0], dtype=torch.float64)])
    for faces in (torch.tensor([[0, 1, 2], [3, 4, 5]]), torch.tensor([[3, 4, 5], [0, 1, 2]])):
        rast = rasterize(verts, faces, K, E, 48, 64)
        near_face = int((faces == 3).any(1).nonzero()[0])
        xy, _ = project(verts[3:], K, E)
        overlap = torch.from_numpy(_inside_reference(xy[0].numpy(), 48, 64))
        assert (rast.face_id[0][overlap] == near_face).all()
        assert rast.depth[0][overlap].max() < 2.0 - 0.39


def test_closed_mesh_silhouette_matches_a_point_in_triangle_reference_in_every_camera():
    verts, faces = _icosphere(2)
    verts = verts * torch.tensor([0.09, 0.12, 0.1], dtype=torch.float64)
    rig = make_rig(56, 80, distance=1.0, view_height=0.4)
    K = torch.tensor(np.stack([c.K for c in rig]))
    E = torch.tensor(np.stack([c.world_to_cam for c in rig]))
    rast = rasterize(verts, faces, K, E, 80, 56)
    xy, _ = project(verts, K, E)
    for c in range(len(rig)):
        ref = np.zeros((80, 56), bool)
        for f in faces.numpy():
            ref |= _inside_reference(xy[c, f].numpy(), 80, 56)
        assert (rast.mask[c].numpy() == ref).all()
        assert ref.sum() > 300
    # chunked fragment lists give the same picture
    small = rasterize(verts, faces, K, E, 80, 56, max_fragments=500)
    assert torch.equal(small.face_id, rast.face_id)
    soft = soft_silhouette(verts, faces, K, E, 80, 56, sigma=0.5)
    assert torch.equal(soft > 0.5, rast.mask)


def test_soft_silhouette_follows_the_distance_to_the_contour():
    K, E = _camera(32, 24, f=40.0)
    # a big triangle whose right edge is the vertical line x = 10.3 px in the image
    x_edge = (10.3 - 15.5) / 40.0 * 2.0
    verts = torch.tensor([[x_edge, -2.0, 0.0], [x_edge, 2.0, 0.0], [-3.0, 0.0, 0.0]], dtype=torch.float64)
    for faces in (torch.tensor([[0, 1, 2]]), torch.tensor([[0, 2, 1]])):  # either winding: a border edge
        soft = soft_silhouette(verts, faces, K, E, 24, 32, sigma=0.5)[0]
        assert soft[12, 10].item() == pytest.approx(1 / (1 + math.exp(-0.3 / 0.5)), abs=1e-9)
        assert soft[12, 11].item() == pytest.approx(1 / (1 + math.exp(0.7 / 0.5)), abs=1e-9)
        assert soft[12, 0].item() == 1.0 and soft[12, 20].item() == 0.0


def test_a_mask_loss_moves_the_mesh_onto_the_target_silhouette():
    verts, faces = _icosphere(2)
    verts = verts.float() * 0.08
    rig = make_rig(48, 64)[::4]
    K = torch.tensor(np.stack([c.K for c in rig])).float()
    E = torch.tensor(np.stack([c.world_to_cam for c in rig])).float()
    target = rasterize(verts + torch.tensor([0.03, -0.02, 0.01]), faces, K, E, 64, 48).mask.float()
    shift = torch.zeros(3, requires_grad=True)
    opt = torch.optim.Adam([shift], lr=3e-3)
    for _ in range(60):
        opt.zero_grad()
        loss = ((soft_silhouette(verts + shift, faces, K, E, 64, 48, sigma=0.7) - target) ** 2).mean()
        loss.backward()
        opt.step()
    np.testing.assert_allclose(shift.detach().numpy(), [0.03, -0.02, 0.01], atol=4e-3)


def test_gradients_of_interpolated_attributes_and_silhouette_match_finite_differences():
    K, E = _camera(24, 20, f=30.0)
    verts = torch.tensor([[-0.5, -0.4, 0.2], [0.6, -0.3, -0.3], [0.0, 0.5, 0.1], [0.7, 0.6, 0.0]],
                         dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
    attrs = torch.randn(4, 5, dtype=torch.float64)
    weights = torch.randn(1, 20, 24, 5, dtype=torch.float64)
    with torch.no_grad():
        interior = rasterize(verts, faces, K, E, 20, 24)

    def image_loss(v, a):
        rast = rasterize(v, faces, K, E, 20, 24)
        assert torch.equal(rast.face_id, interior.face_id)  # visibility unchanged by the small steps
        return (interpolate(a, faces, rast) * weights).sum()

    assert torch.autograd.gradcheck(lambda a: image_loss(verts, a), (attrs.clone().requires_grad_(),))
    assert torch.autograd.gradcheck(lambda v: image_loss(v, attrs), (verts.clone().requires_grad_(),), eps=1e-7,
                                    atol=1e-5)
    mask_weights = torch.randn(1, 20, 24, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda v: (soft_silhouette(v, faces, K, E, 20, 24, sigma=0.8) * mask_weights).sum(),
        (verts.clone().requires_grad_(),), eps=1e-6, atol=1e-5)


def test_batched_cameras_equal_separate_calls_and_per_camera_vertices():
    verts, faces = _icosphere(1)
    verts = verts.float() * 0.1
    rig = make_rig(40, 56)[:3]
    K = torch.tensor(np.stack([c.K for c in rig])).float()
    E = torch.tensor(np.stack([c.world_to_cam for c in rig])).float()
    batched = rasterize(verts, faces, K, E, 56, 40)
    for c in range(3):
        single = rasterize(verts, faces, K[c:c + 1], E[c:c + 1], 56, 40)
        assert torch.equal(single.face_id[0], batched.face_id[c])
    moved = torch.stack([verts, verts + 0.02, verts - 0.02])
    per_cam = rasterize(moved, faces, K, E, 56, 40)
    assert torch.equal(per_cam.face_id[0], batched.face_id[0]) and not torch.equal(per_cam.face_id[1],
                                                                                    batched.face_id[1])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_backends_agree_with_the_torch_path():
    pytest.importorskip("nvdiffrast.torch")
    verts, faces = _icosphere(3)
    verts = (verts * 0.1).float().cuda()
    rig = make_rig(256, 384)
    K = torch.tensor(np.stack([c.K for c in rig])).float().cuda()
    E = torch.tensor(np.stack([c.world_to_cam for c in rig])).float().cuda()
    a = rasterize(verts, faces.cuda(), K, E, 384, 256, backend="torch")
    b = rasterize(verts, faces.cuda(), K, E, 384, 256, backend="nvdiffrast")
    assert (a.face_id == b.face_id).float().mean() > 0.999
    attrs = torch.randn(verts.shape[0], 32, device="cuda")
    same = a.mask & b.mask & (a.face_id == b.face_id)
    diff = (interpolate(attrs, faces.cuda(), a) - interpolate(attrs, faces.cuda(), b))[same]
    assert diff.abs().max() < 1e-4
