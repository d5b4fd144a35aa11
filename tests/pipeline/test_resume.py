"""A run killed with SIGKILL (or stopped with Ctrl-C) mid-way resumes: the rerun redoes only the unfinished blocks, and the
store ends equal to an uninterrupted run's."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from datasets.store import Store
from pipeline.runner import preprocess
from tests.helpers import ingest_config, marker_capture

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _markers(store_path: str) -> dict[str, str]:
    out = {}
    for path in glob.glob(os.path.join(store_path, "_meta/markers/ingest/*/*/b*/zarr.json")):
        text = open(path).read()
        try:
            json.loads(text)
        except ValueError:
            continue  # cut short by the kill: counts as unfinished
        out[path] = text
    return out


@pytest.fixture(scope="module")
def capture_and_reference(tmp_path_factory):
    base = tmp_path_factory.mktemp("resume")
    raw = str(base / "raw capture")  # a path with a space, on purpose
    marker_capture(raw, participants=1, sequences=2, n_frames=32, width=224, height=320)
    reference = ingest_config(str(base / "reference.zarr"), raw, **OPTIONS)
    preprocess(reference)
    return raw, reference.store


OPTIONS = dict(resolution=256, block_frames=2)
TOTAL_BLOCKS = 32


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "Ctrl-C"])
def test_interrupted_run_then_rerun_equals_an_uninterrupted_run(tmp_path, capture_and_reference, sig):
    raw, reference = capture_and_reference
    killed = str(tmp_path / "killed.zarr")
    cmd = [sys.executable, "cli.py", "preprocess", "nersemble", "--root", raw, "--store", killed, "--workers", "1",
           "--resolution", "256", "--block-frames", "2"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while len(_markers(killed)) < 4 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "rerun the same command to resume" in err
    after_kill = _markers(killed)
    assert 4 <= len(after_kill) < TOTAL_BLOCKS, f"the signal did not land mid-run ({len(after_kill)} blocks finished)"
    time.sleep(1.0)  # the worker process must have died with its parent: nothing more gets written
    assert _markers(killed) == after_kill

    rerun = ingest_config(killed, raw, **OPTIONS)
    summary = preprocess(rerun).stages["ingest"]
    assert summary.already_done == len(after_kill)
    assert summary.done == TOTAL_BLOCKS - len(after_kill)
    finished = _markers(killed)
    assert len(finished) == TOTAL_BLOCKS
    assert all(finished[p] == text for p, text in after_kill.items())  # finished blocks were not redone

    for clip in ("001/EXP-1-markers", "001/EXP-2-markers"):
        a, b = Store(reference).clip(clip), Store(killed).clip(clip)
        for name in ("rgb", "rgb_ok", "background", "background_ok", "cameras/K", "cameras/world_to_cam"):
            np.testing.assert_array_equal(a[name][...], b[name][...], err_msg=f"{clip} {name}")


def test_matting_landmarks_and_crops_resume_after_sigkill(tmp_path):
    """Kill a run of the three later stages mid-way; the rerun finishes only what was left and the
    store equals an uninterrupted run's (trackers restart at every block, so blocks are independent)."""
    from datasets.synthetic import SynthConfig, write_synthetic_capture

    raw = str(tmp_path / "raw")
    write_synthetic_capture(raw, SynthConfig(participants=1, sequences=1, frames=8, width=280, height=400))
    stages = ["matting", "landmarks", "crops"]
    stores = {}
    for name in ("reference", "killed"):
        cfg = ingest_config(str(tmp_path / f"{name}.zarr"), raw, resolution=256, block_frames=1)
        preprocess(cfg)
        stores[name] = cfg
    cfg = stores["reference"]
    cfg.stages = stages
    preprocess(cfg)

    killed = stores["killed"].store
    cmd = [sys.executable, "cli.py", "preprocess", "nersemble", "--store", killed, "--stages", ",".join(stages),
           "--workers", "1"]

    def count() -> int:
        return sum(len(glob.glob(os.path.join(killed, f"_meta/markers/{s}/*/*/b*/zarr.json"))) for s in stages)

    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while count() < 6 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = count()
    assert 6 <= before < 24, f"the kill did not land mid-run ({before} of 24 blocks finished)"

    rerun = stores["killed"]
    rerun.stages = stages
    summary = preprocess(rerun)
    assert sum(s.already_done for s in summary.stages.values()) >= before - 1  # a marker may be cut short
    assert sum(s.done + s.already_done for s in summary.stages.values()) == 24
    a, b = Store(cfg.store).clip("001/EXP-1-jawopen"), Store(killed).clip("001/EXP-1-jawopen")
    for name in ("alpha", "lmk2d", "lmk_full", "face_box", "faces", "face_crop", "crop_transform", "face_mask",
                 "crop_ok"):
        np.testing.assert_array_equal(a[name][...], b[name][...], err_msg=name)
