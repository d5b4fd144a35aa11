"""Where a path or fsspec URL points: this machine's file system, or object storage and other remotes."""

from __future__ import annotations


def is_remote(url: str) -> bool:
    """True for s3://, gs://, http(s):// and other fsspec URLs; False for plain paths and file:// URLs."""
    return "://" in url and not url.startswith("file://")


def local_path(url: str) -> str:
    """The file system path of a local path or file:// URL."""
    return url.removeprefix("file://")
