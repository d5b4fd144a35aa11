"""Reading and writing the raw objects of a Zarr store by key (markers, ledgers, shard bytes, build
records), synchronously: the one place the async zarr.abc.store API is driven by hand."""

from __future__ import annotations

import inspect
import json
import os

from zarr.abc.store import ByteRequest
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import FsspecStore, LocalStore


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


def list_versions(zstore, folder: str, start: str = "") -> dict[str, str | None]:  # noqa: ANN001
    """Every object below `folder`, at any depth, whose key relative to it starts with `start`, with a
    version token: a value that changes whenever the object is written again (an object store's etag or
    generation, a local file's mtime, size and inode), None where the backend gives none. On S3 this is
    one listing request per 1000 objects, however deep they lie."""
    folder = folder.rstrip("/")
    if isinstance(zstore, LocalStore):
        found = _local_versions(os.path.join(str(zstore.root), folder))
        return {k: v for k, v in found.items() if k.startswith(start)}
    if isinstance(zstore, FsspecStore):
        return _fsspec_versions(zstore, folder, start)

    async def collect() -> list[str]:
        return [key async for key in zstore.list_prefix(f"{folder}/{start}")]

    return {key[len(folder) + 1:]: None for key in sync(collect())}


def _fsspec_versions(zstore, folder: str, start: str) -> dict[str, str | None]:  # noqa: ANN001
    base = f"{zstore.path}/{folder}"
    find = zstore.fs._find
    # s3fs filters by a name prefix on the server, and then skips the extra requests it makes to tell
    # an empty folder from a missing file
    kwargs = {"prefix": start} if start and "prefix" in inspect.signature(find).parameters else {}
    try:
        found = sync(find(base, detail=True, **kwargs))
    except FileNotFoundError:
        return {}
    out = {}
    for name, info in found.items():
        relative = name[len(base) + 1:]
        if name.startswith(base + "/") and info.get("type") != "directory" and relative.startswith(start):
            out[relative] = _token(info)
    return out


def _local_versions(root: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            try:
                st = os.stat(path)
            except FileNotFoundError:  # deleted while listing
                continue
            out[os.path.relpath(path, root).replace(os.sep, "/")] = f"{st.st_mtime_ns}:{st.st_size}:{st.st_ino}"
    return out


def _token(info: dict) -> str | None:
    """An fsspec listing entry's version: etag (S3, Azure), generation (GCS), else modification time; with
    the size."""
    for name in ("ETag", "etag", "generation", "md5Hash", "VersionId", "mtime", "LastModified", "last_modified"):
        if info.get(name):
            return f"{name}={info[name]}:{info.get('size')}"
    return None
