"""Finding the weight files of full-quality backends, with one clear error when one is absent."""

from __future__ import annotations

import os


class MissingWeightsError(FileNotFoundError):
    """A backend's weight file is not where it was looked for. The message says what, where, how to set
    the location, and where the file is published; nothing is downloaded."""


def require_file(path: str, *, what: str, variable: str, published: str) -> str:
    if os.path.isfile(path) and os.path.getsize(path) > 0:
        return path
    folder, name = os.path.split(os.path.abspath(path))
    raise MissingWeightsError(
        f"{what}: file {name!r} not found in {folder} . Set {variable} to the folder (or file) that holds it; "
        f"the file is published at {published} . Nothing is downloaded at run time."
    )
