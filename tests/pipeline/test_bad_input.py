"""Bad raw input lands in the ledger with a clear reason while every good item finishes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from datasets.capture.writer import NersembleV1Writer, VideoWriter
from datasets.store import Store
from pipeline.runner import preprocess
from tests.helpers import ingest_config, marker_capture

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _truncate(path: str, fraction: float) -> None:
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(int(size * fraction))


def _edit_calibration(path: str, edit) -> None:
    with open(path) as f:
        data = json.load(f)
    edit(data)
    with open(path, "w") as f:
        json.dump(data, f)  # writes NaN / Infinity literals, as numpy-based tools do


def _bad_capture(root: str) -> dict:
    info = marker_capture(root, participants=3, sequences=3, n_frames=6, width=48, height=64)
    rig = info["001"]["rig"]
    seq = lambda p, s: os.path.join(root, p, "sequences", s)  # noqa: E731
    # 001/EXP-1: a video of a camera the calibration does not know
    with VideoWriter(os.path.join(seq("001", "EXP-1-markers"), "images", "cam_999999999.mp4"), 48, 64) as w:
        for _ in range(6):
            w.write(np.zeros((64, 48, 3), np.uint8))
    # 001/EXP-2: a truncated mp4 (index at the end: unreadable)
    _truncate(os.path.join(seq("001", "EXP-2-markers"), "images", f"cam_{rig[3].serial}.mp4"), 0.5)
    # 001/EXP-3: a truncated mp4 with its index in front: the first frames decode, the rest are missing
    frames_path = os.path.join(seq("001", "EXP-3-markers"), "images", f"cam_{rig[5].serial}.mp4")
    with VideoWriter(frames_path, 48, 64, gop=2, faststart=True) as w:
        for t in range(6):
            w.write(np.random.default_rng(t).integers(0, 255, (64, 48, 3), dtype=np.uint8))
    _truncate(frames_path, 0.5)
    # 001/EXP-4: a sequence with no frames; a sequence name that cannot become a path
    os.makedirs(os.path.join(seq("001", "EXP-4-empty"), "images"))
    os.makedirs(os.path.join(seq("001", "bad name"), "images"))
    # 001: a zero-byte background plate
    open(os.path.join(seq("001", "BACKGROUND"), f"image_{rig[1].serial}.jpg"), "wb").close()
    # 002: one camera with non-finite extrinsics; 003: non-finite shared intrinsics
    _edit_calibration(os.path.join(root, "002", "calibration", "camera_params.json"),
                      lambda d: d["world_2_cam"][rig[2].serial][0].__setitem__(3, float("nan")))
    _edit_calibration(os.path.join(root, "003", "calibration", "camera_params.json"),
                      lambda d: d["intrinsics"][0].__setitem__(0, float("inf")))
    # 004: a v1 participant with a zero-byte jpg frame
    v1 = NersembleV1Writer(root, images_dir="images", ext="jpg")
    v1.calibration("004", rig[0].K, {c.serial: c.world_to_cam for c in rig[:2]})
    for t in range(4):
        for c in rig[:2]:
            v1.frame("004", "EXP-1", t, c.serial, np.full((64, 48, 3), 100, np.uint8))
    open(v1.frame_path("004", "EXP-1", 2, rig[1].serial), "wb").close()
    return {"rig": rig}


def test_bad_input_is_recorded_and_good_items_finish(tmp_path):
    root = str(tmp_path / "raw data")
    rig = _bad_capture(root)["rig"]
    cfg = ingest_config(str(tmp_path / "s.zarr"), root, resolution=32, block_frames=2)
    summary = preprocess(cfg)
    assert summary.exit_code(strict=False) == 0 and summary.exit_code(strict=True) != 0
    assert summary.stages["ingest"].failed == 0
    store = Store(cfg.store)
    ledger = store.ledger()

    def reasons(clip: str, view: str | None = None) -> list[str]:
        return [i.reason for i in ledger if i.clip == clip and (view is None or i.view == view)]

    assert any("missing from the calibration" in r for r in reasons("001/EXP-1-markers", "999999999"))
    assert any("cannot read camera" in r for r in reasons("001/EXP-2-markers", rig[3].serial))
    truncated = [i for i in ledger if i.stage == "ingest" and i.clip == "001/EXP-3-markers" and i.view == rig[5].serial]
    assert truncated and all("truncated or corrupt" in i.reason or "decoding" in i.reason for i in truncated)
    assert 0 < len(truncated) < 6 and all(i.frame is not None for i in truncated)
    assert any("has no frames" in r for r in reasons("001/EXP-4-empty"))
    assert any("refused sequence 'bad name'" in r for r in reasons("001/bad name"))
    assert any("empty file (0 bytes)" in r for r in reasons("001/EXP-1-markers", rig[1].serial))
    assert any("non-finite" in r for r in reasons("002/EXP-1-markers", rig[2].serial))
    assert any("no usable camera" in r for r in reasons("003/EXP-1-markers"))
    zero = [i for i in ledger if i.clip == "004/EXP-1"]
    assert len(zero) == 1 and zero[0].frame == 2 and "empty file (0 bytes)" in zero[0].reason

    # every good item finished
    clips = store.clips()
    assert "003/EXP-1-markers" not in clips and "001/EXP-4-empty" not in clips
    g = store.clip("001/EXP-1-markers")
    assert g.attrs["views"] == [c.serial for c in rig] and g["rgb_ok"][...].all()
    assert g["background_ok"][...].sum() == 15
    g = store.clip("001/EXP-2-markers")
    assert rig[3].serial not in g.attrs["views"] and g["rgb_ok"][...].all() and len(g.attrs["views"]) == 15
    g = store.clip("001/EXP-3-markers")
    ok = g["rgb_ok"][...]
    v5 = g.attrs["views"].index(rig[5].serial)
    assert np.delete(ok, v5, axis=1).all() and ok[0, v5] and not ok[-1, v5]
    g = store.clip("002/EXP-1-markers")
    assert rig[2].serial not in g.attrs["views"] and g["rgb_ok"][...].all()
    ok = store.clip("004/EXP-1")["rgb_ok"][...]
    assert ok.sum() == 7 and not ok[2, 1]
    for clip in clips:
        markers = store.markers("ingest", clip)
        assert len(markers) == store.clip(clip)["rgb_ok"].shape[0] // 2 + store.clip(clip)["rgb_ok"].shape[0] % 2


def test_cli_exit_codes_and_report(tmp_path):
    root = str(tmp_path / "raw data")
    _bad_capture(root)
    store = str(tmp_path / "out store.zarr")
    base = [sys.executable, "cli.py", "preprocess", "nersemble", "--root", root, "--store", store, "--workers", "0",
            "--resolution", "32"]
    run = subprocess.run(base, cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "failed item(s) recorded" in run.stderr
    strict = subprocess.run(base + ["--strict"], cwd=REPO, capture_output=True, text=True)
    assert strict.returncode != 0
    report = subprocess.run([sys.executable, "cli.py", "report", store, "--json"], cwd=REPO, capture_output=True,
                            text=True, check=True)
    rows = json.loads(report.stdout)
    assert any("missing from the calibration" in r["reason"] for r in rows)
    refused = subprocess.run([sys.executable, "cli.py", "preprocess", "video", "--root",
                              os.path.join(root, "001", "sequences", "EXP-1-markers", "images",
                                           os.listdir(os.path.join(root, "001", "sequences", "EXP-1-markers", "images"))[0]),
                              "--subject", "../x", "--store", store, "--workers", "0"],
                             cwd=REPO, capture_output=True, text=True)
    assert refused.returncode == 2 and "no clips to process" in refused.stderr
    assert not os.path.exists(os.path.join(tmp_path, "x"))
    report = subprocess.run([sys.executable, "cli.py", "report", store, "--json"], cwd=REPO, capture_output=True,
                            text=True, check=True)
    assert any("refused subject '../x'" in r["reason"] for r in json.loads(report.stdout))
