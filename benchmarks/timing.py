"""Shared by the benchmarks: a timed call (synchronised on CUDA), a shard set to train on, seconds per
optimiser step of a trainer (loader included) and a profiled split of a step by the `record_function`
labels a model uses (`<prefix>/...`)."""

from __future__ import annotations

import os
import time

import torch


def timed(fn, device: str, repeat: int = 3) -> float:
    """Mean seconds of fn() over `repeat` calls after one warm-up call."""
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / repeat


def training_shards(path: str, work: str) -> str:
    """`path` when it holds a shard set, else small rendered test heads made in `work`."""
    if os.path.exists(os.path.join(path, "manifest.json")):
        return path
    from model.head_shards import make_head_shards

    shards = make_head_shards(work, subjects=2, frames=8, views=8, res=512, holdout_views="2")
    print(f"{path} not found: using rendered test heads in {shards}")
    return shards


def time_steps(trainer, steps: int, prefix: str) -> tuple[float, list]:
    """-> (mean seconds per step after 2 warm-up steps, the outputs of the timed steps)."""
    batches = iter(trainer.loader)
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    for _ in range(2):  # warm-up
        trainer.train_step(next(batches))
    sync()
    start = time.perf_counter()
    outs = []
    for _ in range(steps):
        _, out, _ = trainer.train_step(next(batches))
        outs.append(out)
    sync()
    wall = (time.perf_counter() - start) / steps

    activities = [torch.profiler.ProfilerActivity.CPU]
    if trainer.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    profiled = max(3, steps // 4)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(profiled):
            trainer.train_step(next(batches))
        sync()
    parts = {e.key: e.cpu_time_total / 1e6 / profiled for e in prof.key_averages() if e.key.startswith(f"{prefix}/")}
    total = sum(parts.values()) or 1.0
    print(f"where a step goes (profiled, {profiled} steps; the profiler adds overhead):")
    for name, seconds in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"  {name[len(prefix) + 1:]:44s} {seconds:7.3f} s  {100 * seconds / total:5.1f} %")
    return wall, outs
