"""Ingest benchmark: throughput with 1 and 2 local workers on a generated 16-camera capture, and the
store's size and object count against the common per-file layout of the same frames (one JPEG per
frame and camera plus one npz of camera parameters per frame and camera).

    python benchmarks/bench_ingest.py [--frames 24] [--sequences 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from datasets.capture.writer import write_image  # noqa: E402
from datasets.store import Store  # noqa: E402
from pipeline.config import PreprocessConfig  # noqa: E402
from pipeline.runner import execute_plan, plan_run  # noqa: E402


def tree_size(path: str) -> tuple[int, int]:
    """(bytes, files) under a directory."""
    total, files = 0, 0
    for dirpath, _, names in os.walk(path):
        for n in names:
            total += os.path.getsize(os.path.join(dirpath, n))
            files += 1
    return total, files


def run_ingest(raw: str, store: str, workers: int) -> tuple[float, int]:
    cfg = PreprocessConfig(store=store, stages=["ingest"])
    cfg.source.dataset, cfg.source.root = "nersemble", raw
    cfg.runner.workers = workers
    plan = plan_run(cfg)
    views = sum(len(t.layout.views) * sum(len(range(*t.layout.frames(b))) for b in t.blocks) for t in plan.tasks)
    start = time.perf_counter()
    execute_plan(plan, cfg)
    return time.perf_counter() - start, views


def per_file_layout(store_path: str, out: str, quality: int = 95) -> None:
    """The common layout: images/<frame>/image_<serial>.jpg and cameras/<frame>/camera_<serial>.npz."""
    store = Store(store_path, mode="r")
    for clip in store.clips():
        g = store.clip(clip)
        serials, K, E = g.attrs["views"], g["cameras/K"][...], g["cameras/world_to_cam"][...]
        for t in range(g["rgb"].shape[0]):
            frames = g["rgb"][t]
            for v, serial in enumerate(serials):
                base = os.path.join(out, clip)
                write_image(os.path.join(base, "images", f"{t:04d}", f"image_{serial}.jpg"), frames[v], quality)
                cam_dir = os.path.join(base, "cameras", f"{t:04d}")
                os.makedirs(cam_dir, exist_ok=True)
                np.savez(os.path.join(cam_dir, f"camera_{serial}.npz"), extrinsic=E[v][:3], intrinsic=K[v])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--sequences", type=int, default=2)
    ap.add_argument("--keep", help="work directory to keep (default: a temporary one)")
    args = ap.parse_args()
    # imported here, not at the top: local Dask workers are spawned processes that re-import this
    # script's top-level imports, and torch (used by the generator) would slow every worker's start
    from datasets.synthetic import SynthConfig, write_synthetic_capture
    work = args.keep or tempfile.mkdtemp(prefix="bench_ingest_")
    raw = os.path.join(work, "raw")
    if not os.path.isdir(raw):
        t0 = time.perf_counter()
        write_synthetic_capture(raw, SynthConfig(participants=1, sequences=args.sequences, frames=args.frames))
        print(f"generated synthetic head capture: {args.sequences} sequences x {args.frames} frames x 16 cameras, 560x800 "
              f"({time.perf_counter() - t0:.1f} s)")
    results = {}
    for workers in (0, 1, 2):
        store = os.path.join(work, f"store_w{workers}.zarr")
        shutil.rmtree(store, ignore_errors=True)
        seconds, views = run_ingest(raw, store, workers)
        results[workers] = views / seconds
        label = "in-process (--workers 0)" if workers == 0 else f"{workers} worker(s), local Dask cluster"
        print(f"ingest, {label}: {views} views in {seconds:.2f} s = {views / seconds:.1f} views/s "
              "(cluster start included)")
    print(f"speed-up 2 workers / 1 worker: {results[2] / results[1]:.2f}x  (machine has {os.cpu_count()} cores)")

    store = os.path.join(work, "store_w1.zarr")
    flat = os.path.join(work, "per_file")
    shutil.rmtree(flat, ignore_errors=True)
    per_file_layout(store, flat)
    s_bytes, s_files = tree_size(store)
    f_bytes, f_files = tree_size(flat)
    n_views = sum(Store(store, mode="r").clip(c)["rgb"].shape[0] * 16 for c in Store(store, mode="r").clips())
    print(f"store:          {s_bytes / n_views / 1024:.1f} KiB per 512x512 view, {s_files} files/objects")
    print(f"per-file layout: {f_bytes / n_views / 1024:.1f} KiB per 512x512 view, {f_files} files/objects")
    print(f"ratios store / per-file: bytes {s_bytes / f_bytes:.3f}, files {s_files / f_files:.4f} "
          f"({f_files / s_files:.0f}x fewer objects)")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
