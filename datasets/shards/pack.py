"""A shard's small (raw) arrays packed into one object, so that opening a remote shard costs one request
for all of them instead of one per array.

    <out>/<split>/_packed/<k:06d>.bin   the raw arrays' little-endian bytes of shard k, concatenated in the
                                        manifest's array order (each exactly as its own zarr chunk object)

The shard's manifest entry describes it (datasets/shards/manifest.py):

    "pack": {"key": ..., "bytes": n, "sha256": ..., "arrays": {name: [offset, nbytes]}}

The per-array chunk objects stay as they are (plain zarr reads the set, and readers of manifests without
a pack read them); a pack slice is byte for byte its array's chunk object, so a slice's sha256 equals the
digest the manifest gives that object (`cli.py verify` checks both).
"""

from __future__ import annotations

import numpy as np

from datasets.errors import UserError

PACK_DIR = "_packed"


class PackError(UserError, ValueError):
    """A pack object or its manifest entry does not match the arrays it should hold."""


def pack_key(split: str, k: int) -> str:
    return f"{split}/{PACK_DIR}/{k:06d}.bin"


def encode_pack(parts: dict[str, bytes]) -> tuple[bytes, dict[str, list[int]]]:
    """{name: raw chunk bytes} -> (the pack, {name: [offset, nbytes]}), in the order of `parts`."""
    layout, offset = {}, 0
    for name, data in parts.items():
        layout[name] = [offset, len(data)]
        offset += len(data)
    return b"".join(parts.values()), layout


def raw_nbytes(spec: dict, shard_rows: int) -> int:
    """Bytes of a raw array's chunk object: [shard_rows, *row_shape] of its dtype."""
    return shard_rows * int(np.prod(spec["row_shape"], dtype=np.int64)) * np.dtype(spec["dtype"]).itemsize


def raw_array(data: bytes | bytearray | memoryview, spec: dict, shard_rows: int, rows: int) -> np.ndarray:
    """A raw chunk's bytes (uncompressed, little endian) -> [rows, *row_shape] (writable when `data` is)."""
    dtype = np.dtype(spec["dtype"]).newbyteorder("<")
    return np.frombuffer(data, dtype=dtype).reshape((shard_rows,) + tuple(spec["row_shape"]))[:rows]


def unpack(data: bytearray, pack: dict, names: list[str], arrays: dict[str, dict], shard_rows: int, rows: int,
           where: str) -> dict[str, np.ndarray]:
    """The named raw arrays out of a pack's bytes: {name: [rows, *row_shape]}; `where` names it in errors."""
    out = {}
    for name in names:
        if name not in pack["arrays"]:
            raise PackError(f"{where}: the pack has no array {name!r} (it has {sorted(pack['arrays'])})")
        offset, nbytes = pack["arrays"][name]
        expected = raw_nbytes(arrays[name], shard_rows)
        if nbytes != expected or offset < 0 or offset + nbytes > len(data):
            raise PackError(f"{where}: {name} at [{offset}, {offset + nbytes}) of a {len(data)}-byte pack, "
                            f"expected {expected} bytes inside it (corrupt pack or manifest)")
        out[name] = raw_array(memoryview(data)[offset:offset + nbytes], arrays[name], shard_rows, rows)
    return out
