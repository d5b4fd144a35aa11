"""Monocular captures: VFHQ clips (a folder of frames per clip), a user's video file(s), image folders.

VFHQ clip folders are named `Clip+<youtube id>+P<person>+C<clip>+F<start>-<end>`; the subject becomes
`<youtube id>_P<person>` and the sequence `C<clip>_F<start>-<end>`. Any other folder name is the
subject, with sequence `clip`. Monocular clips get one default pinhole camera at the world origin:
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
_VFHQ = re.compile(r"Clip\+(?P<vid>.+?)\+P(?P<p>\d+)\+C(?P<c>\d+)\+F(?P<f0>\d+)-(?P<f1>\d+)")
_DIGITS = re.compile(r"(\d+)")


def default_camera(width: int, height: int, focal: float = DEFAULT_FOCAL) -> tuple[np.ndarray, np.ndarray]:
    """(K [3, 3], world_to_cam [4, 4]) of the default monocular camera."""
    f = focal * max(width, height)
    K = np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])
    return K, np.eye(4)


def _natural_key(name: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in _DIGITS.split(name))


def vfhq_names(folder: str) -> tuple[str, str]:
    m = _VFHQ.fullmatch(folder)
    if m:
        return sanitize_name(f"{m['vid']}_P{m['p']}"), f"C{m['c']}_F{m['f0']}-{m['f1']}"
    return folder, "clip"


def _mono_clip(plan: RawPlan, dataset: str, subject: str, sequence: str, source, selection: Selection,
               focal: float) -> None:
    key = f"{subject}/{sequence}"
    try:
        validate_name(subject, "subject")
        validate_name(sequence, "sequence")
    except InvalidNameError as e:
        plan.add_issue(key, str(e))
        return
    if not selection.wants(subject, sequence):
        return
    try:
        n, width, height, fps = source.describe()
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
    plan.clips.append(ClipSpec(dataset, subject, sequence, (view,), frame_ids, fps))


def _image_sequence(fs, folder: str) -> ImageSequence | None:
    names = sorted(list_files(fs, folder, IMAGE_SUFFIXES), key=_natural_key)
    if not names:
        return None
    return ImageSequence(tuple(to_url(fs, f"{folder}/{n}") for n in names), tuple(range(len(names))))


def read_vfhq(root: str, selection: Selection, focal: float = DEFAULT_FOCAL) -> RawPlan:
    """A folder of clip folders, each holding that clip's frames."""
    fs, base = filesystem(root)
    if not fs.isdir(base):
        raise RawDataError(f"VFHQ root {root} is not a directory")
    plan = RawPlan()
    for folder in list_dirs(fs, base):
        subject, sequence = vfhq_names(folder)
        source = _image_sequence(fs, f"{base}/{folder}")
        if source is None:
            plan.add_issue(f"{subject}/{sequence}", f"sequence has no frames: no images in {base}/{folder}")
            continue
        _mono_clip(plan, "vfhq", subject, sequence, source, selection, focal)
    return plan


def read_images(root: str, selection: Selection, focal: float = DEFAULT_FOCAL, subject: str | None = None) -> RawPlan:
    """An image folder (one clip) or a folder of image folders (one clip each)."""
    fs, base = filesystem(root)
    if not fs.isdir(base):
        raise RawDataError(f"image folder {root} is not a directory")
    plan = RawPlan()
    direct = _image_sequence(fs, base)
    if direct is not None:
        name = subject or sanitize_name(base.rsplit("/", 1)[-1])
        _mono_clip(plan, "images", name, "images", direct, selection, focal)
        return plan
    for folder in list_dirs(fs, base):
        source = _image_sequence(fs, f"{base}/{folder}")
        if source is None:
            plan.add_issue(f"{folder}/images", f"sequence has no frames: no images in {base}/{folder}")
            continue
        _mono_clip(plan, "images", subject or folder, "images" if subject is None else folder, source,
                   selection, focal)
    return plan


def read_video(root: str, selection: Selection, focal: float = DEFAULT_FOCAL, subject: str | None = None) -> RawPlan:
    """A video file (one clip) or a folder of video files (one clip each, subject = file stem)."""
    fs, base = filesystem(root)
    plan = RawPlan()
    if fs.isfile(base):
        stem = base.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        _mono_clip(plan, "video", subject or sanitize_name(stem), "video", VideoSource(to_url(fs, base)),
                   selection, focal)
        return plan
    if not fs.isdir(base):
        raise RawDataError(f"video path {root} does not exist")
    for name in list_files(fs, base, VIDEO_SUFFIXES):
        stem = sanitize_name(name.rsplit(".", 1)[0])
        _mono_clip(plan, "video", subject or stem, "video" if subject is None else stem,
                   VideoSource(to_url(fs, f"{base}/{name}")), selection, focal)
    return plan

