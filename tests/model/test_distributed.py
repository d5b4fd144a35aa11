"""Training under torchrun (two CPU processes, gloo; model/train/distributed.py) against one process with
the same global batch: the same losses and parameters after k steps for both stages; a run killed under
torchrun and resumed gives the uninterrupted run's losses; a two-process checkpoint resumes in one process.

Float tolerance: the two processes' gradients are the one-process gradients to float32 precision (the
sums are split differently, ~1e-5 relative on the largest sums); Adam's first steps normalise each
gradient element, so a near-zero element's rounding can move its parameter by up to the learning rate.
Losses are therefore compared to 1e-3 relative, and parameters by their mean and worst difference.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from model.train import checkpoint
from tests.model.ddp_worker import trainer
from tests.model.test_gaussian_trainer import head_shards, stage1  # noqa: F401 - the stage tests' fixtures (pytest finds them here)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKER = os.path.join(ROOT, "tests", "model", "ddp_worker.py")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _command(stage: str, shards: str, out: str, steps: int, init: str = "", procs: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs), "--master_addr",
            "127.0.0.1", "--master_port", str(_port()), WORKER, stage, shards, out, str(steps)] + ([init] if init else [])


def _env(**extra) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT, **extra}


def _torchrun(stage: str, shards: str, out: str, steps: int, init: str = "", procs: int = 2) -> list[dict]:
    done = subprocess.run(_command(stage, shards, out, steps, init, procs), env=_env(), capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    files = sorted(f for f in os.listdir(out) if f.startswith("history-"))
    with open(os.path.join(out, files[-1])) as f:
        result = json.load(f)
    assert result["world"] == procs
    return result["history"]


def _kill_every_process_of(out: str) -> None:
    """SIGKILL every process whose command line names the run directory `out`."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if out.encode() in args:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass


def _params(path: str) -> dict[str, torch.Tensor]:
    return checkpoint.load(path, None)["model"]


def _assert_same_run(history: list[dict], expected: list[dict], got_path: str, expected_path: str) -> None:
    assert [h["step"] for h in history] == [h["step"] for h in expected]
    assert [h["total"] for h in history] == pytest.approx([h["total"] for h in expected], rel=1e-3)
    a, b = _params(got_path), _params(expected_path)
    assert a.keys() == b.keys()
    for name in a:
        if a[name].is_floating_point():
            diff = (a[name] - b[name]).abs()
            assert diff.max() < 1e-2 and diff.mean() < 1e-4, (name, float(diff.max()), float(diff.mean()))
        else:
            assert torch.equal(a[name], b[name]), name


@pytest.mark.parametrize("stage", ["guiding", "gaussian"])
def test_two_processes_train_like_one_with_the_same_global_batch(stage, head_shards, stage1, tmp_path):
    init = stage1 if stage == "gaussian" else ""
    one = trainer(stage, head_shards, str(tmp_path / "one"), 3, init)
    one.fit()
    assert one.batch_size == 2  # the global batch, in one process
    two = _torchrun(stage, head_shards, str(tmp_path / "two"), 3, init)
    _assert_same_run(two, one.history, str(tmp_path / "two" / "checkpoint.pt"), str(tmp_path / "one" / "checkpoint.pt"))


def test_killed_under_torchrun_resumes_with_the_uninterrupted_losses(head_shards, tmp_path):
    straight = _torchrun("guiding", head_shards, str(tmp_path / "straight"), 6)
    out = str(tmp_path / "killed")
    job = subprocess.Popen(_command("guiding", head_shards, out, 200), env=_env(DDP_TEST_CHECKPOINT_EVERY="2"),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    path = os.path.join(out, "checkpoint.pt")
    deadline = time.monotonic() + 300
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    _kill_every_process_of(out)  # torchrun and both workers (torchrun starts each in a session of its own)
    job.wait()
    saved = int(checkpoint.load(path, "guiding")["step"])
    assert saved >= 2 and saved % 2 == 0
    if saved >= 6:
        pytest.skip("the run reached step 6 before it was killed")
    resumed = _torchrun("guiding", head_shards, out, 6)
    assert [h["step"] for h in resumed] == list(range(saved + 1, 7))
    assert [h["total"] for h in resumed] == pytest.approx([h["total"] for h in straight[saved:]], rel=1e-5)


def test_a_two_process_checkpoint_resumes_in_one_process(head_shards, tmp_path):
    """Another world size: the global batch is the same and the loader goes on from the saved position,
    so one process continues a two-process run as the two processes would have."""
    straight = trainer("guiding", head_shards, str(tmp_path / "straight"), 5)
    straight.fit()
    _torchrun("guiding", head_shards, str(tmp_path / "run"), 3)
    resumed = trainer("guiding", head_shards, str(tmp_path / "run"), 5)
    assert resumed.step == 3 and resumed.world.size == 1
    resumed.fit()
    assert [h["step"] for h in resumed.history] == [4, 5]
    assert [h["total"] for h in resumed.history] == pytest.approx([h["total"] for h in straight.history[3:]],
                                                                   rel=1e-3)
