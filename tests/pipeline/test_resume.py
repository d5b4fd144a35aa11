"""A run killed with SIGKILL mid-way resumes: the rerun redoes only the unfinished blocks, and the
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


def test_sigkill_mid_run_then_rerun_equals_an_uninterrupted_run(tmp_path):
    raw = str(tmp_path / "raw capture")  # a path with a space, on purpose
    marker_capture(raw, participants=1, sequences=2, n_frames=32, width=224, height=320)
    options = dict(resolution=256, block_frames=2)
    reference = ingest_config(str(tmp_path / "reference.zarr"), raw, **options)
    preprocess(reference)

    killed = str(tmp_path / "killed.zarr")
    cmd = [sys.executable, "cli.py", "preprocess", "nersemble", "--root", raw, "--store", killed, "--workers", "1",
           "--resolution", "256", "--block-frames", "2"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(_markers(killed)) < 4 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    after_kill = _markers(killed)
    total = 32
    assert 4 <= len(after_kill) < total, f"kill did not land mid-run ({len(after_kill)} blocks finished)"
    time.sleep(1.0)  # the worker process must have died with its parent: nothing more gets written
    assert _markers(killed) == after_kill

    rerun = ingest_config(killed, raw, **options)
    summary = preprocess(rerun).stages["ingest"]
    assert summary.already_done == len(after_kill)
    assert summary.done == total - len(after_kill)
    finished = _markers(killed)
    assert len(finished) == total
    assert all(finished[p] == text for p, text in after_kill.items())  # finished blocks were not redone

    for clip in ("001/EXP-1-markers", "001/EXP-2-markers"):
        a, b = Store(reference.store).clip(clip), Store(killed).clip(clip)
        for name in ("rgb", "rgb_ok", "background", "background_ok", "cameras/K", "cameras/world_to_cam"):
            np.testing.assert_array_equal(a[name][...], b[name][...], err_msg=f"{clip} {name}")
