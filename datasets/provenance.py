"""What a store or a shard set records of the software that made it."""

from __future__ import annotations

import importlib.metadata
import platform

PACKAGES = ("numpy", "zarr", "dask", "distributed", "av", "opencv-python-headless", "mediapipe", "torch", "fsspec",
            "headforge")


def package_versions() -> dict[str, str]:
    """{package: version} of Python and the packages the data depends on (those installed)."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out
