"""A real S3 endpoint (moto's ThreadedMotoServer) on 127.0.0.1, for tests and benchmarks, and a count of the
S3 requests a block of code makes."""

from __future__ import annotations

import logging
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import unquote


class RequestLog:
    """The requests the server answered: (method, path) counted, and the bytes of GET bodies per path."""

    def __init__(self):
        self.requests: Counter = Counter()
        self.bytes: Counter = Counter()
        self._lock = threading.Lock()

    def wrap(self, app):
        def counted(environ, start_response):
            method, path = environ["REQUEST_METHOD"], unquote(environ.get("PATH_INFO", ""))
            body = b"".join(app(environ, start_response))
            with self._lock:
                self.requests[(method, path)] += 1
                if method == "GET":
                    self.bytes[path] += len(body)
            return [body]
        return counted

    def gets(self, contains: str = "") -> int:
        """GET requests of paths containing `contains`."""
        with self._lock:
            return sum(n for (m, p), n in self.requests.items() if m == "GET" and contains in p)

    def get_bytes(self, contains: str = "") -> int:
        with self._lock:
            return sum(n for p, n in self.bytes.items() if contains in p)

    def total(self) -> int:
        with self._lock:
            return sum(self.requests.values())

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.bytes.clear()


@contextmanager
def local_s3(bucket: str, log: RequestLog | None = None) -> Iterator[dict]:
    """Start the server on a free port with `bucket` created; yields s3fs storage options. `log`: counts
    every request the server answers from then on (tests and benchmarks measure traffic with it)."""
    import s3fs
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the server's request log
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    if log is not None:
        server._server.app = log.wrap(server._server.app)  # werkzeug serves `server.app` per request
    try:
        opts = {"endpoint_url": f"http://127.0.0.1:{port}", "key": "testing", "secret": "testing"}
        s3fs.S3FileSystem(**opts).mkdir(bucket)
        yield opts
    finally:
        server.stop()


@contextmanager
def count_requests() -> Iterator[list[tuple[str, str]]]:
    """Every S3 request this process makes inside the block (through s3fs, whose calls all pass through
    S3FileSystem._call_s3), as (operation, key or prefix), appended to the yielded list as they happen."""
    from unittest import mock

    import s3fs

    calls: list[tuple[str, str]] = []
    original = s3fs.S3FileSystem._call_s3

    async def counted(self, method, *args, **kwargs):
        calls.append((method, kwargs.get("Key") or kwargs.get("Prefix") or ""))
        return await original(self, method, *args, **kwargs)

    with mock.patch.object(s3fs.S3FileSystem, "_call_s3", counted):
        yield calls
