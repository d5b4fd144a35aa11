import numpy as np
import pytest

from datasets.cameras import project
from datasets.capture.markers import MarkerScene
from datasets.capture.rig import make_rig
from datasets.store import Store
from pipeline.runner import preprocess
from tests.helpers import ingest_config, marker_capture, v2_to_v1


def _centroid(img: np.ndarray, u: float, v: float, r: int = 6) -> tuple[float, float]:
    w = img.astype(np.float64).sum(-1)
    x0, y0 = int(round(u)) - r, int(round(v)) - r
    patch = w[y0:y0 + 2 * r + 1, x0:x0 + 2 * r + 1]
    yy, xx = np.mgrid[y0:y0 + 2 * r + 1, x0:x0 + 2 * r + 1]
    return (patch * xx).sum() / patch.sum(), (patch * yy).sum() / patch.sum()


def test_a_known_3d_point_lands_where_it_was_drawn_after_crop_and_resize(tmp_path):
    """Markers drawn as Gaussians at their projections; after an off-centre padded crop and a
    non-integer resize, their centroids sit where the stored K and world_to_cam project them."""
    gx, gy = np.meshgrid(np.linspace(-0.07, 0.07, 3), np.linspace(-0.09, 0.09, 3))
    pts = np.stack([gx.ravel(), gy.ravel(), 0.03 * np.sin(7 * gx.ravel())], 1)
    scene = MarkerScene(pts, np.full((9, 3), 255, np.uint8))
    rig = make_rig(120, 176)
    marker_capture(str(tmp_path / "raw"), n_frames=3, width=120, height=176, rig=rig, scene=scene,
                   black_background=True, lossless=True, sigma=3.0)
    cfg = ingest_config(str(tmp_path / "s.zarr"), str(tmp_path / "raw"), resolution=100, crop="-10,20,140",
                        image_format="png", block_frames=2)
    summary = preprocess(cfg)
    assert summary.stages["ingest"].done == 2 and summary.item_failures == 0
    group = Store(cfg.store).clip("001/EXP-1-markers")
    K, E, rgb = group["cameras/K"][...], group["cameras/world_to_cam"][...], group["rgb"][...]
    errors = []
    x_lo, x_hi = 10 * 100 / 140, 130 * 100 / 140  # the source's columns in the output (padding outside)
    for t in range(3):
        world = scene.at(t, 3)
        for v in range(16):
            uv = project(world, K[v], E[v])
            gaps = np.linalg.norm(uv[:, None] - uv[None], axis=-1) + 1e9 * np.eye(len(uv))
            for (u, w), gap in zip(uv, gaps.min(1)):
                if x_lo + 9 <= u <= x_hi - 9 and 9 <= w <= 90 and gap > 16:  # whole, separate blobs
                    cu, cw = _centroid(rgb[t, v], u, w)
                    errors.append(np.hypot(cu - u, cw - w))
    errors = np.array(errors)
    assert len(errors) > 200
    print(f"{len(errors)} markers, max error {errors.max():.4f} px, median {np.median(errors):.4f} px")
    assert errors.max() < 0.1, errors.max()
    assert np.median(errors) < 0.03


def test_v1_and_v2_layouts_of_the_same_content_give_equal_arrays(tmp_path):
    marker_capture(str(tmp_path / "v2"), sequences=1, n_frames=5)
    v2_to_v1(str(tmp_path / "v2"), str(tmp_path / "v1"))
    stores = {}
    for kind in ("v1", "v2"):
        cfg = ingest_config(str(tmp_path / f"{kind}.zarr"), str(tmp_path / kind), dataset=f"nersemble-{kind}",
                            resolution=64, frame_stride=2, block_frames=2)
        assert preprocess(cfg).item_failures == 0
        stores[kind] = Store(cfg.store).clip("001/EXP-1-markers")
    a, b = stores["v1"], stores["v2"]
    assert a.attrs["frame_ids"] == b.attrs["frame_ids"] == [0, 2, 4]
    for name in ("rgb", "rgb_ok", "background", "background_ok", "cameras/K", "cameras/world_to_cam"):
        np.testing.assert_array_equal(a[name][...], b[name][...], err_msg=name)
    assert a["rgb_ok"][...].all() and a["background_ok"][...].all()
    assert a["rgb"][...].std() > 5  # real content, not an empty array


def test_monocular_video_gets_the_default_camera(tmp_path):
    from datasets.capture.writer import VideoWriter

    path = str(tmp_path / "talk.mp4")
    with VideoWriter(path, 80, 60, fps=25) as w:
        for t in range(9):
            w.write(np.full((60, 80, 3), 20 * t, np.uint8))
    cfg = ingest_config(str(tmp_path / "m.zarr"), path, dataset="video", resolution=48, block_frames=4)
    cfg.source.focal = 1.5
    summary = preprocess(cfg)
    assert summary.stages["ingest"].done == 3
    group = Store(cfg.store).clip("talk/video")
    K = group["cameras/K"][0]
    # 60x60 centred crop of an 80x60 frame, resized to 48: f = 1.5 * 80 * 48 / 60
    assert K[0, 0] == pytest.approx(96.0) and K[0, 2] == pytest.approx(23.5)
    np.testing.assert_array_equal(group["cameras/world_to_cam"][0], np.eye(4))
    means = group["rgb"][:, 0].reshape(9, -1).mean(1)
    np.testing.assert_allclose(means, 20 * np.arange(9), atol=3)
