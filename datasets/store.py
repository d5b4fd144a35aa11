"""The preprocessed store: one Zarr v3 hierarchy per dataset, at a local path or any fsspec URL.

    <root>/                       attrs: schema version, software versions, source, stage records
      <subject>/<sequence>/       one group per clip; attrs: views, frame ids, block size, ...
        rgb        uint8 [T, V, H, W, 3]   one image per chunk, one shard per frame block
        rgb_ok     bool  [T, V]            the item exists (decoded without error)
        background uint8 [V, H, W, 3]      background plates with the same crop/resize (when present)
        cameras/K, cameras/world_to_cam    float32 [V, 3, 3], [V, 4, 4] after crop/resize
      _meta/markers/<stage>/<subject>/<sequence>/b<block>   completion markers (group attributes)
      _meta/ledger/<stage>/<subject>/<sequence>/b<block>    per-item failures of that block
      _meta/ledger/<stage>/_plan                            failures found while planning
      _meta/summary/<subject>/<sequence>                    the driver's cache of the two above (below)

Every node, markers and ledger entries included, is a Zarr group or array, so plain zarr can browse it.
Writers never share an object: a frame-block task writes its own shards, marker and ledger entry; the
driver alone writes group metadata, root attributes and summaries.

Summaries. Reading a clip's markers one object each costs a request per block, which on object storage
makes planning (and build-shards) slow. So the driver keeps one summary object per clip: for every stage,
each marker and block ledger entry it has read, with the version token the listing gave for that object
(an etag, a generation, a file's mtime/size/inode). Reading the markers of (stage, clip) is then one
recursive listing of its marker folder (it gives every object's token, in one request per 1000 objects)
plus the summary (once per clip): an object whose listed token equals the summary's is taken from the
summary, any other is read. The markers stay the truth and the summary only a cache, so it cannot give a
wrong answer: a marker written or rewritten after the summary has another token and is read; a deleted
one is not listed and is gone; a summary that is missing, cut short or of another version counts as
empty. Tokens are recorded from a listing made before the reads, so an object rewritten between the two
is read again next time rather than trusted. A backend whose listings carry no token never uses the
summary. Only the driver (the preprocess runner) writes summaries, after planning and after each
(stage, clip) finishes, so workers still never share an object; a store written before summaries
existed is simply read marker by marker once, and summarised by the next run's planning.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import zarr

from datasets import image_codec, zarr_keys
from datasets.errors import UserError
from datasets.names import clip_key, split_clip_key, validate_name
from datasets.urls import is_remote, local_path

SCHEMA_VERSION = 1
META = "_meta"
SUMMARY_VERSION = 1
_BLOCK_ATTRIBUTE = {"markers": "marker", "ledger": "items"}  # what a block object of each kind holds


class StoreError(UserError, RuntimeError):
    """The store is missing, from another schema version, or inconsistent with the request."""


@dataclass
class LedgerItem:
    """One failed item: a (frame, view) of a clip, a whole view (frame None) or a whole clip."""

    stage: str
    clip: str
    reason: str
    frame: int | None = None  # original frame id in the raw capture
    view: str | None = None  # camera serial
    block: int | None = None
    kind: str = "item"  # "item": recorded, the run goes on; "task": a task crashed after its retries

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "LedgerItem":
        return LedgerItem(**{k: d.get(k) for k in LedgerItem.__dataclass_fields__ if k in d})


@dataclass
class Marker:
    """Completion record of one (stage, clip, block)."""

    stage: str
    clip: str
    block: int
    fingerprint: str  # the stage's config fingerprint combined with the clip's identity
    stage_fingerprint: str = ""  # the stage's config fingerprint alone (checked by downstream stages)
    frames: list[int] = field(default_factory=list)  # [t_start, t_end) in store frames
    failed_items: int = 0
    seconds: float = 0.0
    finished: str = ""


def fingerprint(payload: Any) -> str:
    """Stable short digest of a JSON-serialisable payload (stage config + version + upstream)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def open_zarr_store(url: str, storage_options: dict | None = None, read_only: bool = False):
    if is_remote(url):
        return zarr.storage.FsspecStore.from_url(url, storage_options=storage_options or {}, read_only=read_only)
    return zarr.storage.LocalStore(local_path(url), read_only=read_only)


def _group_doc(attributes: dict[str, Any], indent: int | None = 1) -> bytes:
    separators = None if indent else (",", ":")
    return json.dumps({"zarr_format": 3, "node_type": "group", "attributes": attributes}, indent=indent,
                      separators=separators).encode()


class Store:
    """Handle on one preprocessed store. Cheap to create; workers open their own by URL."""

    def __init__(self, url: str, storage_options: dict | None = None, *, mode: str = "a"):
        self.url = url
        self.storage_options = dict(storage_options or {})
        self.read_only = mode == "r"
        self.zstore = open_zarr_store(url, storage_options, read_only=self.read_only)
        exists = zarr_keys.exists(self.zstore, "zarr.json")
        if mode == "r" and not exists:
            raise StoreError(f"no store at {url} (expected a Zarr v3 group with zarr.json)")
        if mode == "w-" and exists:
            raise StoreError(f"a store already exists at {url}")
        if not exists:
            root = zarr.open_group(self.zstore, mode="a", zarr_format=3)
            root.attrs.update({"schema_version": SCHEMA_VERSION, "created": now_iso(), "stages": {}})
            zarr_keys.set_bytes(self.zstore, f"{META}/zarr.json", _group_doc({"description": "markers and ledger"}))
        self.root = zarr.open_group(self.zstore, mode="r" if self.read_only else "r+", zarr_format=3)
        # clip -> {stage: {"markers"|"ledger": {block name: [token, attribute]}}}: summaries as read or
        # updated by this handle; `_changed`: clips whose summary differs from the stored one
        self._summaries: dict[str, dict[str, dict[str, dict[str, list]]]] = {}
        self._changed: set[str] = set()
        self._summary_groups: set[str] = set()
        version = self.root.attrs.get("schema_version")
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"store {url} has schema version {version!r}; this software reads version {SCHEMA_VERSION}. "
                "Preprocess into a new store, or use the software version that wrote it."
            )

    # ------------------------------------------------------------------ raw key access
    def _get_json(self, key: str) -> dict | None:
        return zarr_keys.get_json(self.zstore, key)

    def _list_dir(self, prefix: str) -> list[str]:
        return zarr_keys.list_dir(self.zstore, prefix)

    def _ensure_groups(self, path: str) -> None:
        """Create zarr.json for every group on `path` that lacks one (driver side)."""
        parts = path.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            zarr_keys.set_bytes(self.zstore, "/".join(parts[:i]) + "/zarr.json", _group_doc({}), if_absent=True)

    def _write_group_attrs(self, path: str, attributes: dict[str, Any]) -> None:
        zarr_keys.set_bytes(self.zstore, f"{path}/zarr.json", _group_doc(attributes))

    def _delete(self, key: str) -> None:
        zarr_keys.delete(self.zstore, key)

    # ------------------------------------------------------------------ root attributes
    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self.root.attrs)

    def update_attrs(self, **values: Any) -> None:
        self.root.attrs.update(values)

    def stage_record(self, stage: str) -> dict | None:
        return (self.root.attrs.get("stages") or {}).get(stage)

    def set_stage_record(self, stage: str, record: dict[str, Any]) -> None:
        stages = dict(self.root.attrs.get("stages") or {})
        stages[stage] = record
        self.root.attrs["stages"] = stages

    # ------------------------------------------------------------------ clips
    def clips(self) -> list[str]:
        """All clip keys 'subject/sequence' in the store, sorted."""
        out = []
        for subject in self._list_dir(""):
            if subject == META or self._get_json(f"{subject}/zarr.json") is None:
                continue
            for sequence in self._list_dir(f"{subject}/"):
                doc = self._get_json(f"{subject}/{sequence}/zarr.json")
                if doc and doc.get("node_type") == "group" and doc.get("attributes", {}).get("clip"):
                    out.append(f"{subject}/{sequence}")
        return out

    def clip(self, key: str) -> zarr.Group:
        subject, sequence = split_clip_key(key)
        try:
            return zarr.open_group(self.zstore, path=f"{subject}/{sequence}", mode="r" if self.read_only else "r+",
                                   zarr_format=3)  # (without it zarr also looks for v2 metadata: 3 requests)
        except FileNotFoundError:
            raise StoreError(f"clip {key} is not in store {self.url}") from None

    def create_clip(self, subject: str, sequence: str, attributes: dict[str, Any]) -> zarr.Group:
        key = clip_key(subject, sequence)
        group = self.root.require_group(key)
        group.attrs.update({"clip": key, **attributes})
        return group

    # ------------------------------------------------------------------ arrays
    @staticmethod
    def create_frame_array(
        group: zarr.Group,
        name: str,
        shape: tuple[int, ...],
        dtype: str,
        block_frames: int,
        *,
        image_format: str | None = None,
        jpeg_quality: int = 95,
        attributes: dict | None = None,
    ) -> zarr.Array:
        """A frames-first array [T, V, ...] sharded on frame blocks (one shard = one block, all views).

        With `image_format`, each chunk is one image (chunk (1, 1, H, W[, 3])) encoded by the image
        codec; otherwise the whole block is one chunk, compressed with zstd.
        """
        if image_format is not None:
            chunks = (1, 1) + tuple(shape[2:])
            shards = (block_frames,) + tuple(shape[1:])
            return group.create_array(
                name, shape=shape, dtype=dtype, chunks=chunks, shards=shards,
                serializer=image_codec.ImageCodec(format=image_format, quality=jpeg_quality),
                compressors=None, filters=None, fill_value=0, attributes=attributes or {},
            )
        chunks = (block_frames,) + tuple(shape[1:])
        return group.create_array(
            name, shape=shape, dtype=dtype, chunks=chunks, fill_value=0, attributes=attributes or {},
        )

    @staticmethod
    def create_view_array(group: zarr.Group, name: str, shape: tuple[int, ...], dtype: str, *,
                          image_format: str | None = None, jpeg_quality: int = 95) -> zarr.Array:
        """A small per-clip array indexed by view [V, ...]: one image per chunk, or a single chunk."""
        if image_format is not None:
            return group.create_array(
                name, shape=shape, dtype=dtype, chunks=(1,) + tuple(shape[1:]),
                serializer=image_codec.ImageCodec(format=image_format, quality=jpeg_quality),
                compressors=None, filters=None, fill_value=0,
            )
        return group.create_array(name, shape=shape, dtype=dtype, chunks=shape, fill_value=0)

    def ensure_frame_array(self, group: zarr.Group, name: str, shape: tuple[int, ...], dtype: str, block_frames: int,
                           *, image_format: str | None = None, jpeg_quality: int = 95) -> zarr.Array:
        """The frame array `name`, created (or replaced) unless one of this shape and encoding exists."""
        if name in group and array_matches(group[name], shape, dtype, image_format, jpeg_quality, block_frames):
            return group[name]
        if name in group:
            del group[name]
        return self.create_frame_array(group, name, shape, dtype, block_frames, image_format=image_format,
                                       jpeg_quality=jpeg_quality)

    def ensure_view_array(self, group: zarr.Group, name: str, shape: tuple[int, ...], dtype: str, *,
                          image_format: str | None = None, jpeg_quality: int = 95) -> zarr.Array:
        """Like ensure_frame_array, for a small per-clip array indexed by view."""
        if name in group and array_matches(group[name], shape, dtype, image_format, jpeg_quality):
            return group[name]
        if name in group:
            del group[name]
        return self.create_view_array(group, name, shape, dtype, image_format=image_format,
                                      jpeg_quality=jpeg_quality)

    def clear_block(self, array: zarr.Array, block: int) -> None:
        """Delete the stored object(s) of one frame block so a redo starts from nothing."""
        grid = array.metadata.chunk_grid.chunk_shape if array.shards is None else array.shards
        if grid[0] == 0:
            return
        coords = (block,) + (0,) * (array.ndim - 1)
        assert all(g == s for g, s in zip(grid[1:], array.shape[1:])), "frame arrays shard whole frames"
        key = array.metadata.encode_chunk_key(coords)
        self._delete(f"{array.path}/{key}")

    # ------------------------------------------------------------------ markers
    @staticmethod
    def _marker_prefix(stage: str, key: str) -> str:
        subject, sequence = split_clip_key(key)
        return f"{META}/markers/{validate_name(stage, 'stage')}/{subject}/{sequence}"

    def prepare_meta(self, stage: str, key: str) -> None:
        """Driver side: create the marker and ledger groups of (stage, clip) that workers write into."""
        subject, sequence = split_clip_key(key)
        self._ensure_groups(self._marker_prefix(stage, key))
        self._ensure_groups(f"{META}/ledger/{stage}/{subject}/{sequence}")

    def write_marker(self, marker: Marker) -> None:
        prefix = self._marker_prefix(marker.stage, marker.clip)
        self._write_group_attrs(f"{prefix}/b{marker.block:06d}", {"marker": asdict(marker)})

    def clear_marker(self, stage: str, key: str, block: int) -> None:
        self._delete(f"{self._marker_prefix(stage, key)}/b{block:06d}/zarr.json")
        known = ((self._summaries.get(key) or {}).get(stage) or {}).get("markers")
        if known and known.pop(f"b{block:06d}", None) is not None:  # (a listing would drop it anyway)
            self._changed.add(key)

    def marker(self, stage: str, key: str, block: int) -> Marker | None:
        """One block's marker, read from its own object (what a worker checks before redoing a block)."""
        doc = self._get_json(f"{self._marker_prefix(stage, key)}/b{block:06d}/zarr.json")
        data = (doc or {}).get("attributes", {}).get("marker")
        return Marker(**data) if data else None

    def markers(self, stage: str, key: str) -> dict[int, Marker]:
        """Every marker of (stage, clip): one listing, the clip's summary, and a read of each marker the
        summary does not vouch for (see the module's docstring)."""
        out: dict[int, Marker] = {}
        for data in self._block_objects("markers", stage, key).values():
            marker = Marker(**data)
            out[marker.block] = marker
        return out

    def stages_with_markers(self) -> list[str]:
        return [s for s in self._list_dir(f"{META}/markers/") if s != "zarr.json"]

    # ------------------------------------------------------------------ summaries
    def _block_prefix(self, kind: str, stage: str, key: str) -> str:
        if kind == "markers":
            return self._marker_prefix(stage, key)
        subject, sequence = split_clip_key(key)
        return f"{META}/ledger/{validate_name(stage, 'stage')}/{subject}/{sequence}"

    @staticmethod
    def _summary_path(key: str) -> str:
        subject, sequence = split_clip_key(key)
        return f"{META}/summary/{subject}/{sequence}"

    def _summary(self, key: str) -> dict[str, dict[str, dict[str, list]]]:
        """The clip's stored summary, read once per handle; empty when missing, unreadable or of another
        summary version (then every object is read, as for a store written before summaries)."""
        if key not in self._summaries:
            doc = self._get_json(f"{self._summary_path(key)}/zarr.json")
            data = (doc or {}).get("attributes", {}).get("summary")
            valid = isinstance(data, dict) and data.get("version") == SUMMARY_VERSION and \
                isinstance(data.get("stages"), dict)
            self._summaries[key] = data["stages"] if valid else {}
        return self._summaries[key]

    def _block_objects(self, kind: str, stage: str, key: str) -> dict[str, Any]:
        """block name -> the attribute ('marker' or 'items') of every block object of `kind` ('markers' or
        'ledger') of (stage, clip). Lists first, then reads what the summary does not vouch for, and keeps
        what it saw (with the listed tokens) as the clip's new summary."""
        prefix = self._block_prefix(kind, stage, key)
        listed = {name[:-len("/zarr.json")]: token
                  for name, token in zarr_keys.list_versions(self.zstore, prefix, "b").items()
                  if name.endswith("/zarr.json") and name.count("/") == 1}
        stages = self._summary(key)
        known = (stages.get(stage) or {}).get(kind) or {}
        out: dict[str, Any] = {}
        seen: dict[str, list] = {}
        for name, token in sorted(listed.items()):
            entry = known.get(name)
            if token is not None and isinstance(entry, list) and len(entry) == 2 and entry[0] == token:
                value = entry[1]
            else:
                doc = self._get_json(f"{prefix}/{name}/zarr.json")
                value = (doc or {}).get("attributes", {}).get(_BLOCK_ATTRIBUTE[kind])
            if value:
                out[name] = value
                if token is not None:  # (an unreadable object, or one without a token, is read every time)
                    seen[name] = [token, value]
        current = (stages.get(stage) or {}).get(kind)
        if current != seen and (seen or current is not None):  # (nothing, never recorded: left out)
            stages.setdefault(stage, {})[kind] = seen
            self._changed.add(key)
        return out

    def save_summaries(self, keys: list[str] | None = None) -> int:
        """Driver side: write the summary of each clip (of `keys`, default all) whose markers or ledger this
        handle found different from its stored summary; every stage in a written summary covers both its
        markers and its ledger. Returns how many were written. A read-only handle writes nothing."""
        if self.read_only:
            return 0
        written = 0
        for key in sorted(self._changed if keys is None else self._changed & set(keys)):
            stages = self._summaries[key]
            for stage in list(stages):
                for kind in _BLOCK_ATTRIBUTE:
                    if kind not in stages[stage]:
                        self._block_objects(kind, stage, key)
            path = self._summary_path(key)
            subject_path = path.rsplit("/", 1)[0]
            if subject_path not in self._summary_groups:
                self._ensure_groups(subject_path)
                self._summary_groups.add(subject_path)
            document = {"summary": {"version": SUMMARY_VERSION, "written": now_iso(), "stages": stages}}
            zarr_keys.set_bytes(self.zstore, f"{path}/zarr.json", _group_doc(document, indent=None))
            self._changed.discard(key)
            written += 1
        return written

    def summarise(self, keys: list[str] | None = None, stages: list[str] | None = None) -> int:
        """Driver side: bring the summaries of `keys` (default every clip) up to date for `stages` (default
        every stage with markers): list, read what changed, write. Returns how many were written."""
        keys = self.clips() if keys is None else keys
        stages = self.stages_with_markers() if stages is None else stages
        for key in keys:
            for stage in stages:
                for kind in _BLOCK_ATTRIBUTE:
                    self._block_objects(kind, stage, key)
        return self.save_summaries(keys)

    # ------------------------------------------------------------------ ledger
    def write_block_ledger(self, stage: str, key: str, block: int, items: list[LedgerItem]) -> None:
        subject, sequence = split_clip_key(key)
        path = f"{META}/ledger/{stage}/{subject}/{sequence}/b{block:06d}"
        if items:
            self._write_group_attrs(path, {"items": [asdict(i) for i in items]})
        else:
            self._delete(f"{path}/zarr.json")

    def write_plan_ledger(self, stage: str, items_by_clip: dict[str, list[LedgerItem]]) -> None:
        """Driver side. Replaces the plan entries of the clips given, keeps the others."""
        path = f"{META}/ledger/{validate_name(stage, 'stage')}/_plan"
        self._ensure_groups(f"{META}/ledger/{stage}")
        doc = self._get_json(f"{path}/zarr.json") or {}
        current = dict(doc.get("attributes", {}).get("items", {}))
        for clip, items in items_by_clip.items():
            if items:
                current[clip] = [asdict(i) for i in items]
            else:
                current.pop(clip, None)
        self._write_group_attrs(path, {"items": current})

    def block_ledger(self, stage: str, key: str) -> list[LedgerItem]:
        """The block ledger entries of (stage, clip), through the clip's summary like `markers`."""
        objects = self._block_objects("ledger", stage, key)
        return [LedgerItem.from_dict(i) for name in sorted(objects) for i in objects[name]]

    def plan_ledger(self, stage: str) -> dict[str, list[LedgerItem]]:
        """clip -> the entries planning recorded for it (one object per stage)."""
        doc = self._get_json(f"{META}/ledger/{validate_name(stage, 'stage')}/_plan/zarr.json")
        items = (doc or {}).get("attributes", {}).get("items", {})
        return {clip: [LedgerItem.from_dict(i) for i in entries] for clip, entries in items.items()}

    def ledger(self, stage: str | None = None, clip: str | None = None) -> list[LedgerItem]:
        stages = [stage] if stage else [s for s in self._list_dir(f"{META}/ledger/") if s != "zarr.json"]
        out: list[LedgerItem] = []
        for st in stages:
            for clip_name, items in self.plan_ledger(st).items():
                if clip is None or clip_name == clip:
                    out.extend(items)
            for subject in self._list_dir(f"{META}/ledger/{st}/"):
                if subject in ("_plan", "zarr.json"):
                    continue
                for sequence in self._list_dir(f"{META}/ledger/{st}/{subject}/"):
                    if sequence == "zarr.json" or (clip is not None and f"{subject}/{sequence}" != clip):
                        continue
                    out.extend(self.block_ledger(st, f"{subject}/{sequence}"))
        return out


def frame_intrinsics(group: zarr.Group, frames: np.ndarray | None = None) -> np.ndarray:
    """[T, V, 3, 3] float64 intrinsics of each stored frame (or of `frames`): cameras/K_frames where ingest
    wrote it (framing that follows the head changes them per frame), else cameras/K for every frame."""
    if "cameras" in group and "K_frames" in group["cameras"]:
        array = group["cameras/K_frames"]
        K = array[:] if frames is None else array.get_orthogonal_selection((np.asarray(frames),))
        return K.astype(np.float64)
    K = group["cameras/K"][:].astype(np.float64)
    n = int(group.attrs["n_frames"]) if frames is None else len(frames)
    return np.broadcast_to(K, (n,) + K.shape).copy()


def image_codec_config(array: zarr.Array) -> dict | None:
    """The image codec settings of an array ({'format', 'quality'}), or None for other arrays."""
    for codec in array.metadata.to_dict()["codecs"]:
        if codec["name"] == image_codec.CODEC_NAME:
            return dict(codec["configuration"])
        if codec["name"] == "sharding_indexed":
            for inner in codec["configuration"]["codecs"]:
                if inner["name"] == image_codec.CODEC_NAME:
                    return dict(inner["configuration"])
    return None


def array_matches(array: zarr.Array, shape: tuple, dtype: str, image_format: str | None, quality: int,
                  block_frames: int | None = None) -> bool:
    """Whether an existing array already has the wanted shape, dtype, image encoding and frame blocks."""
    if tuple(array.shape) != tuple(shape) or np.dtype(array.dtype) != np.dtype(dtype):
        return False
    if block_frames is not None:
        grid = array.shards or array.chunks
        if grid[0] != block_frames:
            return False
    codec = image_codec_config(array)
    if image_format is None:
        return codec is None
    return codec is not None and codec["format"] == image_format and (image_format == "png" or codec["quality"] == quality)
