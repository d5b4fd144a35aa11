"""Stage-2 (Gaussian model) step time: seconds per optimiser step of a preset, streamed from a shard set
(loading included), and where a step's time goes (encoders and per-point MLPs, splatting, refine network,
losses, backward). The issue asks for `tiny` on CPU and `paper` at 512 px, batch 8, on a GPU
(--device cuda --preset paper). Without --init a stage-1 checkpoint of the preset is made first (a few
steps: the timing does not depend on how well stage 1 was trained, only on the number of Gaussians).

    python benchmarks/bench_gaussian.py [--shards shards/demo] [--init RUN/checkpoint.pt] [--preset tiny]
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
    ap.add_argument("--init", default="", help="stage-1 checkpoint (default: train one for a few steps)")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    from benchmarks.timing import time_steps, training_shards
    from model.gaussian.config import preset as gaussian_preset
    from model.guiding.config import preset as guiding_preset
    from model.train.config import TrainConfig
    from model.train.gaussian_trainer import GaussianTrainer
    from model.train.guiding_trainer import GuidingTrainer

    work = tempfile.mkdtemp(prefix="bench_gaussian_")
    shards = training_shards(args.shards, work)
    init = args.init
    if not init:
        out = os.path.join(work, "stage1")
        GuidingTrainer(TrainConfig(shards=shards, out=out, preset=args.preset, device=args.device, steps=2,
                                   eval_every=0), guiding_preset(args.preset), log=False).fit()
        init = os.path.join(out, "checkpoint.pt")
    start = time.perf_counter()
    trainer = GaussianTrainer(TrainConfig(shards=shards, out=os.path.join(work, "run"), preset=args.preset,
                                          init=init, device=args.device, steps=10**9),
                              gaussian_preset(args.preset), log=False)
    setup = time.perf_counter() - start
    c, g = trainer.config, trainer.gaussian_config
    print(f"preset {args.preset} on {trainer.device} ({torch.get_num_threads()} threads): {trainer.model.n_points} "
          f"Gaussians, render {c.render_resolution} px, output {c.output_resolution} px, batch {g.batch_size} images, "
          f"backend {g.backend}; set-up {setup:.1f} s")
    wall, _ = time_steps(trainer, args.steps, "gaussian")
    print(f"{wall:.3f} s per step (mean of {args.steps}, loader included), {wall / g.batch_size * 1000:.0f} ms "
          "per training image")


if __name__ == "__main__":
    main()
