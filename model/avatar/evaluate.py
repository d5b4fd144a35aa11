"""An avatar on its held-out frames (self-reenactment): PSNR and SSIM of the fine image (Psi) and of the
coarse one (no Psi, at render resolution), against the ground truth on black; and, given a face-distance
function (pipeline/backends/face_distance.py: dlib's 128-d descriptors, the paper's Table 3), its mean over
the frames where it finds a face in both images."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from model.avatar.frames import AvatarFrames
from model.avatar.model import Avatar
from model.images import to_uint8
from model.metrics import psnr, ssim


def evaluate_avatar(avatar: Avatar, frames: AvatarFrames, device: torch.device | str = "cpu",
                    face_distance: Callable[[np.ndarray, np.ndarray], float | None] | None = None,
                    lpips: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> dict:
    """Metrics over the held-out frames (the training frames when there is none, said so in 'on');
    face_distance(render, truth) of two uint8 [H, W, 3] images, None where it finds no face; lpips(a, b) of
    [B, 3, H, W] images in [0, 1] (model/nets/lpips.py, from the user's weight files)."""
    rows = frames.heldout if len(frames.heldout) else frames.train
    fine_p, fine_s, coarse_p, coarse_s, dists, perceptual = [], [], [], [], [], []
    with torch.no_grad():
        for r in rows:
            inputs, targets = frames.batch([int(r)], avatar.config, torch.device(device))
            out = avatar(inputs)
            fine_p.append(float(psnr(out.fine, targets.rgb)[0]))
            fine_s.append(float(ssim(out.fine, targets.rgb)[0]))
            coarse_p.append(float(psnr(out.coarse, targets.coarse_rgb)[0]))
            coarse_s.append(float(ssim(out.coarse, targets.coarse_rgb)[0]))
            if lpips is not None:
                perceptual.append(float(lpips(out.fine, targets.rgb)[0]))
            if face_distance is not None:
                d = face_distance(to_uint8(out.fine[0]), to_uint8(targets.rgb[0]))
                if d is not None:
                    dists.append(d)
    result = {"psnr": float(np.mean(fine_p)), "ssim": float(np.mean(fine_s)), "psnr_coarse": float(np.mean(coarse_p)),
              "ssim_coarse": float(np.mean(coarse_s)), "frames": float(len(rows)),
              "on": "held-out frames" if len(frames.heldout) else "training frames (no frame was held out)"}
    result["face_distance"] = float(np.mean(dists)) if dists else float("nan")
    result["face_frames"] = float(len(dists))
    result["lpips"] = float(np.mean(perceptual)) if perceptual else float("nan")
    return result
