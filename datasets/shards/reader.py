"""Reading rows of a shard set: a shard's small arrays at once, its images one inner chunk at a time.

Image objects are read with positioned reads (the index once, then one chunk per image), so a loader
holds the file descriptors and indexes of the few shards it is reading, never their contents; memory
does not grow with the shard set.

Opening a shard of a remote set fetches its objects whole into the local cache: the image objects and
the pack of its raw arrays (datasets/shards/pack.py; a manifest without packs: each raw array's object),
all at once on a few threads, so opening costs about one round trip instead of one per object.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numcodecs import Zstd

from datasets import image_codec
from datasets.errors import UserError
from datasets.shards import zarr_shard
from datasets.shards.manifest import Manifest, use_mask
from datasets.shards.pack import PackError, raw_array, unpack
from datasets.shards.storage import DEFAULT_CACHE_BYTES, ShardStorage

_ZSTD = Zstd()
PACK = "_pack"  # the pack's name among a shard's fetched objects
FETCH_THREADS = 8  # objects of one shard fetched at once from a remote set


class ShardCorruptError(UserError, RuntimeError):
    """A shard object's digest or size differs from the manifest."""


def file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def read_raw(path: str, spec: dict, shard_rows: int, rows: int) -> np.ndarray:
    """A raw (uncompressed, little-endian) shard object -> [rows, *row_shape]."""
    with open(path, "rb") as f:
        return raw_array(bytearray(f.read()), spec, shard_rows, rows)


def raw_objects(entry: dict, arrays: dict[str, dict]) -> dict[str, dict]:
    """What to fetch for a shard's raw arrays: its pack when it has one, else each array's object."""
    if "pack" in entry:
        return {PACK: entry["pack"]}
    return {name: obj for name, obj in entry["objects"].items() if arrays[name]["kind"] == "raw"}


def read_raws(paths: dict[str, str], entry: dict, names: list[str], arrays: dict[str, dict], shard_rows: int,
              where: str) -> dict[str, np.ndarray]:
    """The named raw arrays {name: [rows, *row_shape]} from the fetched objects (`raw_objects`)."""
    if PACK not in paths:
        return {name: read_raw(paths[name], arrays[name], shard_rows, entry["rows"]) for name in names}
    with open(paths[PACK], "rb") as f:
        data = bytearray(f.read())
    try:
        return unpack(data, entry["pack"], names, arrays, shard_rows, entry["rows"], where)
    except PackError as exc:
        raise ShardCorruptError(f"{exc}; run `python cli.py verify` on the shard set") from None


class OpenShard:
    """One shard of a split, opened for reading: raw arrays in memory, image objects by descriptor."""

    def __init__(self, reader: ShardReader, split: str, entry: dict):
        self.split, self.index, self.rows = split, entry["index"], entry["rows"]
        self._items: dict[tuple[str, str], np.ndarray] = {}
        arrays, S = reader.manifest.arrays, reader.manifest.shard_rows
        self.shapes = {name: tuple(spec["row_shape"][1:]) for name, spec in arrays.items()}
        self._images: dict[str, tuple[int, np.ndarray, int]] = {}  # name -> (fd, index [n, 2], slots)
        objects = entry["objects"]
        self.kinds: dict[str, str] = {name: arrays[name]["kind"] for name in objects}
        images = {name: obj for name, obj in objects.items() if self.kinds[name] != "raw"}
        paths = reader.fetch(split, self.index, images | raw_objects(entry, arrays))  # all at once
        self.paths: list[str] = list(paths.values())
        raw_names = [name for name in objects if self.kinds[name] == "raw"]
        self.raw: dict[str, np.ndarray] = read_raws(paths, entry, raw_names, arrays, S,
                                                    f"{reader.storage.url} {split} shard {self.index}")
        try:
            for name, obj in images.items():
                self._images[name] = self._open_image(reader, paths[name], obj, S * arrays[name]["row_shape"][0],
                                                      arrays[name]["row_shape"][0])
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _open_image(reader: ShardReader, path: str, obj: dict, n_chunks: int, slots: int
                    ) -> tuple[int, np.ndarray, int]:
        """(descriptor, chunk index uint64 [n_chunks, 2], slots) of an image object."""
        fd = os.open(path, os.O_RDONLY)
        size = zarr_shard.index_nbytes(n_chunks)
        tail = os.pread(fd, size, obj["bytes"] - size)
        try:
            index = zarr_shard.parse_index(tail, n_chunks, where=f"{reader.storage.url}/{obj['key']}")
        except zarr_shard.ShardFormatError as exc:
            os.close(fd)
            raise ShardCorruptError(f"{exc}; run `python cli.py verify {reader.storage.url}`") from None
        return fd, index, slots

    def encoded(self, name: str, row: int, slot: int) -> bytes | None:
        """The encoded image (JPEG/PNG bytes) of (row, view or synth slot); None when it was not stored."""
        fd, index, slots = self._images[name]
        where = zarr_shard.chunk_slice(index, row * slots + slot)
        if where is None:
            return None
        offset, nbytes = where
        return os.pread(fd, nbytes, offset)

    def image(self, name: str, row: int, slot: int) -> np.ndarray | None:
        """Decoded image uint8 [H, W, 3] or [H, W] of (row, view or synth slot); None when it was not stored."""
        data = self.encoded(name, row, slot)
        if data is None:
            return None
        try:
            return self.decode(name, data)
        except (ValueError, RuntimeError) as exc:
            raise ShardCorruptError(f"{self.split} shard {self.index} {name} row {row} slot {slot}: {exc}") from None

    def decode(self, name: str, data: bytes) -> np.ndarray:
        """Encoded bytes of array `name` -> uint8 [H, W, 3] or [H, W]."""
        if self.kinds[name] == "matte":
            return np.frombuffer(_ZSTD.decode(data), np.uint8).reshape(self.shapes[name])
        return image_codec.decode_image(data, 3 if len(self.shapes[name]) == 3 else 1)

    def items(self, sample: str, use: str) -> np.ndarray:
        """The samples of this shard, in canonical order: stage1 rows [n], stage2 (row, view) pairs [n, 2]."""
        if (sample, use) not in self._items:
            mask = use_mask(self.raw["view_ok"], self.raw["heldout"], use)
            self._items[(sample, use)] = np.flatnonzero(mask.any(axis=1)) if sample == "stage1" else np.argwhere(mask)
        return self._items[(sample, use)]

    def close(self) -> None:
        for fd, _, _ in self._images.values():
            os.close(fd)
        self._images.clear()


class ShardReader:
    """A shard set opened for reading, with a small LRU of open shards (per process)."""

    def __init__(self, url: str, *, storage_options: dict | None = None, cache_dir: str | None = None,
                 cache_bytes: int = DEFAULT_CACHE_BYTES, validate: bool = False, max_open: int = 8,
                 fetch_threads: int = FETCH_THREADS):
        self.storage = ShardStorage(url, storage_options, cache_dir, cache_bytes)
        self.manifest: Manifest = self.storage.manifest()
        self.validate = validate
        self.max_open = max_open
        self.fetch_threads = max(1, int(fetch_threads))  # a shard's objects fetched at once (remote sets)
        self._open: OrderedDict[tuple[str, int], OpenShard] = OrderedDict()
        self._checked: set[str] = set()
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:  # a DataLoader worker opens its own files
        state = dict(self.__dict__)
        state["_open"], state["_lock"] = OrderedDict(), None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def fetch(self, split: str, k: int, objects: dict[str, dict]) -> dict[str, str]:
        """{name: manifest object} of shard k -> {name: local path}, checked; a remote set's objects are
        fetched concurrently (each is one request), none of them evicted by the others."""
        keep = {key for s in list(self._open.values()) for key in s.paths} | {o["key"] for o in objects.values()}
        names = list(objects)

        def one(name: str) -> str:
            return self.object_path(split, k, name, objects[name], keep=keep, with_open=False)

        threads = min(self.fetch_threads, len(names)) if self.storage.remote else 1
        if threads <= 1:
            return {name: one(name) for name in names}
        with ThreadPoolExecutor(threads) as pool:
            return dict(zip(names, pool.map(one, names), strict=True))

    def object_path(self, split: str, k: int, name: str, obj: dict, keep: set[str], with_open: bool = True) -> str:
        """A checked local file of one object; `keep`: cached objects (keys or paths) not to evict for it,
        with those of the open shards unless `with_open` is False (the caller included them)."""
        keep_keys = ({key for s in list(self._open.values()) for key in s.paths} | keep) if with_open else keep
        path = self.storage.local_path(obj["key"], obj["bytes"], keep=keep_keys)
        size = os.path.getsize(path)
        if size != obj["bytes"]:
            raise ShardCorruptError(f"{split} shard {k} ({name}) {obj['key']}: {size} bytes, the manifest says "
                                    f"{obj['bytes']}; run `python cli.py verify {self.storage.url}`")
        if self.validate and path not in self._checked:
            found = file_digest(path)
            if found != obj["sha256"]:
                raise ShardCorruptError(f"{split} shard {k} ({name}) {obj['key']}: sha256 {found[:16]}... differs "
                                        f"from the manifest's {obj['sha256'][:16]}... (corrupt object); run "
                                        f"`python cli.py verify {self.storage.url}` and rebuild or re-copy the shard")
            self._checked.add(path)
        return path

    def raw_arrays(self, split: str, k: int, names: list[str]) -> dict[str, np.ndarray]:
        """Only the named raw arrays of shard k (no image object is fetched; one request for all of them
        where the shard has a pack): {name: [rows, ...]}."""
        entry = self.manifest.shards(split)[k]
        arrays = self.manifest.arrays
        unknown = [n for n in names if n not in entry["objects"] or arrays[n]["kind"] != "raw"]
        if unknown:
            raise KeyError(f"not raw arrays of this shard set: {unknown}")
        wanted = raw_objects(entry, arrays)
        if PACK not in wanted:
            wanted = {name: wanted[name] for name in names}
        paths = self.fetch(split, k, wanted)
        return read_raws(paths, entry, list(names), arrays, self.manifest.shard_rows,
                         f"{self.storage.url} {split} shard {k}")

    def shard(self, split: str, k: int) -> OpenShard:
        with self._lock:
            key = (split, k)
            if key in self._open:
                self._open.move_to_end(key)
                return self._open[key]
            shard = OpenShard(self, split, self.manifest.shards(split)[k])
            self._open[key] = shard
            while len(self._open) > self.max_open:
                self._open.popitem(last=False)[1].close()
            return shard

    def close(self) -> None:
        with self._lock:
            for shard in self._open.values():
                shard.close()
            self._open.clear()
