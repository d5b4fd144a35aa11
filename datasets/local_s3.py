"""A real S3 endpoint (moto's ThreadedMotoServer) on 127.0.0.1, for tests and benchmarks."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def local_s3(bucket: str) -> Iterator[dict]:
    """Start the server on a free port with `bucket` created; yields s3fs storage options."""
    import s3fs
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the server's request log
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        opts = {"endpoint_url": f"http://127.0.0.1:{port}", "key": "testing", "secret": "testing"}
        s3fs.S3FileSystem(**opts).mkdir(bucket)
        yield opts
    finally:
        server.stop()
