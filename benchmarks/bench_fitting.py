"""Morphable-model fitting benchmark: a clip of 32 frames seen by 16 cameras, fitted batched (every
frame in the same tensors, one optimisation) against frame by frame (the common public tool's way),
same model file, same identity and scale, same iterations and step schedule; prints the time per frame,
the ratio, and the accuracy of both against the known parameters.

    python benchmarks/bench_fitting.py [--frames 32] [--device cuda] [--kinds bfm2009,flame]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from datasets.capture.rig import make_rig  # noqa: E402
from model.fitting.geometry import axis_angle_to_matrix, rotation_angle_deg  # noqa: E402
from model.fitting.model_fit import FitSettings, fit_model  # noqa: E402
from model.fitting.template import head_size  # noqa: E402
from model.fitting.triangulate import reproject  # noqa: E402
from model.morphable import load_morphable_model  # noqa: E402
from model.morphable.example_files import make_model_files  # noqa: E402  (small synthetic models in the real formats)


def scene(model, truth, T: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    ident = rng.normal(0, 0.7, (1, model.n_id))
    exp = rng.normal(0, 0.7, (T, model.n_exp)) * model.exp_scale.cpu().numpy()
    if truth.kind == "flame":
        exp[:, -3] = np.abs(exp[:, -3])
    lmk = truth.landmarks(np.repeat(ident, T, 0), exp)
    R = axis_angle_to_matrix(rng.normal(0, 1, (T, 3)) * np.array([0.15, 0.35, 0.08]))
    t = rng.normal(0, 0.02, (T, 3)) + np.array([0.0, 0.0, 0.03])
    world = truth.unit * np.einsum("tij,tlj->tli", R, lmk) + t[:, None]
    rig = make_rig(560, 800, target=(0.0, 0.0, 0.03))
    K, E = np.stack([c.K for c in rig]), np.stack([c.world_to_cam for c in rig])
    uv, _ = reproject(world, K, E)
    uv = uv + rng.normal(0, 1.0, uv.shape)
    return world, R, K, E, uv, np.ones(uv.shape[:-1])


def accuracy(fit_R, fit_lmk, R, world) -> str:
    pose = rotation_angle_deg(fit_R, R)
    lmk = np.linalg.norm(fit_lmk - world, axis=-1) / head_size(world[0]) * 100
    return (f"pose error mean {pose.mean():.3f} max {pose.max():.3f} deg, "
            f"landmarks mean {lmk.mean():.3f}% max {lmk.max():.3f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--kinds", default="bfm2009,flame")
    parser.add_argument("--rigid", type=int, default=200, help="rigid-phase iterations")
    parser.add_argument("--full", type=int, default=600, help="full-phase iterations")
    args = parser.parse_args()
    # fixed iterations and step schedule (tol 0), the same for both ways
    settings = FitSettings(tol=0.0, rigid_iters=args.rigid, full_iters=args.full, device=args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}; "
          f"{args.frames} frames x 16 views, {settings.rigid_iters} + {settings.full_iters} iterations per fit")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.kinds.split(","):
            counts = {"n_id": 50, "n_exp": 30} if kind == "flame" else {}
            path, lmk_path, truth = make_model_files(os.path.join(tmp, kind), kind)
            model = load_morphable_model(kind, path, landmarks_path=lmk_path, device=args.device, **counts)
            world, R, K, E, uv, conf = scene(model, truth, args.frames)
            subject = fit_model(model, uv[:8], conf[:8], K, E, FitSettings(device=args.device))  # identity, scale
            common = dict(identity=subject.identity, scale=subject.scale)
            fit_model(model, uv[:1], conf[:1], K, E, FitSettings(rigid_iters=5, full_iters=5, device=args.device),
                      **common)  # warm-up
            t0 = time.perf_counter()
            batched = fit_model(model, uv, conf, K, E, settings, **common)
            t_batched = time.perf_counter() - t0
            t0 = time.perf_counter()
            single = [fit_model(model, uv[t:t + 1], conf[t:t + 1], K, E, settings, **common)
                      for t in range(args.frames)]
            t_single = time.perf_counter() - t0
            per_R = np.concatenate([s.rotation for s in single])
            per_lmk = np.concatenate([s.landmarks for s in single])
            print(f"\n{kind} ({model.n_id} identity, {model.n_exp} expression coefficients)")
            print(f"  batched        {1000 * t_batched / args.frames:8.1f} ms/frame  "
                  f"{accuracy(batched.rotation, batched.landmarks, R, world)}")
            print(f"  frame by frame {1000 * t_single / args.frames:8.1f} ms/frame  "
                  f"{accuracy(per_R, per_lmk, R, world)}")
            print(f"  batched / frame-by-frame speed: {t_single / t_batched:.1f}x")


if __name__ == "__main__":
    main()
