"""Tests for model/render/cameras.py (look-at, orbits, intrinsics) and model/render/video.py (GIF/MP4, grids)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from datasets.image_grid import labelled_grid
from model.render.cameras import fov_to_fit, intrinsics_for, look_at, orbit_cameras
from model.render.video import read_gif_frames, read_mp4_frames, write_animation


def project(
    K: torch.Tensor,  # [3,3]
    world_to_cam: torch.Tensor,  # [4,4]
    points: torch.Tensor,  # [N,3]
) -> tuple[torch.Tensor, torch.Tensor]:  # [N,2] pixels, [N] depth
    cam = points.double() @ world_to_cam[:3, :3].double().T + world_to_cam[:3, 3].double()
    uv = cam @ K.double().T
    return uv[:, :2] / uv[:, 2:3], cam[:, 2]


def cam_points(world_to_cam: torch.Tensor, points: torch.Tensor) -> torch.Tensor:  # [4,4], [N,3] -> [N,3]
    return points.double() @ world_to_cam[:3, :3].double().T + world_to_cam[:3, 3].double()


def eye_of(world_to_cam: torch.Tensor) -> torch.Tensor:  # [...,4,4] -> [...,3]
    R = world_to_cam[..., :3, :3].double()
    t = world_to_cam[..., :3, 3].double()
    return -(R.transpose(-1, -2) @ t[..., None])[..., 0]


# ------------------------------------------------------------------------------------------- cameras


@pytest.mark.parametrize(
    "eye,target,up",
    [
        ((0.0, 0.0, 2.0), (0.0, 0.0, 0.0), (0.0, 1.0, 0.0)),  # OpenGL-like y-up world
        ((1.0, -2.0, 0.5), (0.1, 0.2, 0.3), (0.0, 0.0, 1.0)),  # z-up world, oblique view
        ((0.3, 0.1, -1.5), (0.0, 0.0, 0.0), (0.0, -1.0, 0.0)),  # y-down world (OpenCV-style capture)
    ],
)
def test_look_at_projection(eye, target, up):
    w2c = look_at(eye, target, up)
    assert w2c.shape == (4, 4) and w2c.dtype == torch.float32
    R = w2c[:3, :3].double()
    assert torch.allclose(R @ R.T, torch.eye(3, dtype=torch.float64), atol=1e-6)
    assert abs(torch.linalg.det(R).item() - 1.0) < 1e-6
    assert torch.equal(w2c[3], torch.tensor([0.0, 0.0, 0.0, 1.0]))

    size = 101
    K = intrinsics_for(size, 40.0)
    centre = (size - 1) / 2
    tgt = torch.tensor(target, dtype=torch.float64)
    up_t = torch.tensor(up, dtype=torch.float64)
    uv, depth = project(K, w2c, tgt[None])
    assert depth.item() > 0
    assert torch.allclose(uv, torch.tensor([[centre, centre]], dtype=torch.float64), atol=1e-3)

    # eye itself is the camera origin
    assert torch.allclose(cam_points(w2c, torch.tensor(eye)[None]), torch.zeros(1, 3, dtype=torch.float64), atol=1e-5)

    # up appears upward: smaller pixel y
    uv_up, _ = project(K, w2c, (tgt + 0.1 * up_t)[None])
    assert uv_up[0, 1] < centre - 1.0
    assert abs(uv_up[0, 0] - centre) < 1e-3  # (up is perpendicular to this view direction up to a tilt)

    # camera's right (world direction of camera +x = first row of R) appears to the right
    right = R[0]
    forward = tgt - torch.tensor(eye, dtype=torch.float64)
    # right is perpendicular to both the view direction and up
    assert abs(torch.dot(right, forward).item()) < 1e-5 and abs(torch.dot(right, up_t).item()) < 1e-5
    uv_right, _ = project(K, w2c, (tgt + 0.1 * right)[None])
    assert uv_right[0, 0] > centre + 1.0 and abs(uv_right[0, 1] - centre) < 1e-3


def test_look_at_handedness_y_up_world():
    # Looking down -z from +z in a y-up world: world +x must appear to the right, world +y upward.
    w2c = look_at((0.0, 0.0, 3.0), (0.0, 0.0, 0.0), (0.0, 1.0, 0.0))
    K = intrinsics_for(64, 50.0)
    uv, _ = project(K, w2c, torch.tensor([[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]]))
    c = 31.5
    assert uv[0, 0] > c and abs(uv[0, 1] - c) < 1e-6
    assert uv[1, 1] < c and abs(uv[1, 0] - c) < 1e-6


def test_look_at_degenerate_up_and_batch():
    w2c = look_at((0.0, 2.0, 0.0), (0.0, 0.0, 0.0), (0.0, 1.0, 0.0))  # up parallel to view: fallback
    R = w2c[:3, :3].double()
    assert torch.isfinite(w2c).all()
    assert torch.allclose(R @ R.T, torch.eye(3, dtype=torch.float64), atol=1e-6)
    eyes = torch.tensor([[0.0, 0.0, 2.0], [2.0, 0.0, 0.0]])
    batch = look_at(eyes, torch.zeros(2, 3), torch.tensor([0.0, 1.0, 0.0]), dtype=torch.float64)
    assert batch.shape == (2, 4, 4) and batch.dtype == torch.float64
    assert torch.allclose(batch[1], look_at(eyes[1], (0, 0, 0), (0, 1, 0), dtype=torch.float64))


def test_orbit_cameras_full_turn():
    centre = torch.tensor([0.1, -0.2, 0.3])
    up = torch.tensor([0.0, -1.0, 0.0])  # y-down world
    front = torch.tensor([0.0, 0.0, -1.0])
    radius, n = 1.7, 12
    w2c = orbit_cameras(n, centre, radius, up, front)
    assert w2c.shape == (n, 4, 4) and w2c.dtype == torch.float32
    eyes = eye_of(w2c)  # [n,3]
    c64 = centre.double()
    dist = torch.linalg.norm(eyes - c64, dim=-1)
    assert torch.allclose(dist, torch.full((n,), radius, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(eyes[0], c64 + radius * front.double(), atol=1e-5)
    # all in the plane through the centre perpendicular to up
    assert torch.allclose((eyes - c64) @ up.double(), torch.zeros(n, dtype=torch.float64), atol=1e-5)
    for i in range(n):
        p = cam_points(w2c[i], centre[None])[0]
        assert p[2] > 0 and abs(p[0]) < 1e-5 and abs(p[1]) < 1e-5
        assert torch.allclose(p[2], torch.tensor(radius, dtype=torch.float64), atol=1e-5)
        # up appears upward in every image
        p_up = cam_points(w2c[i], (centre + 0.1 * up)[None])[0]
        assert p_up[1] < -0.05
    # evenly spaced and distinct: consecutive chords equal, including the wrap-around; none repeated
    chords = torch.linalg.norm(eyes - eyes.roll(-1, dims=0), dim=-1)
    expected = 2 * radius * math.sin(math.pi / n)
    assert torch.allclose(chords, torch.full((n,), expected, dtype=torch.float64), atol=1e-5)
    dists = torch.cdist(eyes, eyes) + torch.eye(n, dtype=torch.float64) * 10
    assert dists.min() > 0.5 * expected


def test_orbit_cameras_direction_and_sweep():
    up = torch.tensor([0.0, 0.0, 1.0])
    front = torch.tensor([1.0, 0.0, 0.0])
    # quarter turns counter-clockwise about up: front -> up x front = +y
    eyes = eye_of(orbit_cameras(4, (0, 0, 0), 1.0, up, front))
    assert torch.allclose(eyes[1], torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64), atol=1e-6)

    # partial sweep: -45 .. +45 inclusive, symmetric about front
    eyes = eye_of(orbit_cameras(3, (0, 0, 0), 2.0, up, front, sweep_deg=90.0))
    s = 2.0 * math.sqrt(0.5)
    expected = torch.tensor([[s, -s, 0.0], [2.0, 0.0, 0.0], [s, s, 0.0]], dtype=torch.float64)
    assert torch.allclose(eyes, expected, atol=1e-5)

    # start_deg overrides the first angle (spacing kept)
    eyes = eye_of(orbit_cameras(4, (0, 0, 0), 1.0, up, front, start_deg=90.0))
    assert torch.allclose(eyes[0], torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64), atol=1e-6)
    assert torch.allclose(eyes[1], torch.tensor([-1.0, 0.0, 0.0], dtype=torch.float64), atol=1e-6)


def test_orbit_cameras_elevation():
    centre = torch.tensor([0.0, 1.0, 0.0])
    up = torch.tensor([0.0, 1.0, 0.0])
    front = torch.tensor([0.0, 0.0, 1.0])
    w2c = orbit_cameras(6, centre, 2.0, up, front, elevation_deg=30.0)
    eyes = eye_of(w2c)
    heights = (eyes - centre.double()) @ up.double()
    assert torch.allclose(heights, torch.full((6,), 2.0 * math.sin(math.radians(30.0)), dtype=torch.float64), atol=1e-5)
    assert torch.allclose(torch.linalg.norm(eyes - centre.double(), dim=-1), torch.full((6,), 2.0, dtype=torch.float64))
    for i in range(6):
        p = cam_points(w2c[i], centre[None])[0]
        assert p[2] > 0 and abs(p[0]) < 1e-5 and abs(p[1]) < 1e-5


@pytest.mark.parametrize("radius,distance,size", [(0.15, 0.6, 128), (1.0, 1.5, 65), (0.2, 10.0, 256)])
def test_intrinsics_and_fov_to_fit(radius, distance, size):
    K = intrinsics_for(size, 45.0)
    assert K.shape == (3, 3)
    assert K[0, 2].item() == K[1, 2].item() == (size - 1) / 2
    assert abs(K[0, 0].item() - size / 2 / math.tan(math.radians(22.5))) < 1e-3

    fov = fov_to_fit(radius, distance, margin=1.1)
    assert 0 < fov < 180
    K = intrinsics_for(size, fov)
    w2c = look_at((0.0, 0.0, -distance), (0.0, 0.0, 0.0), (0.0, -1.0, 0.0))
    # dense sample of the sphere surface (silhouette included)
    g = torch.Generator().manual_seed(0)
    pts = torch.randn(20000, 3, generator=g, dtype=torch.float64)
    pts = radius * pts / torch.linalg.norm(pts, dim=-1, keepdim=True)
    uv, depth = project(K, w2c, pts)
    assert (depth > 0).all()
    assert (uv >= -0.5).all() and (uv <= size - 0.5).all()
    # and it fills most of the image (margin 1.1 -> the silhouette reaches ~1/1.1 of the half size)
    half_extent = (uv - (size - 1) / 2).abs().max().item()
    assert half_extent > 0.85 * size / 2
    # margin 1 touches the edge exactly
    K1 = intrinsics_for(size, fov_to_fit(radius, distance, margin=1.0))
    uv1, _ = project(K1, w2c, pts)
    assert abs((uv1 - (size - 1) / 2).abs().max().item() - size / 2) < 0.01 * size


def test_fov_to_fit_rejects_inside():
    with pytest.raises(ValueError):
        fov_to_fit(1.0, 0.5)


# --------------------------------------------------------------------------------------------- video

BLOCK_COLOURS = np.array(
    [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 255, 255], [0, 0, 0]], dtype=np.uint8
)


def block_frames(n: int, h: int = 48, w: int = 64) -> np.ndarray:  # [n,h,w,3]
    """Frames of four flat colour quadrants, the colours rotating from frame to frame (all frames distinct)."""
    frames = np.zeros((n, h, w, 3), dtype=np.uint8)
    for t in range(n):
        for q, (ys, xs) in enumerate(
            [(slice(0, h // 2), slice(0, w // 2)), (slice(0, h // 2), slice(w // 2, w)),
             (slice(h // 2, h), slice(0, w // 2)), (slice(h // 2, h), slice(w // 2, w))]
        ):
            frames[t, ys, xs] = BLOCK_COLOURS[(t + q) % len(BLOCK_COLOURS)]
    return frames


def smooth_frames(n: int, h: int = 64, w: int = 80) -> np.ndarray:  # [n,h,w,3]
    """Smooth, slowly moving gradients (easy to compress)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    frames = []
    for t in range(n):
        r = 128 + 100 * np.sin(2 * np.pi * (x / w + t / n))
        g = 128 + 100 * np.cos(2 * np.pi * (y / h))
        b = 64 + 120 * (x + y) / (h + w)
        frames.append(np.stack([r, g, b], axis=-1))
    return np.clip(np.round(np.stack(frames)), 0, 255).astype(np.uint8)


def test_gif_round_trip(tmp_path):
    frames = block_frames(6)
    path = tmp_path / "sub" / "dir" / "anim.gif"  # parent does not exist yet
    out = write_animation(str(path), list(frames), fps=10)
    assert out == str(path) and path.exists()
    back = read_gif_frames(out)
    assert back.shape == frames.shape and back.dtype == np.uint8
    # flat blocks: compare away from the quadrant borders, allowing for palette quantisation
    h, w = frames.shape[1:3]
    for t in range(len(frames)):
        for ys, xs in [(h // 4, w // 4), (h // 4, 3 * w // 4), (3 * h // 4, w // 4), (3 * h // 4, 3 * w // 4)]:
            diff = np.abs(back[t, ys, xs].astype(int) - frames[t, ys, xs].astype(int)).max()
            assert diff <= 8
    from PIL import Image

    with Image.open(out) as im:
        assert im.info.get("loop") == 0
        assert im.info.get("duration") == 100


def test_mp4_round_trip(tmp_path):
    frames = smooth_frames(10)
    path = tmp_path / "anim.mp4"
    out = write_animation(path, frames, fps=25)  # ndarray input, PathLike path
    assert out == str(path)
    back = read_mp4_frames(out)
    assert back.shape == frames.shape and back.dtype == np.uint8
    err = np.abs(back.astype(np.float64) - frames.astype(np.float64)).mean()
    assert err < 8.0, err


def test_mp4_odd_size_is_padded(tmp_path):
    frames = smooth_frames(5, h=33, w=47)
    back = read_mp4_frames(write_animation(tmp_path / "odd.mp4", frames, fps=12))
    assert back.shape == (5, 34, 48, 3)
    err = np.abs(back[:, :33, :47].astype(np.float64) - frames.astype(np.float64)).mean()
    assert err < 8.0, err


def test_write_animation_rejects(tmp_path):
    frames = block_frames(2)
    with pytest.raises(ValueError):
        write_animation(tmp_path / "anim.avi", frames)
    with pytest.raises(ValueError):
        write_animation(tmp_path / "anim.gif", [])
    with pytest.raises(ValueError):
        write_animation(tmp_path / "anim.mp4", np.zeros((0, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError):
        write_animation(tmp_path / "anim.gif", frames.astype(np.float32))


def tile(colour, h=20, w=30) -> np.ndarray:  # [h,w,3]
    return np.broadcast_to(np.array(colour, dtype=np.uint8), (h, w, 3)).copy()


def test_labelled_grid_layout_without_labels():
    h, w, pad = 20, 30, 4
    a, b, c = tile((255, 0, 0)), tile((0, 255, 0)), tile((0, 0, 255))
    grid = labelled_grid([[a, b], [c, None]], pad=pad)
    assert grid.shape == (pad + 2 * (h + pad), pad + 2 * (w + pad), 3) and grid.dtype == np.uint8

    def centre_of(r, col):
        return grid[pad + r * (h + pad) + h // 2, pad + col * (w + pad) + w // 2]

    assert (centre_of(0, 0) == (255, 0, 0)).all()
    assert (centre_of(0, 1) == (0, 255, 0)).all()
    assert (centre_of(1, 0) == (0, 0, 255)).all()
    assert (centre_of(1, 1) == 0).all()  # None -> black
    assert (grid[: pad] == 0).all() and (grid[:, :pad] == 0).all()  # black margins
    # tiles exactly where the docstring says: corners inside, the pixel just outside is margin
    assert (grid[pad, pad] == (255, 0, 0)).all() and (grid[pad + h - 1, pad + w - 1] == (255, 0, 0)).all()
    assert (grid[pad + h, pad] == 0).all() and (grid[pad, pad + w] == 0).all()


def test_labelled_grid_with_labels_adds_margins():
    h, w, pad = 20, 30, 4
    images = [[tile((255, 0, 0)), tile((0, 255, 0))], [None, tile((0, 0, 255))], [tile((9, 9, 9))]]
    plain = labelled_grid(images, pad=pad)
    grid = labelled_grid(images, row_labels=["ground truth", "fit", "x"], col_labels=["front", "side"], pad=pad)
    assert grid.shape[0] > plain.shape[0] and grid.shape[1] > plain.shape[1]
    label_h = grid.shape[0] - plain.shape[0]
    label_w = grid.shape[1] - plain.shape[1]
    assert label_h > pad and label_w > pad
    assert grid.shape == (label_h + pad + 3 * (h + pad), label_w + pad + 2 * (w + pad), 3)

    def centre_of(r, col):
        return grid[label_h + pad + r * (h + pad) + h // 2, label_w + pad + col * (w + pad) + w // 2]

    assert (centre_of(0, 0) == (255, 0, 0)).all()
    assert (centre_of(0, 1) == (0, 255, 0)).all()
    assert (centre_of(1, 0) == 0).all()
    assert (centre_of(1, 1) == (0, 0, 255)).all()
    assert (centre_of(2, 0) == 9).all()
    assert (centre_of(2, 1) == 0).all()  # short row padded with black
    # the labels are drawn (white) in the margins only
    top, left = grid[:label_h], grid[label_h:, :label_w]
    assert (top == 255).all(axis=-1).any() and (left == 255).all(axis=-1).any()
    # labels leave the tiles intact: each tile region equals the plain grid's
    assert np.array_equal(grid[label_h:, label_w:], plain)

    only_cols = labelled_grid(images, col_labels=["a", "b"], pad=pad)
    assert only_cols.shape[1] == plain.shape[1] and only_cols.shape[0] > plain.shape[0]
    with pytest.raises(ValueError):
        labelled_grid(images, row_labels=["one"])
    with pytest.raises(ValueError):
        labelled_grid([[tile((1, 1, 1)), tile((1, 1, 1), h=10)]])
