"""Training on several processes and nodes, measured on this machine:

1. samples/s of `cli.py train` in 1 process and under torchrun with 2 processes (gloo, the same global
   batch; on 2 cores the point is correctness and overhead, not speed);
2. bytes each node fetches from a remote shard set (s3:// served by moto, every response counted) in one
   epoch, with 1, 2 and 4 simulated nodes: node-aware partitioning (each node reads its share of the
   shards) against the split by position alone (every node reads every shard), the previous behaviour.

    python benchmarks/bench_distributed.py [--steps 40] [--skip-training]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# the small stage-1 model of the trainer tests: a step well under a second on this CPU
SMALL = ["grid_resolution=16", "init_steps=60", "mean_width=32", "feature_dim=16", "width=32", "id_dim=8",
         "exp_dim=8", "nf_dim=8", "encoder_channels=4,4,8,8", "encoder_input=32", "render_resolution=32",
         "output_resolution=32", "refine_width=8", "batch_size=4", "views=2"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(shards: str, out: str, steps: int, procs: int) -> float:
    """Wall seconds of one `cli.py train` run (a new run directory)."""
    args = ["cli.py", "train", shards, "--out", out, "--steps", str(steps), "--device", "cpu", "--eval-every", "0",
            "--checkpoint-every", "0", "--image-every", "0", "--threads", "1"]
    for s in SMALL:
        args += ["--set", s]
    launcher = [sys.executable] if procs == 1 else [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                                                    str(procs), "--master_addr", "127.0.0.1", "--master_port",
                                                    str(_port())]
    tick = time.perf_counter()
    subprocess.run(launcher + args, cwd=ROOT, check=True, capture_output=True,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    return time.perf_counter() - tick


def training(tmp: str, steps: int) -> None:
    from model.head_shards import make_head_shards

    shards = make_head_shards(os.path.join(tmp, "heads"))
    print(f"== training throughput: stage 1 (small tiny model), global batch 4, {steps} steps after 2 "
          "(start-up subtracted)")
    rates = {}
    for procs in (1, 2):
        short = _train(shards, os.path.join(tmp, f"short-{procs}"), 2, procs)
        long = _train(shards, os.path.join(tmp, f"long-{procs}"), 2 + steps, procs)
        per_step = (long - short) / steps
        rates[procs] = 4 / per_step
        print(f"  {procs} process{'es' if procs > 1 else '  '}: {per_step * 1000:7.0f} ms per step, "
              f"{rates[procs]:6.1f} samples/s (start-up {short:.1f} s)")
    print(f"  2 processes / 1 process: {rates[2] / rates[1]:.2f}x samples/s")


def traffic(tmp: str) -> None:
    from datasets.capture.coloured_store import make_store
    from datasets.local_s3 import RequestLog, local_s3
    from datasets.shards.build import BuildOptions, build_shards
    from datasets.streaming import ShardDataset

    store = os.path.join(tmp, "store.zarr")
    make_store(store, subjects=4, frames=8, views=4)
    log = RequestLog()
    with local_s3("bench-nodes", log) as options:
        url = "s3://bench-nodes/shards"
        build_shards(BuildOptions([store], url, shard_rows=2, val_subjects="0", storage_options=options))
        probe = ShardDataset(url, storage_options=options, cache_dir=os.path.join(tmp, "probe"))
        total = sum(o["bytes"] for sh in probe.manifest.shards("train")
                    for o in [*sh["objects"].values(), *([sh["pack"]] if "pack" in sh else [])])
        n_shards = len(probe.manifest.shards("train"))
        print(f"\n== bytes fetched per node in one epoch (stage-2 samples, {n_shards} shards, "
              f"{total / 1e6:.2f} MB of shard objects, 1 rank per node, a cold cache per node)")
        print(f"  {'nodes':>5} | {'by position: MB/node':>21} | {'node-aware: MB/node':>20} | {'ratio':>5}")
        for nodes in (1, 2, 4):
            per_node = {}
            for aware in (False, True):
                fetched = []
                for node in range(nodes):
                    log.reset()
                    ds = ShardDataset(url, storage_options=options, rank=node, world_size=nodes,
                                      nodes=nodes if aware else 1, batch_size=2, seed=0, block_shards=2,
                                      cache_dir=os.path.join(tmp, f"cache-{nodes}-{aware}-{node}"))
                    for _ in ds:
                        pass
                    fetched.append(log.get_bytes("/bench-nodes/shards/") - log.get_bytes("manifest.json"))
                per_node[aware] = sum(fetched) / nodes
            print(f"  {nodes:>5} | {per_node[False] / 1e6:21.2f} | {per_node[True] / 1e6:20.2f} | "
                  f"{per_node[False] / per_node[True]:5.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_training:
            training(tmp, args.steps)
        traffic(tmp)


if __name__ == "__main__":
    main()
