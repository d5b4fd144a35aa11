"""The baseline on its held-out frames, measured like a GPHM avatar (model/avatar/evaluate.py): PSNR and SSIM
against the ground truth on black, the Face Distance where a face is found in both images, LPIPS with the
user's weights; and the side-by-side table of several avatars and baselines on the same held-out frames.

A GPHM avatar's image is its refined output at its output resolution; the baseline renders its Gaussians
directly at any resolution, so in a table it is rendered at the GPHM avatars' output resolution (its own
training resolution when the table has no GPHM avatar) and both are compared with the same ground truth.
It has no refinement network, so its coarse metrics are those of its one image.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import torch

from datasets.errors import UserError
from model.avatar.frames import AvatarFrames
from model.gaussianhead.fit import (
    FrameData,
    baseline_expressions,
    is_baseline,
    load_baseline,
)
from model.gaussianhead.model import GaussianHead
from model.images import to_uint8
from model.metrics import psnr, ssim


class ComparisonError(UserError, ValueError):
    """The avatars of a side-by-side table were not fitted on the same held-out frames."""


def evaluate_baseline(model: GaussianHead, payload: dict, frames: AvatarFrames, device: torch.device | str = "cpu",
                      face_distance: Callable[[np.ndarray, np.ndarray], float | None] | None = None,
                      lpips: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                      resolution: int | None = None) -> dict:
    """evaluate_avatar's metrics (the same keys) of a GaussianHead baseline at `resolution` [its own]."""
    device = torch.device(device)
    R = int(resolution or model.config.resolution)
    data = FrameData(frames, baseline_expressions(payload, frames), device)
    rows = frames.heldout if len(frames.heldout) else frames.train
    ps, ss, dists, perceptual = [], [], [], []
    with torch.no_grad():
        for r in rows:
            frame, gt = data.get(int(r), R)
            image = model(frame).image.clamp(0, 1)[None]
            ps.append(float(psnr(image, gt[None])[0]))
            ss.append(float(ssim(image, gt[None])[0]))
            if lpips is not None:
                perceptual.append(float(lpips(image, gt[None])[0]))
            if face_distance is not None:
                d = face_distance(to_uint8(image[0]), to_uint8(gt))
                if d is not None:
                    dists.append(d)
    result = {"psnr": float(np.mean(ps)), "ssim": float(np.mean(ss)), "psnr_coarse": float(np.mean(ps)),
              "ssim_coarse": float(np.mean(ss)), "frames": float(len(rows)), "resolution": float(R),
              "on": "held-out frames" if len(frames.heldout) else "training frames (no frame was held out)"}
    result["face_distance"] = float(np.mean(dists)) if dists else float("nan")
    result["face_frames"] = float(len(dists))
    result["lpips"] = float(np.mean(perceptual)) if perceptual else float("nan")
    return result


def _label(payload: dict) -> str:
    c = payload["config"]
    if not c["use_triplane"]:
        return "GaussianHead w/o tri-plane"
    return {"per_gaussian": "GaussianHead", "global": "GaussianHead global rotation",
            "none": "GaussianHead w/o derivation"}[c["derivation"]]


def compare(paths: list[str], device: torch.device | str = "cpu", face_distance=None, lpips=None) -> list[dict]:
    """One row per avatar directory (GPHM avatar or GaussianHead baseline): its metrics on the held-out frames
    they all share, with {name, method, iterations, seconds}. Refused when the frames differ."""
    from model.avatar.evaluate import evaluate_avatar
    from model.avatar.fit import load_avatar

    loaded = []
    for path in paths:
        if is_baseline(path):
            model, payload = load_baseline(path, device)
            loaded.append(("baseline", path, model, payload))
        else:
            model, payload = load_avatar(path, device)
            loaded.append(("avatar", path, model, payload))
    first = loaded[0][3]["frames"]
    for _, path, _, payload in loaded[1:]:
        if payload["frames"] != first:
            raise ComparisonError(f"{path} was fitted on other frames than {paths[0]} (store, clip, view or holdout "
                                  "differ): a table compares avatars of the same held-out frames")
    frames = AvatarFrames.of_avatar(first)
    gphm = [m.config.output_resolution for kind, _, m, _ in loaded if kind == "avatar"]
    rows = []
    for kind, path, model, payload in loaded:
        if kind == "avatar":
            metrics = evaluate_avatar(model, frames, device, face_distance, lpips)
            metrics["resolution"] = float(model.config.output_resolution)
            method = "GPHM avatar" + ("" if payload["source"]["prior"] else " (no prior)")
            iterations = sum(payload["iterations"].values())
        else:
            metrics = evaluate_baseline(model, payload, frames, device, face_distance, lpips,
                                        gphm[0] if gphm else None)
            method, iterations = _label(payload), payload["iterations"]["train"]
        rows.append({"name": path, "method": method, "iterations": iterations, "seconds": payload["seconds"],
                     **metrics})
    return rows


def format_table(rows: list[dict]) -> str:
    """The rows as a fixed-width text table."""
    head = f"{'avatar':28s} {'method':30s} {'iters':>6s} {'sec':>7s} {'res':>4s} {'PSNR':>6s} {'SSIM':>6s} " \
           f"{'FaceD':>6s} {'LPIPS':>6s}"
    lines = [head, "-" * len(head)]
    for r in rows:
        face = f"{r['face_distance']:6.3f}" if r["face_frames"] else f"{'n/a':>6s}"
        lp = f"{r['lpips']:6.3f}" if np.isfinite(r["lpips"]) else f"{'n/a':>6s}"
        lines.append(f"{os.path.basename(str(r['name']).rstrip('/'))[-28:]:28s} {r['method'][:30]:30s} {int(r['iterations']):6d} "
                     f"{float(r['seconds']):7.1f} {int(r['resolution']):4d} {r['psnr']:6.2f} {r['ssim']:6.3f} "
                     f"{face} {lp}")
    if rows:
        lines.append(f"({rows[0]['on']}: {int(rows[0]['frames'])})")
    return "\n".join(lines)


__all__ = ["ComparisonError", "compare", "evaluate_baseline", "format_table"]
