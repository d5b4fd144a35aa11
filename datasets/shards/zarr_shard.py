"""The Zarr v3 sharding layout at the byte level: read one encoded chunk out of a shard, write a shard from
encoded chunks.

Shard sets copy the stores' encoded images (JPEG/PNG) byte for byte instead of decoding and re-encoding
them: no generational loss and no encoder time. Both sides use zarr's default sharding configuration
(inner chunks concatenated, then an index of (offset, nbytes) uint64 pairs per inner chunk in C order,
little endian, followed by its crc32c; 2**64-1 marks an empty chunk), so plain zarr reads the result.
"""

from __future__ import annotations

import numpy as np
import zarr
from google_crc32c import value as crc32c

from datasets.errors import UserError

EMPTY = np.uint64(2**64 - 1)


class ShardFormatError(UserError, ValueError):
    """A shard object is not in the expected layout (wrong size, bad index checksum)."""


def check_default_sharding(array: zarr.Array) -> None:
    """Raise unless `array` uses the sharding layout this module reads and writes."""
    codecs = array.metadata.to_dict()["codecs"]
    if len(codecs) != 1 or codecs[0]["name"] != "sharding_indexed":
        raise ShardFormatError(f"array {array.path} is not sharded")
    cfg = codecs[0]["configuration"]
    names = [c["name"] for c in cfg["index_codecs"]]
    endian = cfg["index_codecs"][0].get("configuration", {}).get("endian", "little")
    if names != ["bytes", "crc32c"] or endian != "little" or cfg.get("index_location", "end") != "end":
        raise ShardFormatError(f"array {array.path} has a sharding index layout this reader does not handle: {cfg}")


def chunks_per_shard(array: zarr.Array) -> tuple[int, ...]:
    return tuple(s // c for s, c in zip(array.shards, array.chunks, strict=True))


def index_nbytes(n_chunks: int) -> int:
    return n_chunks * 16 + 4


def parse_index(tail: bytes, n_chunks: int, where: str = "shard") -> np.ndarray:
    """The last index_nbytes(n_chunks) bytes of a shard -> uint64 [n_chunks, 2] (offset, nbytes)."""
    if len(tail) != index_nbytes(n_chunks):
        raise ShardFormatError(f"{where}: index of {len(tail)} bytes, expected {index_nbytes(n_chunks)}")
    body, checksum = tail[:-4], tail[-4:]
    if np.uint32(crc32c(body)).tobytes() != checksum:
        raise ShardFormatError(f"{where}: shard index checksum mismatch (the object is corrupt)")
    return np.frombuffer(body, dtype="<u8").reshape(n_chunks, 2)


def encode_shard(chunks: list[bytes | None]) -> bytes:
    """Encoded inner chunks in C order of the shard's chunk grid (None: empty) -> one shard object."""
    index = np.full((len(chunks), 2), EMPTY, dtype="<u8")
    parts, offset = [], 0
    for i, data in enumerate(chunks):
        if data is None:
            continue
        index[i] = (offset, len(data))
        parts.append(data)
        offset += len(data)
    body = index.tobytes()
    return b"".join(parts) + body + np.uint32(crc32c(body)).tobytes()


def chunk_slice(index: np.ndarray, i: int) -> tuple[int, int] | None:
    """(offset, nbytes) of inner chunk i, None when it is empty."""
    offset, nbytes = index[i]
    if offset == EMPTY:
        return None
    return int(offset), int(nbytes)
