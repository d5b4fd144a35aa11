"""Writing a capture folder all at once: into a temporary sibling, renamed when complete."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

from datasets.errors import UserError


class OutputExistsError(UserError, FileExistsError):
    """The output folder exists and --overwrite was not given."""


@contextlib.contextmanager
def atomic_folder(path: str, overwrite: bool = False):
    """Yield a temporary folder next to `path`; on success it becomes `path` (a crash leaves no `path`)."""
    path = os.path.abspath(path)
    if os.path.exists(path) and not overwrite:
        raise OutputExistsError(f"{path} exists (use --overwrite to replace it)")
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", dir=parent)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if os.path.exists(path):
        shutil.rmtree(path)
    os.replace(tmp, path)
