"""Expression synthesis with the offline `warp` backend: images per second through the runner (in
process, 1 and 2 local workers; reading driving and source frames from the store, writing JPEG shards)
against the bare backend over the same source crops and target landmarks in memory, with the ratio.

    python benchmarks/bench_synthesis.py [--frames 16] [--images 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from datasets.store import Store  # noqa: E402
from datasets.synthetic import SynthConfig, write_synthetic_capture  # noqa: E402
from pipeline.config import PreprocessConfig  # noqa: E402
from pipeline.runner import execute_plan, plan_run, preprocess  # noqa: E402


def prepare(root: str, store: str, frames: int) -> None:
    write_synthetic_capture(root, SynthConfig(participants=2, sequences=1, frames=frames))
    cfg = PreprocessConfig(store=store, stages=["ingest", "landmarks", "fitting"])
    cfg.source.dataset, cfg.source.root = "nersemble", root
    cfg.runner.workers = 2
    preprocess(cfg)


def through_runner(store: str, workers: int, images: int) -> tuple[float, int]:
    cfg = PreprocessConfig(store=store, stages=["synthesis"])
    cfg.runner.workers = workers
    cfg.runner.recompute = True
    cfg.stage_config("synthesis").images = images
    s = Store(store)
    for key in s.clips():  # start from nothing each time
        for b in s.markers("synthesis", key):
            s.clear_marker("synthesis", key, b)
    plan = plan_run(cfg)
    start = time.perf_counter()
    execute_plan(plan, cfg)
    elapsed = time.perf_counter() - start
    made = sum(int(s.clip(k)["synth_ok"][:].sum()) for k in s.clips())
    return elapsed, made


def bare(store: str) -> tuple[float, int]:
    """The warp backend alone on the inputs the stage prepared: source crops and target landmarks in memory."""
    from pipeline.backends.expression_geometry import neutral_shape, target_points
    from pipeline.backends.expression_warp import WarpExpression
    from pipeline.backends.face_align import apply, face_transform, warp
    from pipeline.synthesis import ClipFacts, SynthesisConfig, _SourcePool

    s = Store(store, mode="r")
    cfg = SynthesisConfig()
    inputs = []
    for key in s.clips():
        g = s.clip(key)
        driving = ClipFacts.read(g)
        neutral = neutral_shape(driving.local[driving.ok])
        pool = g["synth"].attrs["pool"]
        sources = _SourcePool(pool, s, cfg)
        src_ids, views = g["synth_source"][:], g["synth_view"][:]
        for t in range(len(views)):
            for p, f, sv in src_ids[t]:
                if p < 0:
                    continue
                src = sources.facts(p)
                lmk = src.lmk2d[f, sv]
                M = face_transform(lmk, 256)
                pts = apply(M, lmk[:, :2])
                goal = target_points(pts, src.local[f], sources.neutral(p), driving.local[t], neutral, src.pose[f],
                                     float(src.scale[f]), src.K[sv], src.E[sv], M)
                inputs.append((warp(src.group["rgb"][f, sv], M, 256), pts, goal))
    backend = WarpExpression()
    start = time.perf_counter()
    for crop, pts, goal in inputs:
        backend(crop, pts, goal)
    return time.perf_counter() - start, len(inputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--keep", default="", help="keep the capture and store in this folder")
    args = parser.parse_args()
    base = args.keep or tempfile.mkdtemp(prefix="bench_synthesis_")
    root, store = os.path.join(base, "capture"), os.path.join(base, "store.zarr")
    try:
        if not os.path.exists(store):
            print(f"preparing: synthetic capture (2 subjects x {args.frames} frames x 16 views), landmarks, fitting")
            prepare(root, store, args.frames)
        rows = []
        for workers in (0, 1, 2):
            elapsed, made = through_runner(store, workers, args.images)
            rows.append((f"runner, {workers} worker(s)*" if workers else "runner, in process", made, elapsed))
        elapsed, made = bare(store)
        rows.append(("bare backend (in memory)", made, elapsed))
        print(f"\nwarp expression synthesis, {args.images} images per frame, 256 px")
        for name, made, elapsed in rows:
            print(f"  {name:28s} {made:4d} images {elapsed:6.2f} s  {made / elapsed:7.1f} images/s")
        print("  * local cluster start included (a few seconds; it dominates at this size)")
        print(f"  runner in process / bare: {rows[0][1] / rows[0][2] / (rows[-1][1] / rows[-1][2]):.2f}x the bare rate")
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
