"""The head-scan datasets (NPHM, FaceVerse): small scans written by the tests in each release's layout and
formats (tests/scan_releases.py), read, rendered from the fixed rig into the store, and checked against
independent references: the masks against a point-in-triangle test of the same mesh, the colours against
the surface points they show (projected with the stored cameras), the stored views against the
documented rig."""

from __future__ import annotations

import os

import numpy as np
import pytest

from datasets.cameras import project
from datasets.raw import ScanOptions, Selection, read_raw
from datasets.raw.base import RawDataError
from datasets.scans.rig import DISTANCE_M, FOCAL_SIDES, PITCHES
from datasets.store import Store
from pipeline.runner import preprocess
from tests.helpers import ingest_config
from tests.scan_releases import decode_ramp, ramp_head, write_faceverse, write_nphm

RES, VIEWS = 64, 10
NPHM_CENTRE, NPHM_SCALE = (0.0, 0.15, 0.0), 4.0  # NPHM: FLAME metres x 4
FV_CENTRE, FV_SCALE = (12.0, 1650.0, -30.0), 1000.0  # FaceVerse: units of the files (here millimetres)


def _release(root: str, flavour: str, identities: int = 1, expressions: int = 2) -> dict:
    """Ramp heads in the flavour's layout: NPHM vertex-coloured PLY, FaceVerse textured OBJ."""
    textured = flavour == "faceverse"
    centre, scale = (NPHM_CENTRE, NPHM_SCALE) if flavour == "nphm" else (FV_CENTRE, FV_SCALE)
    scans, spans = {}, {}
    for i in range(identities):
        for e in range(expressions):
            scan, span = ramp_head(centre, scale * (1 + 0.03 * e), textured, seed=10 * i + e)
            key = (i + 1, e + (0 if flavour == "nphm" else 1))
            scans[key], spans[key] = scan, span
    (write_nphm if flavour == "nphm" else write_faceverse)(root, scans)
    return {"scans": scans, "spans": spans, "textured": textured}


def _store(tmp_path, flavour: str, views: int = VIEWS, stages=("ingest", "matting")):
    root = str(tmp_path / flavour)
    made = _release(root, flavour)
    cfg = ingest_config(str(tmp_path / f"{flavour}.zarr"), root, dataset=flavour, resolution=RES, image_format="png")
    cfg.stages = list(stages)
    cfg.source.scan_views = views
    summary = preprocess(cfg)
    assert summary.exit_code(strict=False) == 0
    return Store(cfg.store, mode="r"), made


def _inside_reference(verts: np.ndarray, faces: np.ndarray, K: np.ndarray, E: np.ndarray, size: int) -> np.ndarray:
    """bool [size, size]: pixel centres inside the projection of any triangle (either winding), float64."""
    xy = project(verts, K, E)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    out = np.zeros((size, size), bool)
    for a, b, c in xy[faces]:
        x0, x1 = int(np.ceil(min(a[0], b[0], c[0]))), int(np.floor(max(a[0], b[0], c[0])))
        y0, y1 = int(np.ceil(min(a[1], b[1], c[1]))), int(np.floor(max(a[1], b[1], c[1])))
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, size - 1), min(y1, size - 1)
        if x1 < x0 or y1 < y0:
            continue
        px, py = xs[y0:y1 + 1, x0:x1 + 1], ys[y0:y1 + 1, x0:x1 + 1]
        e0 = (b[0] - a[0]) * (py - a[1]) - (b[1] - a[1]) * (px - a[0])
        e1 = (c[0] - b[0]) * (py - b[1]) - (c[1] - b[1]) * (px - b[0])
        e2 = (a[0] - c[0]) * (py - c[1]) - (a[1] - c[1]) * (px - c[0])
        inside = ((e0 >= 0) & (e1 >= 0) & (e2 >= 0)) | ((e0 <= 0) & (e1 <= 0) & (e2 <= 0))
        out[y0:y1 + 1, x0:x1 + 1] |= inside
    return out


def test_the_layouts_read_into_one_clip_per_identity(tmp_path):
    _release(str(tmp_path / "nphm"), "nphm", identities=2, expressions=3)
    os.makedirs(tmp_path / "nphm" / "002" / "007")  # an expression folder without its scan.ply
    plan = read_raw("nphm", str(tmp_path / "nphm"), Selection(), scan=ScanOptions(RES, VIEWS))
    assert [c.key for c in plan.clips] == ["001/scans", "002/scans"]
    assert [c.frame_ids for c in plan.clips] == [(0, 1, 2), (0, 1, 2)]
    assert [i.reason for i in plan.issues["002/scans"]] == [f"expression folder {tmp_path}/nphm/002/007 has no scan.ply"]
    clip = plan.clips[0]
    assert clip.dataset == "nphm" and len(clip.views) == VIEWS
    assert all(v.alpha is not None and (v.width, v.height) == (RES, RES) for v in clip.views)
    assert any("FLAME" in n for n in clip.notes)
    _release(str(tmp_path / "fv"), "faceverse", identities=2, expressions=2)
    plan = read_raw("scans", str(tmp_path / "fv"), Selection(include=("002",)), scan=ScanOptions(RES, VIEWS))
    assert [c.key for c in plan.clips] == ["002/scans"] and plan.layouts == {"002": "faceverse"}
    assert plan.clips[0].frame_ids == (1, 2) and plan.unselected == 1
    with pytest.raises(RawDataError, match="scan.ply"):
        read_raw("nphm", str(tmp_path / "fv"), Selection())
    with pytest.raises(RawDataError, match="no head scans"):
        read_raw("scans", str(tmp_path / "nphm" / "002" / "007"), Selection())


@pytest.mark.parametrize("flavour", ["nphm", "faceverse"])
def test_stored_masks_equal_a_point_in_triangle_reference(tmp_path, flavour):
    store, made = _store(tmp_path, flavour)
    g = store.clip("001/scans")
    K, E = g["cameras/K"][:], g["cameras/world_to_cam"][:]
    alpha = g["alpha"][:]
    assert g["alpha"].attrs["methods"] == {s: "released" for s in g.attrs["views"]}  # nothing was matted
    assert g["rgb_ok"][:].all()
    for t, key in enumerate(sorted(made["scans"])):
        scan = made["scans"][key]
        for v in range(len(K)):
            reference = _inside_reference(scan.verts, scan.faces, K[v].astype(np.float64), E[v].astype(np.float64), RES)
            assert reference.any()
            np.testing.assert_array_equal(alpha[t, v] > 127, reference, err_msg=f"frame {t} view {v}")
            assert (g["rgb"][t, v][~reference] == 0).all()  # black background


@pytest.mark.parametrize("flavour", ["nphm", "faceverse"])
def test_a_surface_point_projects_to_where_its_colour_was_rendered(tmp_path, flavour):
    """Each rendered colour names the (x, y) of the surface point it shows (a ramp over the head); that
    point, lifted onto the scan's front surface and projected with the stored cameras of the frontal
    views, lands on the pixel that shows it, to a fraction of a pixel."""
    store, made = _store(tmp_path, flavour)
    g = store.clip("001/scans")
    K, E = g["cameras/K"][:].astype(np.float64), g["cameras/world_to_cam"][:].astype(np.float64)
    rgb, alpha = g["rgb"][:], g["alpha"][:]
    frontal = [0, 2, 4]  # yaw 0 on the pitch -30, 0 and +30 rings
    errors = []
    for t, key in enumerate(sorted(made["scans"])):
        scan, span = made["scans"][key], made["spans"][key]
        a, b, c = (scan.verts[scan.faces[:, i]] for i in range(3))
        front = np.cross(b - a, c - a)[:, 2] > 0  # triangles facing +z (the face's way)
        tri = np.stack([a, b, c], 1)[front]  # [F', 3, 3]
        for v in frontal:
            covered = alpha[t, v] == 255
            inner = covered.copy()
            for dy in (-2, -1, 0, 1, 2):
                for dx in (-2, -1, 0, 1, 2):
                    inner &= np.roll(np.roll(covered, dy, 0), dx, 1)
            ys, xs = np.nonzero(inner)
            xy = decode_ramp(rgb[t, v][ys, xs], span, made["textured"])  # [M, 2] x, y of the shown point
            points = _lift(xy, tri)
            ok = np.isfinite(points).all(1)
            assert ok.mean() > 0.9
            uv = project(points[ok], K[v], E[v])
            errors.append(np.hypot(uv[:, 0] - xs[ok], uv[:, 1] - ys[ok]))
    errors = np.concatenate(errors)
    assert len(errors) > 200
    assert np.median(errors) < 0.25 and np.percentile(errors, 95) < 0.6, (np.median(errors), errors.max())


def _lift(xy: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """[M, 2] (x, y) -> [M, 3] the point of the front surface (triangles [F, 3, 3]) above it (NaN: none)."""
    out = np.full((len(xy), 3), np.nan)
    p0, p1, p2 = tri[:, 0, :2], tri[:, 1, :2], tri[:, 2, :2]
    det = (p1[:, 0] - p0[:, 0]) * (p2[:, 1] - p0[:, 1]) - (p1[:, 1] - p0[:, 1]) * (p2[:, 0] - p0[:, 0])
    for m, q in enumerate(xy):
        w1 = ((q[0] - p0[:, 0]) * (p2[:, 1] - p0[:, 1]) - (q[1] - p0[:, 1]) * (p2[:, 0] - p0[:, 0])) / det
        w2 = ((p1[:, 0] - p0[:, 0]) * (q[1] - p0[:, 1]) - (p1[:, 1] - p0[:, 1]) * (q[0] - p0[:, 0])) / det
        w0 = 1 - w1 - w2
        hit = np.nonzero((w0 >= 0) & (w1 >= 0) & (w2 >= 0))[0]
        if len(hit):
            f = hit[np.argmax((w0[hit, None] * tri[hit, 0] + w1[hit, None] * tri[hit, 1]
                               + w2[hit, None] * tri[hit, 2])[:, 2])]  # the one nearest the front
            out[m] = w0[f] * tri[f, 0] + w1[f] * tri[f, 1] + w2[f] * tri[f, 2]
    return out


def test_the_stored_views_cover_the_sphere_as_documented(tmp_path):
    """80 cameras: 5 pitch rings (-30..+30 by 15 degrees) of 16 yaws covering the full circle every 22.5
    degrees, odd rings turned by half a step, all at the rig distance looking at the head centre, upright,
    with the documented focal."""
    root = str(tmp_path / "nphm")
    _release(root, "nphm", expressions=1)
    cfg = ingest_config(str(tmp_path / "n.zarr"), root, dataset="nphm", resolution=32)
    preprocess(cfg)
    g = Store(cfg.store, mode="r").clip("001/scans")
    K, E = g["cameras/K"][:].astype(np.float64), g["cameras/world_to_cam"][:].astype(np.float64)
    assert len(K) == 80 and g["rgb_ok"][:].all()
    np.testing.assert_allclose(K[:, 0, 0], FOCAL_SIDES * 32, rtol=1e-6)
    np.testing.assert_allclose(K[:, :2, 2], 15.5, atol=1e-5)
    target = np.array(NPHM_CENTRE)
    R, t = E[:, :3, :3], E[:, :3, 3]
    centres = -np.einsum("cji,cj->ci", R, t)  # camera centres, scan coordinates
    offset = centres - target
    np.testing.assert_allclose(np.linalg.norm(offset, axis=1), DISTANCE_M * NPHM_SCALE, rtol=1e-5)
    np.testing.assert_allclose(project(target[None], K[0], E[0])[0], [15.5, 15.5], atol=1e-3)
    for k, e in zip(K, E):  # every optical axis through the head centre
        np.testing.assert_allclose(project(target[None], k, e)[0], [15.5, 15.5], atol=1e-3)
    assert (R[:, 1, 1] < 0).all()  # image down is the head's down: upright views
    pitch = np.degrees(np.arcsin(offset[:, 1] / np.linalg.norm(offset, axis=1)))
    yaw = np.degrees(np.arctan2(offset[:, 0], offset[:, 2])) % 360
    rings = np.round(pitch).astype(int)
    assert sorted(set(rings)) == sorted(int(p) for p in PITCHES)
    for r, p in enumerate(PITCHES):
        ring = np.sort(yaw[rings == int(p)])
        assert len(ring) == 16
        gaps = np.diff(np.concatenate([ring, ring[:1] + 360]))
        np.testing.assert_allclose(gaps, 22.5, atol=1e-3)
        phase = (ring - (11.25 if r % 2 else 0.0)) % 22.5
        assert np.minimum(phase, 22.5 - phase).max() < 1e-3
    assert g["released_alpha"][:].reshape(80, -1).any(1).all()  # the head is seen by every camera


STAGES = ["ingest", "matting", "landmarks", "fitting", "crops", "synthesis"]


def test_scans_run_every_stage_mix_with_a_capture_in_shards_and_train(tmp_path):
    """FaceVerse-layout scans of two synthetic identities (textured OBJ, a real portrait's face), rendered
    from a reduced rig, go through the default stages unchanged; build-shards mixes them with a NeRSemble
    capture's clip; stage 1 trains on the shard set."""
    from datasets.config import override
    from datasets.scans.synthetic import synthetic_head_scans
    from datasets.shards.build import BuildOptions, build_shards
    from datasets.synthetic import SynthConfig, write_synthetic_capture
    from model.guiding.config import preset
    from model.train.config import TrainConfig
    from model.train.guiding_trainer import GuidingTrainer
    from tests.model.test_guiding_trainer import SMALL

    res = 160
    write_faceverse(str(tmp_path / "fv"), synthetic_head_scans(2, 2, textured=True, scale=1000.0, offset=(5, 1600, 0)))
    scans = ingest_config(str(tmp_path / "fv.zarr"), str(tmp_path / "fv"), dataset="faceverse", resolution=res,
                          block_frames=2)
    scans.stages, scans.source.scan_views = STAGES, 12
    summary = preprocess(scans)
    assert summary.exit_code(strict=False) == 0
    assert all(summary.stages[s].done == 2 and summary.stages[s].failed == 0 for s in STAGES)
    store = Store(scans.store, mode="r")
    assert [s["dataset"] for s in store.attrs["sources"]] == ["faceverse"]
    assert "FaceVerse" in store.attrs["sources"][0]["licence"]
    for key in ("001/scans", "002/scans"):
        g = store.clip(key)
        assert g["fit/ok"][:].all()
        assert (g["lmk2d"][..., 2].mean(-1) > 0.3).sum(1).min() >= 4  # the frontal views have their landmarks
        assert g["synth"].shape[1] == 2
    capture_root = str(tmp_path / "capture")
    write_synthetic_capture(capture_root, SynthConfig(participants=1, sequences=1, frames=2))
    capture = ingest_config(str(tmp_path / "capture.zarr"), capture_root, resolution=res, block_frames=2)
    capture.stages = STAGES
    capture.stage_config("synthesis").source_store = scans.store  # the scans' identities lend their faces
    assert preprocess(capture).exit_code(strict=False) == 0
    shards = str(tmp_path / "shards")
    result = build_shards(BuildOptions([scans.store, capture.store], shards, shard_rows=2, val_subjects="0",
                                       holdout_views="1"))
    identities = sorted(c["identity"] for c in result.manifest.doc["clips"])
    assert identities == ["faceverse/001", "faceverse/002", "nersemble/001"], identities
    assert result.manifest.layout["views"] == 16 and result.manifest.layout["resolution"] == res
    train = TrainConfig(shards=shards, out=str(tmp_path / "run"), steps=3, eval_every=0, checkpoint_every=0,
                        image_every=0, eval_frames=2, threads=1)
    trainer = GuidingTrainer(train, override(preset("tiny"), SMALL), log=False)
    trainer.fit()
    assert [h["step"] for h in trainer.history] == [1, 2, 3]
    assert all(np.isfinite(h["total"]) for h in trainer.history)
