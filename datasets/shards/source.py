"""Reading what a shard row needs out of a preprocessed store: the encoded image chunks of one (frame,
view) by byte range (never decoded), and the clip's small arrays (read once per clip and kept)."""

from __future__ import annotations

from collections import OrderedDict
from threading import Lock

import numpy as np
import zarr
from zarr.abc.store import RangeByteRequest, SuffixByteRequest

from datasets import zarr_keys
from datasets.schema import SHARDS, STORE
from datasets.shards import zarr_shard
from datasets.store import Store, StoreError, frame_intrinsics

# store array -> shard array: the small per-frame arrays a row carries, read from the store as they are
# (the cameras, the synthesized images' flags and the expression are read apart below)
SMALL_FRAME_ARRAYS = {spec.source: name for name, spec in SHARDS.items()
                      if spec.kind == "raw" and spec.source in STORE and STORE[spec.source].kind == "frame"
                      and spec.source not in ("cameras/K_frames", "synth_ok", "fit/expression")}


class SourceStore:
    """One store opened read-only, with the shard indexes it has read (bounded LRU)."""

    def __init__(self, url: str, storage_options: dict | None = None, index_cache: int = 4096):
        self.store = Store(url, storage_options, mode="r")
        self.url = url
        self._indexes: OrderedDict[str, np.ndarray] = OrderedDict()
        self._index_cache = index_cache
        self._clips: dict[str, dict[str, np.ndarray]] = {}
        self._arrays: dict[tuple[str, str], zarr.Array] = {}
        self._lock = Lock()

    def array(self, clip: str, name: str) -> zarr.Array:
        key = (clip, name)
        if key not in self._arrays:
            array = self.store.clip(clip)[name]
            if array.shards is not None:
                zarr_shard.check_default_sharding(array)
            self._arrays[key] = array
        return self._arrays[key]

    def _get(self, key: str, byte_range=None) -> bytes | None:  # noqa: ANN001
        return zarr_keys.get_bytes(self.store.zstore, key, byte_range)

    def image_chunk(self, clip: str, name: str, t: int, v: int) -> bytes | None:
        """The encoded image of frame t, view (or synth slot) v of array `name`; None when absent."""
        array = self.array(clip, name)
        if array.shards is None:
            raise StoreError(f"{self.url}/{clip}/{name} is not sharded per frame block; cannot copy its images")
        per_shard = zarr_shard.chunks_per_shard(array)
        block, within = divmod(t, per_shard[0])
        shard_key = f"{array.path}/{array.metadata.encode_chunk_key((block,) + (0,) * (array.ndim - 1))}"
        n_chunks = int(np.prod(per_shard))
        with self._lock:
            index = self._indexes.get(shard_key)
            if index is not None:
                self._indexes.move_to_end(shard_key)
        if index is None:
            tail = self._get(shard_key, SuffixByteRequest(zarr_shard.index_nbytes(n_chunks)))
            if tail is None:
                return None  # the whole block is empty (never written)
            index = zarr_shard.parse_index(tail, n_chunks, where=f"{self.url}/{shard_key}")
            with self._lock:
                self._indexes[shard_key] = index
                while len(self._indexes) > self._index_cache:
                    self._indexes.popitem(last=False)
        where = zarr_shard.chunk_slice(index, within * per_shard[1] + v)
        if where is None:
            return None
        offset, nbytes = where
        data = self._get(shard_key, RangeByteRequest(offset, offset + nbytes))
        if data is None or len(data) != nbytes:
            raise StoreError(f"{self.url}/{shard_key}: shard shorter than its index says (corrupt store)")
        return data

    def clip_arrays(self, clip: str, with_synth: bool, with_expression: bool) -> dict[str, np.ndarray]:
        """Small arrays of a clip, read once: cameras, 2D/3D landmarks, pose, crops' transforms, synth flags."""
        if clip not in self._clips:
            group = self.store.clip(clip)
            out = {dst: group[src][:] for src, dst in SMALL_FRAME_ARRAYS.items()}
            out["K"] = frame_intrinsics(group).astype(np.float32)  # [T, V, 3, 3]: framing may follow the head
            out["world_to_cam"] = group["cameras/world_to_cam"][:]
            if with_synth:
                out["synth_ok"] = group["synth_ok"][:]
            if with_expression:
                out["expression"] = group["fit/expression"][:]
            self._clips[clip] = out
        return self._clips[clip]
