"""verify: recompute the digest of every object a shard set's manifest lists (a shard's pack too, and that
each of its slices is byte for byte the raw array object it copies); report missing and corrupt ones."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from datasets.shards.manifest import Manifest, digest
from datasets.shards.reader import PACK
from datasets.shards.storage import ShardStorage


@dataclass
class Problem:
    split: str
    shard: int
    array: str
    key: str
    kind: str  # "missing" | "corrupt" | "size"
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.split} shard {self.shard} ({self.array}) {self.key}: {self.detail}"


@dataclass
class VerifyReport:
    shards: int
    objects: int
    bytes: int
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        return not self.problems

    def bad_shards(self) -> list[tuple[str, int]]:
        return sorted({(p.split, p.shard) for p in self.problems})


def verify_shards(url: str, storage_options: dict | None = None, threads: int = 4,
                  progress: Callable[[int, int], None] | None = None) -> VerifyReport:
    storage = ShardStorage(url, storage_options)
    manifest: Manifest = storage.manifest()
    jobs = [(split, shard["index"], name, obj, shard) for split in manifest.splits
            for shard in manifest.shards(split) for name, obj in _objects(shard).items()]

    def check(job: tuple) -> Problem | None:
        split, k, name, obj, shard = job
        data = storage.read(obj["key"])
        if data is None:
            return Problem(split, k, name, obj["key"], "missing", "the object is absent")
        if len(data) != obj["bytes"]:
            return Problem(split, k, name, obj["key"], "size", f"{len(data)} bytes, manifest says {obj['bytes']}")
        found = digest(data)
        if found != obj["sha256"]:
            return Problem(split, k, name, obj["key"], "corrupt", f"sha256 {found[:16]}..., manifest says "
                                                                   f"{obj['sha256'][:16]}...")
        return _check_pack_slices(split, k, obj, shard, data) if name == PACK else None

    problems = []
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for i, problem in enumerate(pool.map(check, jobs)):
            if problem is not None:
                problems.append(problem)
            if progress:
                progress(i + 1, len(jobs))
    n_shards = sum(len(manifest.shards(s)) for s in manifest.splits)
    return VerifyReport(n_shards, len(jobs), sum(j[3]["bytes"] for j in jobs), problems)


def _objects(shard: dict) -> dict[str, dict]:
    """The objects of a shard to check: its arrays' and, where it has one, its pack (named PACK)."""
    return shard["objects"] | ({PACK: shard["pack"]} if "pack" in shard else {})


def _check_pack_slices(split: str, k: int, pack: dict, shard: dict, data: bytes) -> Problem | None:
    """A pack whose digest matches can still disagree with the array objects it should copy (a manifest
    edited by hand, a builder bug): each slice must have its array object's digest."""
    for name, (offset, nbytes) in pack["arrays"].items():
        obj = shard["objects"].get(name)
        if obj is None or nbytes != obj["bytes"] or digest(data[offset:offset + nbytes]) != obj["sha256"]:
            return Problem(split, k, PACK, pack["key"], "corrupt",
                           f"its slice of {name} differs from the array object {obj['key'] if obj else '(none)'}")
    return None
