"""Reading and writing the raw objects of a Zarr store by key (markers, ledgers, shard bytes, build
records), synchronously: the one place the async zarr.abc.store API is driven by hand."""

from __future__ import annotations

import json

from zarr.abc.store import ByteRequest
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync


def get_bytes(zstore, key: str, byte_range: ByteRequest | None = None) -> bytes | None:  # noqa: ANN001
    """The object's bytes (or a byte range of them); None when it is absent."""
    buf = sync(zstore.get(key, prototype=default_buffer_prototype(), byte_range=byte_range))
    return None if buf is None else buf.to_bytes()


def get_json(zstore, key: str) -> dict | None:  # noqa: ANN001
    """A JSON object; None when absent or cut short (a write a crash interrupted counts as absent)."""
    data = get_bytes(zstore, key)
    if data is None:
        return None
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None


def set_bytes(zstore, key: str, data: bytes, *, if_absent: bool = False) -> None:  # noqa: ANN001
    buf = default_buffer_prototype().buffer.from_bytes(data)
    sync(zstore.set_if_not_exists(key, buf) if if_absent else zstore.set(key, buf))


def delete(zstore, key: str) -> None:  # noqa: ANN001
    sync(zstore.delete(key))


def delete_dir(zstore, prefix: str) -> None:  # noqa: ANN001
    sync(zstore.delete_dir(prefix))


def exists(zstore, key: str) -> bool:  # noqa: ANN001
    return bool(sync(zstore.exists(key)))


def list_dir(zstore, prefix: str) -> list[str]:  # noqa: ANN001
    """Names directly under `prefix`, sorted (empty when there is nothing)."""
    async def collect() -> list[str]:
        return [name async for name in zstore.list_dir(prefix)]

    try:
        return sorted(sync(collect()))
    except FileNotFoundError:
        return []
