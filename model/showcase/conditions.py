"""What drives a trained model outside training: a subject's or a driving clip's frames from a shard set,
as the encoders' inputs (expression-condition face crop, non-face image) and the per-frame table row.

A clip's frames are found through the manifest's clip index (datasets/shards/manifest.py), so only the
shards holding them are opened; a manifest from before the index is scanned split-wide as it used to be.
Either way a frame gives the same sample: the one the unshuffled stream of its split (seed 0, epoch 0,
one view, no synthesized conditions) makes at that frame's position.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from datasets.shards.manifest import ClipRow, Manifest
from datasets.shards.order import epoch_key
from datasets.shards.reader import ShardReader
from datasets.shards.samples import stage1_sample
from datasets.streaming import SALT_SAMPLE, ShardDataset
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


def streamed_samples(url: str, clip: int, limit: int = 0, frame_ids: list[int] | None = None,
                     storage_options: dict | None = None) -> dict[int, dict[str, np.ndarray]]:
    """{frame: sample} of clip number `clip` by streaming the whole training split and keeping that clip's
    rows (the first `limit` in stream order, or those of `frame_ids`): for manifests without a clip index."""
    data = ShardDataset(url, split="train", sample="stage1", use="all", views=1, synth_ratio=0.0, seed=0,
                        shuffle=False, batch_size=1, drop_last=False, repeat=False,
                        storage_options=storage_options or None)
    picked: dict[int, dict[str, np.ndarray]] = {}
    for sample in data:
        if int(sample["clip"][0]) != clip:
            continue
        t = int(sample["frame"][0])
        if (frame_ids is None or t in frame_ids) and t not in picked:
            picked[t] = {k: v[0].numpy() for k, v in sample.items()}
        if (limit and len(picked) >= limit) or (frame_ids is not None and len(picked) == len(set(frame_ids))):
            break
    return picked


def _chosen(located: list[ClipRow], limit: int, frame_ids: list[int] | None) -> list[ClipRow]:
    """The rows the streamed path would keep: the first `limit` in stream order (split, shard, row), or
    those of `frame_ids`, or all."""
    if frame_ids is not None:
        wanted = set(frame_ids)
        return [r for r in located if r.frame in wanted]
    in_stream_order = sorted(located, key=lambda r: (r.split, r.shard, r.row))  # a clip lies in one split
    return in_stream_order[:limit] if limit else in_stream_order


def indexed_samples(reader: ShardReader, located: list[ClipRow], limit: int = 0,
                    frame_ids: list[int] | None = None) -> dict[int, dict[str, np.ndarray]]:
    """{frame: sample} of one clip's rows (`Manifest.clip_rows`), opening only their shards; each sample is
    the one the unshuffled stream of its split makes at the row's position."""
    offsets = {}  # split -> [n_shards] stream position of each shard's first stage-1 sample
    picked: dict[int, dict[str, np.ndarray]] = {}
    for r in _chosen(located, limit, frame_ids):
        if r.split not in offsets:
            counts = [s["counts"]["all"]["rows"] for s in reader.manifest.shards(r.split)]
            offsets[r.split] = np.concatenate([[0], np.cumsum(counts)])
        shard = reader.shard(r.split, r.shard)
        items = shard.items("stage1", "all")  # [n] rows of the shard in stream order
        i = int(np.searchsorted(items, r.row))
        if i == len(items) or items[i] != r.row or r.frame in picked:
            continue  # a row without a view (the stream skips it too)
        position = int(offsets[r.split][r.shard]) + i
        rng = np.random.default_rng([0, *epoch_key(0), position, SALT_SAMPLE])  # as ShardDataset.fetch
        picked[r.frame] = stage1_sample(shard, r.row, "all", 1, rng, reader.manifest.layout, 0.0)
    return picked


def clip_frames(url: str, clip: int, config: GuidingConfig, frames: FrameTable, limit: int = 0,
                frame_ids: list[int] | None = None, storage_options: dict | None = None,
                reader: ShardReader | None = None) -> DrivingFrames:
    """The frames of clip number `clip` in order (the first `limit` in the shard set's stream order, or
    those of `frame_ids`: store frame indices), reading one view per frame with the face crop of a view of
    the same frame. `reader`: an open reader of `url` to reuse (its open shards stay open)."""
    reader = reader or ShardReader(url, storage_options=storage_options or None)
    located = reader.manifest.clip_rows(clip)
    if located is None:  # a manifest from before the clip index
        picked = streamed_samples(url, clip, limit, frame_ids, storage_options)
    else:
        picked = indexed_samples(reader, located, limit, frame_ids)
    if not picked:
        raise ShardSetError(f"clip {clip} has no readable frames in {url}")
    order = frame_ids if frame_ids is not None else sorted(picked)
    missing = [t for t in order if t not in picked]
    if missing:
        raise ShardSetError(f"clip {clip} has no frames {missing} in {url}")
    samples = [picked[t] for t in order]
    crops = np.stack([s["condition"] for s in samples])  # [T, C, C, 3] uint8
    non_face = np.stack([s["non_face"] for s in samples])  # [T, R, R, 3] uint8
    rows = frames.index(torch.tensor([clip] * len(order)), torch.tensor(order))
    name = reader.manifest.doc["clips"][clip]["clip"]
    return DrivingFrames(_tensor(crops, config.encoder_input), _tensor(non_face, config.encoder_input), rows,
                         crops, name)
