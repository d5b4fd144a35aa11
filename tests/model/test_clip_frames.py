"""clip_frames (render's driving and subject frames) through the manifest's clip index: the same frames
and samples as streaming the split and filtering it, while opening only the clip's shards."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

from datasets.capture.coloured_store import decode_colour, make_store
from datasets.shards.build import BuildOptions, build_shards
from datasets.shards.reader import ShardReader
from datasets.shards.storage import ShardStorage
from model.guiding.config import preset
from model.showcase.conditions import clip_frames, indexed_samples, streamed_samples
from model.train.frames import FrameTable


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip_frames")
    make_store(str(root / "store.zarr"), subjects=4, frames=4, views=3)
    out = str(root / "shards")
    build_shards(BuildOptions([str(root / "store.zarr")], out, shard_rows=2, val_subjects="0"))
    return out


def _old_manifest(shards: str, out: str) -> str:
    """A copy whose manifest has no clip index (built before it)."""
    shutil.copytree(shards, out)
    path = os.path.join(out, "manifest.json")
    with open(path) as f:
        doc = json.load(f)
    doc.pop("clip_index")
    with open(path, "w") as f:
        json.dump(doc, f)
    return out


def _fetched_shards(monkeypatch) -> set[tuple[str, int]]:
    """Fills with the (split, shard) of every shard object a ShardStorage hands out meanwhile."""
    seen: set[tuple[str, int]] = set()
    original = ShardStorage.local_path

    def recording(self, key, *args, **kwargs):
        manifest = self.manifest()
        for split in manifest.splits:
            for entry in manifest.shards(split):
                keys = [o["key"] for o in entry["objects"].values()] + [entry.get("pack", {}).get("key")]
                if key in keys:
                    seen.add((split, entry["index"]))
        return original(self, key, *args, **kwargs)

    monkeypatch.setattr(ShardStorage, "local_path", recording)
    return seen


def _same(a: dict[int, dict], b: dict[int, dict]) -> None:
    assert a.keys() == b.keys() and a
    for t, sample in a.items():
        for key, value in sample.items():  # the index path makes the sample fields; the stream adds epoch, ...
            np.testing.assert_array_equal(value, b[t][key], err_msg=f"frame {t} {key}")


@pytest.mark.parametrize("limit, frame_ids", [(0, None), (2, None), (0, [3, 1])])
def test_indexed_samples_equal_the_streamed_ones(shards, limit, frame_ids):
    reader = ShardReader(shards)
    for clip in range(len(reader.manifest.doc["clips"])):
        streamed = streamed_samples(shards, clip, limit, frame_ids)
        indexed = indexed_samples(reader, reader.manifest.clip_rows(clip), limit, frame_ids)
        _same(indexed, streamed)
        for t, sample in indexed.items():  # and they are that clip's frames
            subject, frame, _, kind = decode_colour(sample["rgb"][0])
            assert (int(sample["clip"]), int(sample["frame"]), frame, kind) == (clip, t, t, 0)
            assert reader.manifest.doc["clips"][clip]["identity"] == f"nersemble/{subject:03d}"


def test_clip_frames_reads_only_the_clips_shards(shards, tmp_path, monkeypatch):
    reader = ShardReader(shards)
    m = reader.manifest
    config, frames = preset("tiny"), FrameTable(m.doc["clips"])
    clip = 2
    theirs = {(r.split, r.shard) for r in m.clip_rows(clip)}
    everything = {("train", k) for k in range(len(m.shards("train")))}
    assert theirs < everything  # the rows are shuffled, yet a clip of 4 frames lies in at most 4 of 8 shards

    seen = _fetched_shards(monkeypatch)
    new = clip_frames(shards, clip, config, frames)
    assert seen == theirs
    print(f"render of one clip: shards opened with the clip index {len(seen)}, ", end="")

    old_url = _old_manifest(shards, str(tmp_path / "old"))
    seen.clear()
    old = clip_frames(old_url, clip, config, frames)
    print(f"scanning the split {len(seen)} of {len(everything)}")
    assert seen == everything  # the fallback scans the split
    assert new.clip == old.clip == m.doc["clips"][clip]["clip"]
    for field in ("condition", "non_face", "rows"):
        assert torch.equal(getattr(new, field), getattr(old, field)), field
    np.testing.assert_array_equal(new.crops, old.crops)
    assert len(new.rows) == 4


def test_clip_frames_errors_name_the_missing_frames(shards):
    m = ShardReader(shards).manifest
    config, frames = preset("tiny"), FrameTable(m.doc["clips"])
    with pytest.raises(Exception, match=r"has no frames \[9\]"):
        clip_frames(shards, 1, config, frames, frame_ids=[1, 9])
