"""Monocular captures: a user's video file(s), image folders (VFHQ: datasets/raw/vfhq.py).

A folder's name is the subject, with sequence `images` (or the folder's name under --subject); a video's
stem is the subject, with sequence `video`. Monocular clips get one default pinhole camera at the world origin:
fx = fy = focal * max(width, height), principal point at the image centre.
"""

from __future__ import annotations

import re

import numpy as np

from datasets.names import InvalidNameError, sanitize_name, validate_name
from datasets.raw.base import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    ClipSpec,
    RawDataError,
    RawPlan,
    Selection,
    ViewSpec,
    as_tuple,
    filesystem,
    list_dirs,
    list_files,
    to_url,
)
from datasets.raw.sources import ImageSequence, VideoSource

DEFAULT_FOCAL = 1.6  # in units of the longer image side: about 35 degrees across it
MONO_SERIAL = "mono"
_DIGITS = re.compile(r"(\d+)")


def default_camera(width: int, height: int, focal: float = DEFAULT_FOCAL) -> tuple[np.ndarray, np.ndarray]:
    """(K [3, 3], world_to_cam [4, 4]) of the default monocular camera."""
    f = focal * max(width, height)
    K = np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])
    return K, np.eye(4)


def _natural_key(name: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in _DIGITS.split(name))


def mono_clip(plan: RawPlan, dataset: str, subject: str, sequence: str, source, selection: Selection,
              focal: float, *, fps: float | None = None, notes: tuple[str, ...] = (),
              source_meta: tuple = (), layout: str = "", described: tuple | None = None) -> None:
    """Add one single-camera clip (a ledger item instead when its names are invalid or it cannot be read);
    `fps` replaces the container's (a meta file's), `notes` and `source_meta` go to the provenance;
    `described`: the source's describe() when the caller already has it."""
    key = f"{subject}/{sequence}"
    try:
        validate_name(subject, "subject")
        validate_name(sequence, "sequence")
    except InvalidNameError as e:
        plan.add_issue(key, str(e))
        return
    if not selection.wants(subject, sequence):
        plan.unselected += 1
        return
    try:
        n, width, height, container_fps = described or source.describe()
    except Exception as e:  # noqa: BLE001 - unreadable input is an item failure
        plan.add_issue(key, f"cannot read clip: {e}")
        return
    if n == 0:
        plan.add_issue(key, "sequence has no frames")
        return
    K, E = default_camera(width, height, focal)
    view = ViewSpec(MONO_SERIAL, as_tuple(K), as_tuple(E), source, width, height)
    if isinstance(source, ImageSequence):
        frame_ids = tuple(source.frame_ids[:: max(1, selection.stride)])
    else:
        frame_ids = selection.frame_ids(n)
    plan.clips.append(ClipSpec(dataset, subject, sequence, (view,), frame_ids, container_fps if fps is None else fps,
                               layout=layout, notes=notes, source_meta=source_meta))


def image_sequence(fs, folder: str) -> ImageSequence | None:
    names = sorted(list_files(fs, folder, IMAGE_SUFFIXES), key=_natural_key)
    if not names:
        return None
    return ImageSequence(tuple(to_url(fs, f"{folder}/{n}") for n in names), tuple(range(len(names))))


def read_images(root: str, selection: Selection, focal: float = DEFAULT_FOCAL, subject: str | None = None) -> RawPlan:
    """An image folder (one clip) or a folder of image folders (one clip each)."""
    fs, base = filesystem(root)
    if not fs.isdir(base):
        raise RawDataError(f"image folder {root} is not a directory")
    plan = RawPlan()
    direct = image_sequence(fs, base)
    if direct is not None:
        name = subject or sanitize_name(base.rsplit("/", 1)[-1])
        mono_clip(plan, "images", name, "images", direct, selection, focal)
        return plan
    for folder in list_dirs(fs, base):
        source = image_sequence(fs, f"{base}/{folder}")
        if source is None:
            plan.add_issue(f"{folder}/images", f"sequence has no frames: no images in {base}/{folder}")
            continue
        mono_clip(plan, "images", subject or folder, "images" if subject is None else folder, source,
                   selection, focal)
    return plan


def read_video(root: str, selection: Selection, focal: float = DEFAULT_FOCAL, subject: str | None = None) -> RawPlan:
    """A video file (one clip) or a folder of video files (one clip each, subject = file stem)."""
    fs, base = filesystem(root)
    plan = RawPlan()
    if fs.isfile(base):
        stem = base.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        mono_clip(plan, "video", subject or sanitize_name(stem), "video", VideoSource(to_url(fs, base)),
                   selection, focal)
        return plan
    if not fs.isdir(base):
        raise RawDataError(f"video path {root} does not exist")
    for name in list_files(fs, base, VIDEO_SUFFIXES):
        stem = sanitize_name(name.rsplit(".", 1)[0])
        mono_clip(plan, "video", subject or stem, "video" if subject is None else stem,
                   VideoSource(to_url(fs, f"{base}/{name}")), selection, focal)
    return plan

