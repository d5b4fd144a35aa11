"""Stage-1 (guiding mesh model) step time: seconds per optimiser step of a preset, streamed from a shard
set (loading included), then where a step's time goes (a profiled run of the same steps: data, mean mesh
by DMTet, MLPs, rasterization, soft silhouette, refine network, losses, backward). The issue asks for the
`tiny` preset on CPU and the `paper` preset at 512 px on a GPU (--device cuda --preset paper).

    python benchmarks/bench_guiding.py [--shards shards/demo] [--preset tiny] [--steps 20] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", default="shards/demo", help="shard set (small rendered heads are made when absent)")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    from model.guiding.config import preset
    from model.train.config import TrainConfig
    from model.train.guiding_trainer import GuidingTrainer

    work = tempfile.mkdtemp(prefix="bench_guiding_")
    shards = args.shards
    if not os.path.exists(os.path.join(shards, "manifest.json")):
        from tests.head_shards import make_head_shards

        shards = make_head_shards(work, subjects=2, frames=8, views=8, res=512, holdout_views="2")
        print(f"{args.shards} not found: using rendered test heads in {shards}")
    start = time.perf_counter()
    trainer = GuidingTrainer(TrainConfig(shards=shards, out=os.path.join(work, "run"), preset=args.preset,
                                         device=args.device, steps=10**9), preset(args.preset), log=False)
    setup = time.perf_counter() - start
    c = trainer.config
    print(f"preset {args.preset} on {trainer.device} ({torch.get_num_threads()} threads): grid {c.grid_resolution}^3, "
          f"render {c.render_resolution} px, batch {c.batch_size} frames x {c.views} views; set-up (f_mean "
          f"initialisation, landmark statistics) {setup:.1f} s")
    batches = iter(trainer.loader)
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    for _ in range(2):  # warm-up
        trainer.train_step(next(batches))
    sync()
    start = time.perf_counter()
    faces = 0
    for _ in range(args.steps):
        _, out, _ = trainer.train_step(next(batches))
        faces += out.faces.shape[0]
    sync()
    wall = (time.perf_counter() - start) / args.steps
    print(f"{wall:.3f} s per step (mean of {args.steps}, loader included), mean mesh {faces // args.steps} faces")

    activities = [torch.profiler.ProfilerActivity.CPU]
    if trainer.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    steps = max(3, args.steps // 4)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(steps):
            trainer.train_step(next(batches))
        sync()
    parts = {e.key: e.cpu_time_total / 1e6 / steps for e in prof.key_averages() if e.key.startswith("guiding/")}
    total = sum(parts.values())
    print(f"where a step goes (profiled, {steps} steps; the profiler adds overhead):")
    for name, seconds in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"  {name[len('guiding/'):]:44s} {seconds:7.3f} s  {100 * seconds / total:5.1f} %")


if __name__ == "__main__":
    main()
