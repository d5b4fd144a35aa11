"""Where a shard set's objects live: a local directory (read in place) or any fsspec URL (objects fetched
whole into a bounded local cache, shared by the loader processes of one machine).

One download per object per machine: a process that finds an object missing takes an exclusive lock on
`<cache>/.locks/<object>.lock` (fcntl.flock: it also separates threads, which open their own descriptors),
looks again, and only then fetches; the others wait on the lock and find the finished file. A download is
written to a temporary name and renamed, so readers never see half an object."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
import time
from collections.abc import Iterator

import fsspec

from datasets.errors import UserError
from datasets.shards.manifest import MANIFEST, Manifest, ManifestError
from datasets.urls import is_remote, local_path

DEFAULT_CACHE_BYTES = 8 << 30


class ShardMissingError(UserError, FileNotFoundError):
    """A shard object the manifest lists is absent."""


class CacheTooSmallError(UserError, RuntimeError):
    """The local cache cannot hold the objects being read at once."""


def default_cache_dir(url: str) -> str:
    base = os.environ.get("HEADFORGE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "headforge")
    return os.path.join(base, "shards", hashlib.sha256(url.encode()).hexdigest()[:16])


class ShardStorage:
    """Object access for one shard set. Cheap to create; loader workers make their own."""

    def __init__(self, url: str, storage_options: dict | None = None, cache_dir: str | None = None,
                 cache_bytes: int = DEFAULT_CACHE_BYTES):
        self.url = url.rstrip("/")
        self.remote = is_remote(url)
        self.storage_options = dict(storage_options or {})
        self._fs, self._pid = None, None
        if self.remote:
            self.root = fsspec.core.url_to_fs(self.url, **self.storage_options)[1]
            self.cache_dir = cache_dir or default_cache_dir(self.url)
        else:
            self.root = local_path(self.url)
            self.cache_dir = None
        self.cache_bytes = int(cache_bytes)

    @property
    def fs(self):
        """The fsspec filesystem, made in this process (async filesystems do not survive a fork)."""
        if self._fs is None or self._pid != os.getpid():
            self._fs = fsspec.core.url_to_fs(self.url, skip_instance_cache=True, **self.storage_options)[0]
            self._pid = os.getpid()
        return self._fs

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fs": None, "_pid": None}

    # ------------------------------------------------------------------ whole objects
    def read(self, key: str) -> bytes | None:
        """The bytes of one object, None when it is absent."""
        try:
            if self.remote:
                return self.fs.cat_file(f"{self.root}/{key}")
            with open(os.path.join(self.root, key), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def manifest(self) -> Manifest:
        text = self.read(MANIFEST)
        if text is None:
            raise ManifestError(f"no shard set at {self.url} (no {MANIFEST}; an unfinished build writes it last: "
                                "rerun build-shards to finish)")
        return Manifest.parse(text, self.url)

    # ------------------------------------------------------------------ local files for reading
    def local_path(self, key: str, nbytes: int, keep: set[str] = frozenset()) -> str:
        """A local file holding object `key` (of `nbytes` bytes, from the manifest): the object itself for a
        local set, else a cached copy, fetched if absent. `keep`: cached files not to evict now."""
        if not self.remote:
            path = os.path.join(self.root, key)
            if not os.path.exists(path):
                raise ShardMissingError(f"shard object {key} of {self.url} is missing; run `python cli.py verify "
                                        f"{self.url}`")
            return path
        path = os.path.join(self.cache_dir, key)
        if self._cached(path, nbytes):
            return path
        with self._download_lock(key):
            if self._cached(path, nbytes):  # another process or thread fetched it while we waited
                return path
            return self._download(key, path, nbytes, keep)

    @staticmethod
    def _cached(path: str, nbytes: int) -> bool:
        try:
            if os.path.getsize(path) != nbytes:
                return False
            os.utime(path)  # recency for eviction
            return True
        except FileNotFoundError:
            return False

    @contextlib.contextmanager
    def _download_lock(self, key: str) -> Iterator[None]:
        folder = os.path.join(self.cache_dir, ".locks")
        os.makedirs(folder, exist_ok=True)
        name = hashlib.sha256(key.encode()).hexdigest()[:32] + ".lock"
        fd = os.open(os.path.join(folder, name), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _download(self, key: str, path: str, nbytes: int, keep: set[str]) -> str:
        self._make_room(nbytes, keep)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".part-")
        os.close(fd)
        try:
            self.fs.get_file(f"{self.root}/{key}", tmp)
        except FileNotFoundError:
            os.unlink(tmp)
            raise ShardMissingError(f"shard object {key} of {self.url} is missing; run `python cli.py verify "
                                    f"{self.url}`") from None
        os.replace(tmp, path)  # atomic: other workers see a whole file or none
        return path

    def _make_room(self, nbytes: int, keep: set[str]) -> None:
        if nbytes > self.cache_bytes:
            raise CacheTooSmallError(f"a shard object of {nbytes} bytes does not fit the cache of "
                                     f"{self.cache_bytes} bytes ({self.cache_dir}); raise cache_bytes")
        files = []
        for folder, dirs, names in os.walk(self.cache_dir):
            if ".locks" in dirs:
                dirs.remove(".locks")  # lock files hold no data
            for name in names:
                path = os.path.join(folder, name)
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    continue  # another worker evicted it
                if name.startswith(".part-") and time.time() - st.st_mtime < 3600:
                    files.append((float("inf"), st.st_size, path))  # another worker's download in progress
                else:
                    files.append((st.st_mtime, st.st_size, path))
        total = sum(size for _, size, _ in files)
        keep_paths = {os.path.join(self.cache_dir, k) for k in keep}
        for recency, size, path in sorted(files):
            if total + nbytes <= self.cache_bytes:
                break
            if path in keep_paths or recency == float("inf"):
                continue
            try:
                os.unlink(path)  # safe while another process reads it: its open descriptor stays valid
                total -= size
            except FileNotFoundError:
                pass
        if total + nbytes > self.cache_bytes:
            raise CacheTooSmallError(f"the cache of {self.cache_bytes} bytes ({self.cache_dir}) cannot hold the "
                                     "shards being read at once; raise cache_bytes or lower the shuffle block")

