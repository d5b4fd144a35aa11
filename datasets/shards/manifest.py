"""The shard set's manifest (manifest.json at its root) and the digests that guard its objects.

    {"format": "headforge-shards", "schema_version": 1, "digest": "sha256",
     "layout":  {"views": V, "resolution": R, "crop": C, "synth": S, "expression": E},
     "arrays":  {name: {"kind": "image" | "raw", "row_shape": [...], "dtype": ..., "codec": {...}}},
     "clips":   [{"source": i, "clip": "001/EXP-1", "identity": "nersemble/001", "views": [...], ...}],
     "splits":  {"train": {"rows": N, "subjects": [...], "counts": {use: {"rows": n, "views": n}},
                           "shards": [{"index": k, "rows": r, "counts": {...},
                                       "objects": {name: {"key": ..., "bytes": n, "sha256": ...}},
                                       "pack": {"key": ..., "bytes": n, "sha256": ...,
                                                "arrays": {name: [offset, nbytes]}}}]}},
     "clip_index": {split: {"<clip number>": {"frames": [n], "shards": [n], "rows": [n]}}},
     "sources": [{"url": ..., "created": ..., "stages": {...}, "sources": [...licences...]}],
     "options": {...build options...}, "software": {...}, "created": ...}

`counts[use]` counts the samples of each kind of use ("train": the views kept for training, "heldout":
held-out views and frames, "all"): "rows" frames with at least one such view (stage-1 samples), "views"
(frame, view) pairs (stage-2 samples). Readers take epoch lengths from here without opening a shard.

`pack` (datasets/shards/pack.py): the shard's raw arrays in one object, so a remote reader fetches them
with one request; `objects` still lists each of them, and plain zarr reads those.

`clip_index`: for every clip of a split, its frames (store frame indices, ascending) and, at the same
positions, the shard and the row in it that holds each frame; every row of every shard appears once.
A reader of one clip (`render`) opens only that clip's shards (`Manifest.clip_rows`).

Both are later additions that older readers ignore, so the schema version stays 1; a manifest without
them (built before) is read as before: per-array objects, and a clip found by scanning its split.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from datasets.errors import UserError

FORMAT = "headforge-shards"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
USES = ("train", "heldout", "all")


class ManifestError(UserError, ValueError):
    """No manifest, or one this software cannot read."""


class ClipRow(NamedTuple):
    """Where one frame of a clip lies in a shard set."""

    split: str
    shard: int
    row: int  # row inside the shard
    frame: int  # store frame index (a sample's `frame`)


def digest(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def use_mask(view_ok: np.ndarray, heldout: np.ndarray, use: str) -> np.ndarray:
    """bool [..., V]: the views a sample of kind `use` may show (view_ok bool [..., V], heldout bool [..., V])."""
    if use == "train":
        return view_ok & ~heldout
    if use == "heldout":
        return view_ok & heldout
    if use == "all":
        return view_ok.copy()
    raise ValueError(f"use must be one of {USES}, got {use!r}")


def count_samples(view_ok: np.ndarray, heldout: np.ndarray) -> dict[str, dict[str, int]]:
    out = {}
    for use in USES:
        mask = use_mask(view_ok, heldout, use)
        out[use] = {"rows": int(mask.any(axis=-1).sum()), "views": int(mask.sum())}
    return out


@dataclass
class Manifest:
    doc: dict[str, Any]

    @staticmethod
    def parse(text: bytes | str, where: str) -> Manifest:
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise ManifestError(f"{where}: the manifest is not valid JSON ({exc})") from None
        if doc.get("format") != FORMAT:
            raise ManifestError(f"{where}: not a headforge shard set manifest")
        if doc.get("schema_version") != SCHEMA_VERSION:
            raise ManifestError(f"{where}: shard set schema version {doc.get('schema_version')!r}; this software "
                                f"reads version {SCHEMA_VERSION}. Rebuild the shards with this version.")
        return Manifest(doc)

    def dumps(self) -> bytes:
        return json.dumps(self.doc, indent=1, sort_keys=True).encode()

    @property
    def splits(self) -> list[str]:
        return list(self.doc["splits"])

    def split(self, name: str) -> dict[str, Any]:
        if name not in self.doc["splits"]:
            raise ManifestError(f"no split {name!r} in this shard set (it has {self.splits})")
        return self.doc["splits"][name]

    def shards(self, split: str) -> list[dict[str, Any]]:
        return self.split(split)["shards"]

    @property
    def arrays(self) -> dict[str, dict[str, Any]]:
        return self.doc["arrays"]

    @property
    def layout(self) -> dict[str, int]:
        return self.doc["layout"]

    @property
    def shard_rows(self) -> int:
        return int(self.doc["options"]["shard_rows"])

    @property
    def has_clip_index(self) -> bool:
        return "clip_index" in self.doc

    def clip_rows(self, clip: int) -> list[ClipRow] | None:
        """Every frame of clip number `clip` (index in `clips`) with its split, shard and row, by split then
        frame; None when the manifest predates the clip index (find the clip by scanning its split)."""
        if not self.has_clip_index:
            return None
        out = []
        for split, clips in self.doc["clip_index"].items():
            entry = clips.get(str(int(clip)))
            if entry is None:
                continue
            out.extend(ClipRow(split, int(k), int(r), int(t))
                       for t, k, r in zip(entry["frames"], entry["shards"], entry["rows"], strict=True))
        return out

    def identity(self) -> str:
        """A short digest of the content (object digests), for checkpoints to recognise their data."""
        parts = [f"{s}:{sh['index']}:{o['sha256']}" for s in self.splits for sh in self.shards(s)
                 for o in sh["objects"].values()]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
