"""The monocular path on real footage, before and after head-aware framing, landmark fallbacks and the
mesh-based one-view fit, side by side in one run.

"before" is the earlier behaviour, still selectable: the largest centred square (framing.mode=center), no
second look at missed frames (landmarks.fallback=none), the rigid mean template posed by PnP
(fitting.monocular=template). "after" is the defaults.

1. Frames per second of the default preprocessing (ingest, matting, landmarks, fitting, crops; a video of
   one person has no synthesis pool) of a 20 s 640x360 clip made from the real clip (played back and
   forth, the person moved right of centre), stage by stage, and the framing pass's share of
   ingest + landmarks.
2. Landmark coverage (frames with landmarks among those where mediapipe finds a face in the raw frame)
   and pose jitter (head rotation between consecutive frames) on the real clips and harder variants.

    python benchmarks/bench_monocular.py [--realdata ../shared/realdata] [--workers 2] [--seconds 20] [--keep DIR]
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

from datasets.capture import variants  # noqa: E402
from datasets.store import Store  # noqa: E402
from model.fitting.geometry import rotation_angle_deg  # noqa: E402
from pipeline.config import PreprocessConfig, apply_settings  # noqa: E402
from pipeline.runner import execute_plan, plan_run  # noqa: E402

BEFORE = ["framing.mode=center", "landmarks.fallback=none", "fitting.monocular=template"]
STAGES = ["framing", "ingest", "matting", "landmarks", "fitting", "crops"]


def config(store: str, root: str, stages: list[str], settings: list[str], workers: int) -> PreprocessConfig:
    cfg = PreprocessConfig(store=store, stages=stages)
    cfg.source.dataset, cfg.source.root = "video", root
    cfg.runner.workers = workers
    apply_settings(cfg, settings)
    return cfg


def timed_stages(store: str, root: str, settings: list[str], workers: int) -> tuple[dict, dict]:
    """(wall seconds, compute seconds) of each stage, run one after the other (planning excluded). Compute:
    the tasks' own time, summed over their blocks (completion markers), so a stage that runs as one task
    per clip (framing) is not charged for the worker it leaves idle on a one-clip run."""
    wall, compute = {}, {}
    for stage in STAGES:
        cfg = config(store, root, [stage], settings, workers)
        plan = plan_run(cfg)
        start = time.perf_counter()
        execute_plan(plan, cfg)
        wall[stage] = time.perf_counter() - start
        s = Store(store, mode="r")
        compute[stage] = sum(m.seconds for key in s.clips() for m in s.markers(stage, key).values())
    return wall, compute


def raw_faces(path: str) -> np.ndarray:
    from pipeline.backends.mediapipe_landmarks import MediapipeFaceLandmarks

    frames, _ = variants.read_video(path)
    detector = MediapipeFaceLandmarks(tracking=False)
    found = np.array([detector(f).landmarks68 is not None for f in frames])
    detector.close()
    return found


def clip_figures(store: Store, key: str, truth: np.ndarray) -> dict[str, float]:
    g = store.clip(key)
    have = g["lmk2d"][:, 0, :, 2].mean(-1) > 0.1
    ok = g["fit/ok"][:]
    R = g["fit/pose"][:, :3, :3].astype(np.float64)
    step = rotation_angle_deg(R[1:], R[:-1])[ok[1:] & ok[:-1]]

    def opening(p):
        return np.linalg.norm(p[:, [61, 62, 63]] - p[:, [67, 66, 65]], axis=-1).mean(1) / \
            np.linalg.norm(p[:, 36:42].mean(1) - p[:, 42:48].mean(1), axis=-1)

    corr = np.corrcoef(opening(g["fit/lmk3d"][:][ok]), opening(g["lmk2d"][:, 0, :, :2][ok]))[0, 1] if ok.sum() > 2 \
        else float("nan")
    return {"coverage": (have & truth).sum() / max(1, truth.sum()), "p95": np.percentile(step, 95) if len(step) else 0,
            "max": step.max() if len(step) else 0, "corr": corr}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--realdata", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "realdata"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--keep", default="")
    args = ap.parse_args()
    real = os.path.abspath(args.realdata)
    if not os.path.exists(os.path.join(real, "frontal_man.mp4")):
        sys.exit(f"the real clips are not in {real}; pass --realdata FOLDER")
    work = args.keep or tempfile.mkdtemp(prefix="bench_mono_")
    os.makedirs(work, exist_ok=True)
    try:
        frames, fps = variants.read_video(os.path.join(real, "frontal_man.mp4"))
        n = int(args.seconds * fps)
        looped = variants.ping_pong(frames, n)
        # 1. 20 s clips: the person in the middle (both framings see the face), and right of centre (the
        # centred square cuts the face: "before" finds no face there, so it skips work "after" does)
        for label, clip in (("centred", looped), ("right of centre", variants.shift(looped, 0.3))):
            path = variants.write_video(os.path.join(work, label.replace(" ", "_"), "talk.mp4"), clip, fps)
            print(f"{label}: {n} frames of 640x360 at {fps:.0f} fps; {args.workers} worker(s); seconds per stage, "
                  "wall (compute):")
            wall, compute = {}, {}
            for name, settings in (("before", BEFORE), ("after", [])):
                wall[name], compute[name] = timed_stages(os.path.join(work, f"{label[:5]}_{name}.zarr"), path,
                                                         settings, args.workers)
            print(f"  {'stage':10s} {'before':>16s} {'after':>16s}")
            for stage in STAGES:
                print(f"  {stage:10s} {wall['before'][stage]:7.2f} ({compute['before'][stage]:6.2f}) "
                      f"{wall['after'][stage]:7.2f} ({compute['after'][stage]:6.2f})")
            for name in ("before", "after"):
                total = sum(wall[name].values())
                print(f"  {name}: {total:.1f} s wall, {n / total:.1f} frames/s; {sum(compute[name].values()):.1f} s "
                      "compute")
            a, c = wall["after"], compute["after"]
            print(f"  framing pass: {c['framing']:.2f} s compute = "
                  f"{100 * c['framing'] / (c['ingest'] + c['landmarks']):.1f}% of ingest + landmarks "
                  f"({c['ingest'] + c['landmarks']:.2f} s); wall {a['framing']:.2f} s = "
                  f"{100 * a['framing'] / (a['ingest'] + a['landmarks']):.1f}% (one task per clip); after/before "
                  f"total wall {sum(a.values()) / sum(wall['before'].values()):.2f}\n")
        # 2. coverage and jitter on the real clips and variants
        clips = os.path.join(work, "clips")
        paths = variants.harder_variants(os.path.join(real, "frontal_man.mp4"), clips)
        for name in ("frontal_man.mp4", "cartoon_then_face.mov"):
            paths[name.split(".")[0]] = shutil.copy(os.path.join(real, name), os.path.join(clips, name))
        drift = [variants.shift([f], -0.15 + 0.45 * t / (len(frames) - 1))[0] for t, f in enumerate(frames)]
        for extra, make in (("edge", lambda: variants.shift(frames, 0.42)),
                            ("gaps", lambda: variants.with_blank_frames(variants.with_blank_frames(frames, 30, 10), 60, 8,
                                                                        "wall")),
                            ("drift", lambda: drift),  # the person moves across the frame
                            ("roll", lambda: variants.rotate(variants.shift(frames, 0.2), 25))):
            paths[extra] = variants.write_video(os.path.join(clips, f"{extra}.mp4"), make(), fps)
        truth = {name: raw_faces(path) for name, path in paths.items()}
        stores = {}
        for name, settings in (("before", BEFORE), ("after", [])):
            path = os.path.join(work, f"clips_{name}.zarr")
            cfg = config(path, clips, ["ingest", "landmarks", "fitting"], settings, args.workers)
            execute_plan(plan_run(cfg), cfg)
            stores[name] = Store(path, mode="r")
        print("\nlandmark coverage (of the frames where mediapipe finds a face in the raw frame) and head rotation "
              "between frames (deg), before | after:")
        print(f"  {'clip':18s} {'coverage':>17s} {'p95':>13s} {'max':>13s} {'3D-2D mouth corr':>19s}")
        for name in paths:
            b, f = (clip_figures(stores[k], f"{name}/video", truth[name]) for k in ("before", "after"))

            def cell(x: float, width: int, fitted: bool) -> str:
                return f"{x:{width}.{3 if width > 5 else 2}f}" if fitted and np.isfinite(x) else "-".rjust(width)

            fb, ff = b["coverage"] > 0, f["coverage"] > 0
            print(f"  {name:18s} {b['coverage']:7.3f} | {f['coverage']:7.3f} {cell(b['p95'], 5, fb)} | "
                  f"{cell(f['p95'], 5, ff)} {cell(b['max'], 5, fb)} | {cell(f['max'], 5, ff)} "
                  f"{cell(b['corr'], 8, fb)} | {cell(f['corr'], 7, ff)}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
