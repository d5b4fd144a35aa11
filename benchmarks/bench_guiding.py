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

    from benchmarks.timing import time_steps, training_shards
    from model.guiding.config import preset
    from model.train.config import TrainConfig
    from model.train.guiding_trainer import GuidingTrainer

    work = tempfile.mkdtemp(prefix="bench_guiding_")
    shards = training_shards(args.shards, work)
    start = time.perf_counter()
    trainer = GuidingTrainer(TrainConfig(shards=shards, out=os.path.join(work, "run"), preset=args.preset,
                                         device=args.device, steps=10**9), preset(args.preset), log=False)
    setup = time.perf_counter() - start
    c = trainer.config
    print(f"preset {args.preset} on {trainer.device} ({torch.get_num_threads()} threads): grid {c.grid_resolution}^3, "
          f"render {c.render_resolution} px, batch {c.batch_size} frames x {c.views} views; set-up (f_mean "
          f"initialisation, landmark statistics) {setup:.1f} s")
    wall, outs = time_steps(trainer, args.steps, "guiding")
    faces = sum(out.faces.shape[0] for out in outs) // len(outs)
    print(f"{wall:.3f} s per step (mean of {args.steps}, loader included), mean mesh {faces} faces")

if __name__ == "__main__":
    main()
