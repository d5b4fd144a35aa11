"""What the trainer needs from a shard set: a check that it has stage 1's products, the training set's
landmark statistics, and streamed batches turned into model inputs at the model's resolutions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from datasets.cameras import scale_intrinsics
from datasets.errors import UserError
from datasets.schema import SHARDS, producing_stage
from datasets.shards.manifest import Manifest, use_mask
from datasets.shards.reader import ShardReader
from model.fitting.geometry import to_head_frame
from model.guiding.config import GuidingConfig
from model.guiding.model import Inputs
from model.images import resize_images
from model.train.frames import FrameTable

# the shard-set arrays stage 1 reads (what makes each: datasets/schema.py)
STAGE1_ARRAYS = ("rgb", "K", "world_to_cam", "view_ok", "alpha", "pose", "scale", "lmk3d", "face_crop", "crop_ok",
                 "face_mask", "identity", "clip", "frame", "heldout")


class ShardSetError(UserError, ValueError):
    """The shard set cannot train this stage."""


def check_stage1(manifest: Manifest, url: str, split: str = "train") -> None:
    """One clear error, before training starts, when the shard set lacks what stage 1 needs."""
    missing = [f"{name} ({producing_stage(name)} ({SHARDS[name].doc}))" for name in STAGE1_ARRAYS
               if name not in manifest.arrays]
    if missing:
        raise ShardSetError(f"{url} lacks what stage 1 needs: {', '.join(missing)}. Run those preprocessing "
                            "stages on the source stores and rebuild the shards (python cli.py build-shards).")
    if split not in manifest.splits:
        raise ShardSetError(f"{url} has no {split!r} split (it has {', '.join(manifest.splits) or 'none'})")
    if manifest.split(split)["counts"]["train"]["rows"] == 0:
        raise ShardSetError(f"the {split!r} split of {url} has no training views")


def mean_head_landmarks(reader: ShardReader, split: str = "train") -> np.ndarray:
    """[68, 3] mean fitted landmarks in the head frame over the split's frames with a training view
    (reads only the small arrays, shard by shard)."""
    total, count = np.zeros((68, 3)), 0
    for k in range(len(reader.manifest.shards(split))):
        raw = reader.raw_arrays(split, k, ["pose", "scale", "lmk3d", "view_ok", "heldout"])
        rows = use_mask(raw["view_ok"], raw["heldout"], "train").any(axis=1)
        rows &= np.isfinite(raw["lmk3d"]).all(axis=(1, 2)) & (raw["scale"] > 0)
        if rows.any():
            head = to_head_frame(raw["lmk3d"][rows], raw["pose"][rows], raw["scale"][rows])
            total += head.sum(0)
            count += int(rows.sum())
    if count == 0:
        raise ShardSetError(f"no frame of the {split!r} split has finite fitted landmarks")
    return total / count


@dataclass
class Targets:
    rgb: Tensor  # [B*V, 3, R_out, R_out] ground truth composited on black
    coarse_rgb: Tensor  # [B*V, 3, R, R] the same at render resolution
    alpha: Tensor  # [B*V, R, R] matte in [0, 1] at render resolution
    lmk3d: Tensor  # [B, L, 3] fitted world landmarks


def _images(x: Tensor) -> Tensor:
    """uint8 [..., H, W, C] -> float [N, C, H, W] in [0, 1]."""
    x = x.reshape(-1, *x.shape[-3:]) if x.dim() >= 4 else x[None]
    return x.permute(0, 3, 1, 2).float() / 255


def prepare_batch(batch: dict[str, Tensor], config: GuidingConfig, frames: FrameTable, device: torch.device
                  ) -> tuple[Inputs, Targets]:
    """A streamed stage-1 batch (rgb [B, V, H, W, 3] uint8, ...) -> model inputs and targets on `device`."""
    rgb = batch["rgb"].to(device)
    B, V, H = rgb.shape[:3]
    image = _images(rgb)  # [B*V, 3, H, H]
    alpha = batch["alpha"].to(device).reshape(B * V, 1, H, H).float() / 255
    gt = image * alpha
    R, R_out = config.render_resolution, config.output_resolution
    inputs = Inputs(
        identity=batch["identity"].long().to(device),
        frame_rows=frames.index(batch["clip"], batch["frame"]).to(device),
        condition=resize_images(_images(batch["condition"].to(device)), config.encoder_input),
        non_face=resize_images(_images(batch["non_face"].to(device)), config.encoder_input),
        pose=batch["pose"].float().to(device), scale=batch["scale"].float().to(device),
        K=scale_intrinsics(batch["K"].float().to(device), R / H), world_to_cam=batch["world_to_cam"].float().to(device))
    targets = Targets(rgb=resize_images(gt, R_out), coarse_rgb=resize_images(gt, R),
                      alpha=resize_images(alpha, R)[:, 0], lmk3d=batch["lmk3d"].float().to(device))
    return inputs, targets


def as_views(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """A stage-2 batch (one view per sample) in the stage-1 layout with a views axis of 1."""
    per_view = ("rgb", "alpha", "K", "world_to_cam", "lmk2d", "view")
    return {k: (v[:, None] if k in per_view else v) for k, v in batch.items()}
