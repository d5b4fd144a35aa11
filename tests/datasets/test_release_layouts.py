"""The NeRSemble packagings as the releases distribute them: each written by the test in its exact file
names and formats, read into the same cameras and pixels; colour corrections against the test's own
implementation; a downscaled v2 against the full-size one; the failure cases end in a message or a ledger
item, never in a silent empty run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from datasets.cameras import project
from datasets.raw import Selection, read_raw
from datasets.raw.base import RawDataError
from datasets.raw.sources import FrameError, iter_frames
from datasets.store import Store
from pipeline.runner import preprocess
from tests.helpers import ingest_config
from tests.release_packagings import (
    SEQ,
    WRITERS,
    P,
    make_capture,
    write_v1_release,
    write_v2,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def capture():
    return make_capture()


@pytest.mark.parametrize("layout", sorted(WRITERS))
def test_every_packaging_reads_into_the_same_cameras_and_pixels(tmp_path, capture, layout):
    root = str(tmp_path / layout)
    WRITERS[layout](root, capture)
    plan = read_raw("nersemble", root, Selection())
    assert not plan.issues, plan.issues
    assert [c.key for c in plan.clips] == [f"{P}/{SEQ}"]
    clip = plan.clips[0]
    assert clip.layout == layout and plan.layouts == {P: layout}
    assert [v.serial for v in clip.views] == capture.serials
    for view in clip.views:
        np.testing.assert_allclose(view.K_array, capture.K[view.serial], atol=1e-9)
        np.testing.assert_allclose(view.world_to_cam_array, capture.E[view.serial], atol=1e-9)
        decoded = dict(iter_frames(view.source, clip.frame_ids))
        assert sorted(decoded) == list(clip.frame_ids) == [0, 1, 2, 3]
        for t, image in decoded.items():
            np.testing.assert_array_equal(image, capture.frames[view.serial][t])
        if layout in ("v2-benchmark", "v1-paper"):  # the release's own mattes come with the frames
            mattes = dict(iter_frames(view.alpha, clip.frame_ids))
            for t, image in mattes.items():
                np.testing.assert_array_equal(image[..., 0], capture.mattes[view.serial][t])
        else:
            assert view.alpha is None
        assert (view.background is not None) == (layout not in ("v2-benchmark", "v1-paper", "processed"))


def _ingest(root: str, store: str, stages=("ingest",), **ingest) -> Store:
    cfg = ingest_config(store, root, crop="center", resolution=32, image_format="png", **ingest)
    cfg.stages = list(stages)
    summary = preprocess(cfg)
    assert all(s.failed == 0 for s in summary.stages.values())
    return Store(store, mode="r")


def test_packagings_ingest_into_equal_arrays(tmp_path, capture):
    reference = None
    for layout in ("v2", "v1-release", "v1-paper", "processed"):
        root = str(tmp_path / layout)
        WRITERS[layout](root, capture)
        g = _ingest(root, str(tmp_path / f"{layout}.zarr")).clip(f"{P}/{SEQ}")
        arrays = {k: g[k][...] for k in ("rgb", "cameras/K", "cameras/world_to_cam")}
        assert (g.attrs["raw"]["layout"]) == layout
        if reference is None:
            reference = arrays
            continue
        for k, v in arrays.items():
            np.testing.assert_allclose(v, reference[k], atol=1e-4, err_msg=f"{layout}: {k}")


def _v1_affine(image: np.ndarray, A: np.ndarray) -> np.ndarray:
    """The v1 tools' formula, written out: image / 255 @ A[:3, :3] + A[:3, 3], clipped, * 255."""
    x = image.astype(np.float64) / 255
    out = np.einsum("hwc,cd->hwd", x, A[:3, :3]) + A[:3, 3]
    return np.round(np.clip(out, 0, 1) * 255).astype(np.uint8)


def _srgb_to_linear(x):
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(x):
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.maximum(x, 1e-12) ** (1 / 2.4) - 0.055)


def _v2_ccm10(image: np.ndarray, ccm: np.ndarray) -> np.ndarray:
    """Cheung 2004 with 10 terms (R, G, B, RG, RB, GB, R^2, G^2, B^2, 1) on linear RGB, written out."""
    lin = _srgb_to_linear(image.astype(np.float64) / 255)
    r, g, b = lin[..., 0], lin[..., 1], lin[..., 2]
    terms = np.stack([r, g, b, r * g, r * b, g * b, r * r, g * g, b * b, np.ones_like(r)], -1)
    out = _linear_to_srgb(terms @ ccm.T)
    return np.round(np.clip(out, 0, 1) * 255).astype(np.uint8)


def _corrected_copy(cap, correct):
    from dataclasses import replace

    frames = {s: [correct(s, f) for f in fs] for s, fs in cap.frames.items()}
    return replace(cap, frames=frames, plates={s: correct(s, p) for s, p in cap.plates.items()})


def test_v1_colour_correction_is_applied_as_the_release_tools_apply_it(tmp_path, capture):
    rng = np.random.default_rng(3)
    A = {}
    for i, s in enumerate(capture.serials):
        M = np.eye(4) if i == 0 else np.zeros((3, 4))  # the files' shape is not published: both forms read
        M[:3, :3] = np.eye(3) * 0.9 + rng.normal(0, 0.05, (3, 3))
        M[:3, 3] = rng.normal(0, 0.03, 3)
        A[s] = M
    root = str(tmp_path / "release")
    write_v1_release(root, capture)
    os.makedirs(os.path.join(root, "color_correction", P))
    for s, M in A.items():
        np.save(os.path.join(root, "color_correction", P, f"{s}.npy"), M)
    expected_root = str(tmp_path / "expected")
    write_v2(expected_root, _corrected_copy(capture, lambda s, img: _v1_affine(img, A[s])))
    got = _ingest(root, str(tmp_path / "got.zarr")).clip(f"{P}/{SEQ}")
    want = _ingest(expected_root, str(tmp_path / "want.zarr")).clip(f"{P}/{SEQ}")
    diff = np.abs(got["rgb"][...].astype(int) - want["rgb"][...].astype(int))
    assert diff.max() <= 1, diff.max()  # rounding only
    assert got.attrs["color_correction"]["views"][capture.serials[1]]["kind"] == "v1"
    assert not np.array_equal(got["rgb"][...], _ingest(root, str(tmp_path / "off.zarr"),
                                                       color_correction="off").clip(f"{P}/{SEQ}")["rgb"][...])


def test_v2_colour_calibration_is_applied_on_linear_rgb(tmp_path, capture):
    rng = np.random.default_rng(4)
    ccm = {s: np.concatenate([np.eye(3) * 0.95 + rng.normal(0, 0.03, (3, 3)), rng.normal(0, 0.02, (3, 6)),
                              rng.normal(0, 0.01, (3, 1))], 1) for s in capture.serials}
    root = str(tmp_path / "v2")
    write_v2(root, capture)
    with open(os.path.join(root, P, "calibration", "color_calibration.json"), "w") as f:
        json.dump({s: m.tolist() for s, m in ccm.items()}, f)
    expected_root = str(tmp_path / "expected")
    write_v2(expected_root, _corrected_copy(capture, lambda s, img: _v2_ccm10(img, ccm[s])))
    got = _ingest(root, str(tmp_path / "got.zarr")).clip(f"{P}/{SEQ}")
    want = _ingest(expected_root, str(tmp_path / "want.zarr")).clip(f"{P}/{SEQ}")
    assert np.abs(got["rgb"][...].astype(int) - want["rgb"][...].astype(int)).max() <= 1
    # asking for the other kind stores the frames uncorrected and says so per camera
    store = _ingest(root, str(tmp_path / "v1.zarr"), color_correction="v1")
    items = store.ledger("ingest", f"{P}/{SEQ}")
    assert len([i for i in items if "no v1 colour correction" in i.reason]) == len(capture.serials)


def test_a_downscaled_v2_gets_the_full_size_cameras_rescaled(tmp_path):
    full = make_capture(64, 96, n_frames=2)
    root_full, root_half, root_bad = (str(tmp_path / n) for n in ("full", "half", "bad"))
    write_v2(root_full, full)
    write_v2(root_half, full)  # then shrink its videos, keeping the calibration of the full size
    for s in full.serials:
        from tests.release_packagings import write_video

        path = os.path.join(root_half, P, "sequences", SEQ, "images", f"cam_{s}.mp4")
        write_video(path, [cv2.resize(f, (32, 48), interpolation=cv2.INTER_AREA) for f in full.frames[s]])
        bad = os.path.join(root_bad, P, "sequences", SEQ, "images", f"cam_{s}.mp4")
        os.makedirs(os.path.dirname(bad), exist_ok=True)
        write_video(bad, [f[:, :40] for f in full.frames[s]])  # cut, not scaled
    os.makedirs(os.path.join(root_bad, P, "calibration"))
    os.link(os.path.join(root_full, P, "calibration", "camera_params.json"),
            os.path.join(root_bad, P, "calibration", "camera_params.json"))
    a = read_raw("nersemble", root_full, Selection()).clips[0]
    b = read_raw("nersemble", root_half, Selection()).clips[0]
    points = np.random.default_rng(0).normal(0, 0.05, (50, 3))
    for va, vb in zip(a.views, b.views):
        assert (vb.width, vb.height) == (32, 48)
        uv_full = project(points, va.K_array, va.world_to_cam_array)
        uv_half = project(points, vb.K_array, vb.world_to_cam_array)
        # the same rays: a full-size pixel u is (u + 0.5) / 2 - 0.5 in the half-size frame
        assert np.abs(uv_half - ((uv_full + 0.5) * 0.5 - 0.5)).max() < 0.01
    assert any("rescaled by 1/2" in n for n in b.notes)
    refused = read_raw("nersemble", root_bad, Selection())
    reasons = [i.reason for items in refused.issues.values() for i in items]
    assert not refused.clips and sum("far from their centre" in r for r in reasons) == 2
    # the calibration saying its image size: a size that is not a downscale of it is refused by name
    with open(os.path.join(root_full, P, "calibration", "camera_params.json")) as f:
        data = json.load(f)
    os.remove(os.path.join(root_bad, P, "calibration", "camera_params.json"))
    with open(os.path.join(root_bad, P, "calibration", "camera_params.json"), "w") as f:
        json.dump({**data, "width": 64, "height": 96}, f)
    reasons = [i.reason for items in read_raw("nersemble", root_bad, Selection()).issues.values() for i in items]
    assert sum("not an exact downscale" in r for r in reasons) == 2


def test_released_mattes_are_the_matting_result(tmp_path, capture):
    root = str(tmp_path / "bench")
    WRITERS["v2-benchmark"](root, capture)
    g = _ingest(root, str(tmp_path / "s.zarr"), stages=("ingest", "matting")).clip(f"{P}/{SEQ}")
    alpha = g["alpha"][...]  # [T, V, 32, 32]: the centre square of the 32 x 48 frames
    for v, s in enumerate(capture.serials):
        for t in range(4):
            np.testing.assert_array_equal(alpha[t, v], capture.mattes[s][t][8:40])
    assert set(g["alpha"].attrs["methods"].values()) == {"released"}


def test_roots_that_yield_nothing_say_what_was_looked_for(tmp_path, capture):
    empty = tmp_path / "empty"
    (empty / "downloads").mkdir(parents=True)
    (empty / "notes.txt").write_text("x")
    with pytest.raises(RawDataError) as e:
        read_raw("nersemble", str(empty), Selection())
    assert "v1-release" in str(e.value) and "downloads/" in str(e.value) and "notes.txt" in str(e.value)
    run = subprocess.run([sys.executable, "cli.py", "preprocess", "nersemble", "--root", str(empty), "--store",
                          str(tmp_path / "x.zarr"), "--workers", "0"], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 2 and "looked for the layouts" in run.stderr and "Traceback" not in run.stderr
    assert not os.path.exists(tmp_path / "x.zarr")  # nothing was read: no empty store left behind
    # a participant folder that matches nothing, beside one that does: a ledger item, the other is read
    root = str(tmp_path / "mixed")
    write_v2(root, capture)
    os.makedirs(os.path.join(root, "018", "stuff"))
    plan = read_raw("nersemble", root, Selection())
    assert [c.key for c in plan.clips] == [f"{P}/{SEQ}"]
    assert "matches no NeRSemble layout" in plan.issues["018"][0].reason
    # a calibration for the wrong participant: every sequence says why
    os.remove(os.path.join(root, P, "calibration", "camera_params.json"))
    plan = read_raw("nersemble", root, Selection())
    assert not plan.clips and "no calibration file" in plan.issues[f"{P}/{SEQ}"][0].reason


def test_frames_missing_from_a_paper_subset_are_ledger_items(tmp_path, capture):
    root = str(tmp_path / "paper")
    WRITERS["v1-paper"](root, capture)
    os.remove(os.path.join(root, P, "sequences", SEQ, "frame_00002", "images-2x-73fps",
                           f"cam_{capture.serials[0]}.png"))
    clip = read_raw("nersemble", root, Selection()).clips[0]
    got = dict(iter_frames(clip.views[0].source, clip.frame_ids))
    assert isinstance(got[2], FrameError) and not isinstance(got[3], FrameError)


def test_released_flame_tracking_is_imported_and_reprojects_onto_the_drawn_landmarks(tmp_path):
    from dataclasses import replace

    from scipy.spatial.transform import Rotation

    from model.morphable.example_files import make_model_files
    from pipeline.config import apply_overrides

    cap = make_capture(96, 128, n_frames=4, n_views=3)
    model_path, lmk_path, truth = make_model_files(str(tmp_path / "flame"), "flame")
    rng = np.random.default_rng(5)
    T = 4
    track = {"shape": rng.normal(0, 0.3, (1, 300)), "expression": rng.normal(0, 0.5, (T, 100)),
             "rotation": rng.normal(0, 0.15, (T, 3)), "translation": rng.normal(0, 0.01, (T, 3)),
             "jaw": np.abs(rng.normal(0, 0.1, (T, 3))) * [1, 0.1, 0.1], "neck": rng.normal(0, 0.1, (T, 3)),
             "eyes": rng.normal(0, 0.05, (T, 6)), "scale": np.array([[1.04]])}
    track["rotation_matrices"] = Rotation.from_euler("XYZ", track["rotation"]).as_matrix()
    # the release tracks frames 0, 1 and 3 of the clip (and one past its end)
    rows = [0, 1, 3]
    released = {k: (v[rows + [3]] if v.shape[0] == T and k != "scale" else v) for k, v in track.items()}
    released["frames"] = np.array(rows + [9])
    root = str(tmp_path / "bench")
    WRITERS["v2-benchmark"](root, replace(cap, mattes=cap.mattes), released)
    store_path = str(tmp_path / "s.zarr")
    _ingest(root, store_path, stages=("ingest", "landmarks"))
    store = Store(store_path)
    g = store.clip(f"{P}/{SEQ}")
    assert g["tracking/ok"][...].tolist() == [True, True, False, True]
    # draw the landmarks the known head pose gives, into every view
    exp = np.concatenate([track["expression"], track["jaw"]], 1)
    local = truth.landmarks(np.repeat(track["shape"], T, 0), exp, track["neck"], track["eyes"])  # [T, 68, 3]
    R = Rotation.from_euler("XYZ", track["rotation"]).as_matrix()
    world = 1.04 * np.einsum("tij,tlj->tli", R, local) + track["translation"][:, None]
    K, E = g["cameras/K"][...].astype(np.float64), g["cameras/world_to_cam"][...].astype(np.float64)
    drawn = np.zeros(g["lmk2d"].shape, np.float32)
    for t in range(T):
        for v in range(len(cap.serials)):
            drawn[t, v, :, :2] = project(world[t], K[v], E[v])
            drawn[t, v, :, 2] = 1.0
    g["lmk2d"][...] = drawn
    cfg = ingest_config(store_path, root, crop="center", resolution=32, image_format="png")
    cfg.stages = ["fitting"]
    apply_overrides(cfg.stage_config("fitting"), backend="released", model_path=model_path, landmarks_path=lmk_path)
    summary = preprocess(cfg)
    assert summary.stages["fitting"].failed == 0
    assert g["fit/ok"][...].tolist() == [True, True, False, True]
    lmk3d = g["fit/lmk3d"][...].astype(np.float64)
    worst = 0.0
    for t in (0, 1, 3):
        for v in range(len(cap.serials)):
            worst = max(worst, float(np.abs(project(lmk3d[t], K[v], E[v]) - drawn[t, v, :, :2]).max()))
    print(f"released tracking: worst reprojection {worst:.4f} px")
    assert worst < 0.5
    assert np.nanmax(g["fit/residual"][[0, 1, 3]]) < 0.5
    # the head pose: the tracking's rotation composed with the neck's
    R_head = R @ Rotation.from_rotvec(track["neck"]).as_matrix()
    np.testing.assert_allclose(g["fit/pose"][[0, 1, 3], :3, :3], R_head[[0, 1, 3]], atol=1e-5)
    np.testing.assert_allclose(g["fit/scale"][[0, 1, 3]], 1.04, atol=1e-6)
    np.testing.assert_allclose(g["fit/expression"][0], exp[0], atol=1e-6)
    items = [i for i in store.ledger("fitting", f"{P}/{SEQ}")]
    assert [i.frame for i in items] == [2] and "no row for this frame" in items[0].reason


def test_stores_made_before_colour_correction_existed_keep_their_fingerprints():
    """`color_correction` at its default does what ingest did before the setting existed (nothing shipped
    was read then), so it stays out of the fingerprint; any other value is in it."""
    from pipeline.ingest import IngestConfig, IngestStage

    assert "color_correction" not in IngestStage(IngestConfig()).fingerprint_config()
    assert IngestStage(IngestConfig(color_correction="off")).fingerprint_config()["color_correction"] == "off"
