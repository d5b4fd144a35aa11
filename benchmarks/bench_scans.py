"""Scan datasets benchmark (NPHM / FaceVerse rendered from the 80-camera rig, datasets/scans/):

1. views rendered per second for a 100k-face scan at 512 px (vertex-coloured, and textured with a
   2048 px map), all 80 cameras of the rig;
2. the per-scan cost of the whole default preprocessing (ingest with the renders, matting = the
   renders' alpha, landmarks, fitting, crops, synthesis) on synthetic head scans in FaceVerse's layout
   (a textured OBJ per expression, a real portrait's face: the 2D landmark stage finds it);
3. the extrapolation to NPHM's 5,200 scans x 80 views on this machine: the measured per-scan pipeline
   cost with the small synthetic mesh's rendering replaced by the 100k-face render.

    python benchmarks/bench_scans.py [--device cuda] [--views 80] [--resolution 512] [--identities 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.timing import timed
from datasets.raw.scans import NPHM_FRAME
from datasets.scans.mesh import ScanMesh
from datasets.scans.render import render_scan
from datasets.scans.rig import make_scan_rig
from datasets.synthhead.proxies import uv_sphere

NPHM_SCANS = 5200
STAGES = ["ingest", "matting", "landmarks", "fitting", "crops", "synthesis"]


def scan_100k(textured: bool) -> ScanMesh:
    """A head-sized ellipsoid of about 100k faces in NPHM coordinates (FLAME metres x 4)."""
    n = round(np.sqrt(100_000 / 4))
    v, f = uv_sphere(n, 2 * n)
    v = (v * np.array([0.09, 0.12, 0.1]) + np.array([0.0, 0.0375, 0.0])) * 4.0
    colors = np.clip(0.5 + v / 1.0, 0, 1).astype(np.float32)
    if not textured:
        return ScanMesh(v.astype(np.float32), f.astype(np.int64), colors=colors)
    rng = np.random.default_rng(0)
    tex = rng.integers(0, 255, (2048, 2048, 3), dtype=np.uint8)
    uv = np.stack([np.arctan2(v[:, 0], v[:, 2]) / (2 * np.pi) + 0.5, v[:, 1] / 1.0 + 0.5], 1).astype(np.float32)
    return ScanMesh(v.astype(np.float32), f.astype(np.int64), uv=uv, texture=tex)


def render_rate(views: int, size: int, device: str) -> dict[str, float]:
    _, K, E = make_scan_rig(NPHM_FRAME, size, views)
    out = {}
    backend = "auto" if device == "cuda" else "torch"
    for textured in (False, True):
        mesh = scan_100k(textured)
        seconds = timed(lambda m=mesh: render_scan(m, K, E, size, backend=backend), device, repeat=1)
        out["textured" if textured else "vertex colours"] = views / seconds
        print(f"render, {len(mesh.faces)} faces, {size} px, {views} views, "
              f"{'textured 2048 px map' if textured else 'vertex colours'}: {seconds:.2f} s per scan, "
              f"{views / seconds:.1f} views/s")
    return out


def pipeline_cost(identities: int, expressions: int, views: int, size: int) -> tuple[float, float]:
    """(seconds per scan of the whole default preprocessing, seconds per scan of its rendering alone) on
    synthetic head scans."""
    from datasets.raw import ScanOptions, Selection, read_raw
    from datasets.raw.sources import iter_frames
    from datasets.scans import render as render_module
    from datasets.scans.synthetic import synthetic_head_scans, write_faceverse
    from pipeline.config import PreprocessConfig
    from pipeline.runner import preprocess

    work = tempfile.mkdtemp(prefix="bench_scans_")
    try:
        scans = synthetic_head_scans(identities, expressions, textured=True, scale=1000.0)
        write_faceverse(f"{work}/fv", scans)
        n_scans = len(scans)
        faces = int(np.mean([s.faces.shape[0] for s in scans.values()]))
        cfg = PreprocessConfig(store=f"{work}/fv.zarr", stages=list(STAGES))
        cfg.source.dataset, cfg.source.root, cfg.source.scan_views = "faceverse", f"{work}/fv", views
        cfg.runner.workers = 0
        cfg.stage_config("ingest").resolution = size
        cfg.stage_config("ingest").block_frames = expressions
        start = time.perf_counter()
        summary = preprocess(cfg)
        total = time.perf_counter() - start
        assert summary.exit_code(strict=False) == 0
        plan = read_raw("faceverse", f"{work}/fv", Selection(), scan=ScanOptions(size, views))
        render_module._cache.clear()
        start = time.perf_counter()
        for clip in plan.clips:
            for _ in iter_frames(clip.views[0].source, clip.frame_ids):
                pass  # view 0 renders every view of the scan (cached for the others)
        render = (time.perf_counter() - start) / n_scans
        print(f"whole preprocessing, {n_scans} synthetic scans ({faces} faces each) x {views} views at {size} px, "
              f"one process: {total:.1f} s -> {total / n_scans:.1f} s per scan, of which rendering {render:.2f} s")
        return total / n_scans, render
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--views", type=int, default=80)
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--identities", type=int, default=2)
    ap.add_argument("--expressions", type=int, default=2)
    args = ap.parse_args()
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, {os.cpu_count()} CPU cores")
    rates = render_rate(args.views, args.resolution, args.device)
    per_scan, small_render = pipeline_cost(args.identities, args.expressions, args.views, args.resolution)
    for kind, rate in rates.items():
        scan_seconds = per_scan - small_render + args.views / rate
        hours = NPHM_SCANS * scan_seconds / 3600
        print(f"NPHM extrapolation ({kind} 100k-face scans): {scan_seconds:.1f} s per scan x {NPHM_SCANS} scans "
              f"= {hours:.1f} h in one process on this machine ({NPHM_SCANS * args.views / rate / 3600:.1f} h of it "
              f"rendering {NPHM_SCANS * args.views} views); divide by the worker processes the cores allow")


if __name__ == "__main__":
    main()
