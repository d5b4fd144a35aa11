"""Matting, landmarks and crops: views per second through the runner (1 and 2 local workers) against
the backend's bare inference over the same images in a loop, with the overhead ratio.

    python benchmarks/bench_stages.py [--frames 16] [--keep DIR]
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
from pipeline.backends.face_align import face_mask, face_transform, warp  # noqa: E402
from pipeline.backends.mediapipe_landmarks import MediapipeFaceLandmarks  # noqa: E402
from pipeline.backends.plate_matting import plate_matte  # noqa: E402
from pipeline.backends.segmentation import MediapipeSegmenter  # noqa: E402
from pipeline.config import PreprocessConfig  # noqa: E402
from pipeline.runner import execute_plan, plan_run  # noqa: E402

CLIP = "001/EXP-1-jawopen"


def through_runner(store: str, stage: str, workers: int) -> float:
    cfg = PreprocessConfig(store=store, stages=[stage])
    cfg.runner.workers = workers
    plan = plan_run(cfg)
    start = time.perf_counter()
    execute_plan(plan, cfg)
    return time.perf_counter() - start


def bare(stage: str, store: str) -> float:
    g = Store(store, mode="r").clip(CLIP)
    rgb = g["rgb"][...]
    T, V = rgb.shape[:2]
    start = time.perf_counter()
    if stage == "matting":
        plates = g["background"][...]
        seg = MediapipeSegmenter()
        for t in range(T):
            for v in range(V):
                plate_matte(rgb[t, v], plates[v], seg(rgb[t, v]))
    elif stage == "landmarks":
        detectors = [MediapipeFaceLandmarks() for _ in range(V)]
        for v in range(V):
            for t in range(T):
                detectors[v](rgb[t, v])
    else:
        lmk = g["lmk2d"][...]
        for t in range(T):
            for v in range(V):
                if lmk[t, v, :, 2].mean() > 0.1:
                    warp(rgb[t, v], face_transform(lmk[t, v], 256), 256)
                    face_mask(lmk[t, v], rgb.shape[2], rgb.shape[3], 0.15)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--keep", help="work directory to keep (default: a temporary one)")
    args = ap.parse_args()
    # imported here, not at the top: local Dask workers are spawned processes that re-import this
    # script's top-level imports, and torch (used by the generator) would slow every worker's start
    from datasets.synthetic import SynthConfig, write_synthetic_capture
    work = args.keep or tempfile.mkdtemp(prefix="bench_stages_")
    raw, base = os.path.join(work, "raw"), os.path.join(work, "base.zarr")
    if not os.path.isdir(raw):
        write_synthetic_capture(raw, SynthConfig(participants=1, sequences=1, frames=args.frames))
    if not os.path.isdir(base):
        cfg = PreprocessConfig(store=base, stages=["ingest"])
        cfg.source.dataset, cfg.source.root = "nersemble", raw
        cfg.runner.workers = 0
        execute_plan(plan_run(cfg), cfg)
    views = args.frames * 16
    print(f"{views} views (16 cameras x {args.frames} frames, 512x512), machine with {os.cpu_count()} cores")
    for stage in ("matting", "landmarks", "crops"):
        t_bare = bare(stage, base)
        rates = {}
        for workers in (0, 1, 2):
            copy = os.path.join(work, f"{stage}_w{workers}.zarr")
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(base, copy)
            shutil.rmtree(os.path.join(copy, "_meta", "markers", stage), ignore_errors=True)  # redo them all
            rates[workers] = views / through_runner(copy, stage, workers)
        print(f"{stage:9s}: bare {views / t_bare:6.1f} views/s | runner in-process {rates[0]:6.1f} "
              f"(overhead x{(views / t_bare) / rates[0]:.2f}: store reads/writes), 1 worker {rates[1]:6.1f} "
              f"(x{(views / t_bare) / rates[1]:.2f}: + cluster and worker start), 2 workers {rates[2]:6.1f} "
              f"(x{rates[2] / rates[1]:.2f} of 1 worker) views/s")
        shutil.rmtree(os.path.join(base, "_meta", "markers", stage), ignore_errors=True)
        through_runner(base, stage, 0)  # the next stage reads this one's products
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
