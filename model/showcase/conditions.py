"""What drives a trained model outside training: a subject's or a driving clip's frames from a shard set,
as the encoders' inputs (expression-condition face crop, non-face image) and the per-frame table row."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from datasets.shards.manifest import Manifest
from datasets.streaming import ShardDataset
from model.guiding.config import GuidingConfig
from model.images import resize_images
from model.train.data import ShardSetError
from model.train.frames import FrameTable


@dataclass
class DrivingFrames:
    condition: Tensor  # [T, 3, S, S] face crops in [0, 1] at the encoder size
    non_face: Tensor  # [T, 3, S, S] non-face images in [0, 1]
    rows: Tensor  # [T] rows of the per-frame table
    crops: np.ndarray  # [T, s, s, 3] uint8 face crops as stored (to show beside a render)
    clip: str


def clip_index(manifest: Manifest, name: str) -> int:
    """A clip by its name ('001/EXP-1-jawopen') or its index in the shard set's clip list."""
    clips = [c["clip"] for c in manifest.doc["clips"]]
    if name in clips:
        return clips.index(name)
    if name.isdigit() and int(name) < len(clips):
        return int(name)
    raise ShardSetError(f"no clip {name!r} in the shard set; clips: {', '.join(clips[:12])}"
                     f"{' ...' if len(clips) > 12 else ''}")


def subject_clip(manifest: Manifest, subject: str) -> int:
    """The first clip of a subject (an identity name as in the manifest)."""
    for k, clip in enumerate(manifest.doc["clips"]):
        if clip["identity"] == subject:
            return k
    names = sorted({c["identity"] for c in manifest.doc["clips"]})
    raise ShardSetError(f"no subject {subject!r} in the shard set; subjects: {', '.join(names)}")


def _tensor(images: np.ndarray, size: int) -> Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255
    return resize_images(x, size)


def clip_frames(url: str, clip: int, config: GuidingConfig, frames: FrameTable, limit: int = 0,
                frame_ids: list[int] | None = None, storage_options: dict | None = None) -> DrivingFrames:
    """The frames of clip number `clip` in order (the first `limit`, or those of `frame_ids`: store frame
    indices), reading one view per frame with the face crop of a view of the same frame."""
    data = ShardDataset(url, split="train", sample="stage1", use="all", views=1, synth_ratio=0.0, seed=0,
                        shuffle=False, batch_size=1, drop_last=False, repeat=False,
                        storage_options=storage_options or None)
    picked: dict[int, dict] = {}
    for sample in data:
        if int(sample["clip"][0]) != clip:
            continue
        t = int(sample["frame"][0])
        if (frame_ids is None or t in frame_ids) and t not in picked:
            picked[t] = sample
        if (limit and len(picked) >= limit) or (frame_ids is not None and len(picked) == len(set(frame_ids))):
            break
    if not picked:
        raise ShardSetError(f"clip {clip} has no readable frames in {url}")
    order = frame_ids if frame_ids is not None else sorted(picked)
    missing = [t for t in order if t not in picked]
    if missing:
        raise ShardSetError(f"clip {clip} has no frames {missing} in {url}")
    samples = [picked[t] for t in order]
    crops = np.concatenate([s["condition"].numpy() for s in samples])
    non_face = np.concatenate([s["non_face"].numpy() for s in samples])
    rows = frames.index(torch.tensor([clip] * len(order)), torch.tensor(order))
    name = data.manifest.doc["clips"][clip]["clip"]
    return DrivingFrames(_tensor(crops, config.encoder_input), _tensor(non_face, config.encoder_input), rows,
                         crops, name)
