"""VFHQ: monocular face clips cut from YouTube videos, as the dataset distributes them.

    VFHQ-Train/ VFHQ-Test/ (or any folder)   Clip+<youtube id>+P<person>+C<clip>+F<start>-<end>/<frames>.png
                                             (or videos Clip+<id>+P<n>+C<k>[+F<s>-<e>].mp4, as download tools write)
    VFHQ_meta_info/ (or meta_info/, per split or flat)   <clip name>.txt

The root may be a split folder or the folder above the splits. A clip's subject is `<youtube id>_P<person>`
(one person of one video: all their clips group under it), its sequence `C<clip>_F<start>-<end>`.

Meta info (one text file per clip; the fields the official processing script reads):
    Video <id>, H <height>, W <width>, FPS <fps>      header lines (a colon after the key is accepted)
    <frame> <person> <x0> <y0> <w> <h> <5 landmarks>  one row per frame, in the source video's pixels
    CROP <x0> <y0> <x1> <y1>                          the clip's crop box in the source video (x1, y1 exclusive)
The clip holds the source frames strictly between F<start> and F<end> (the script extracts start+1 .. end-1).
Read: fps; the source frame ids (the rows' first column, else start+1 .. end-1 when the count fits; that
rule also serves clips without meta), which
become the stored frame ids of image clips and `source_frame_ids` of video clips; the crop box and source
size, kept in the clip's provenance. A clip without meta keeps positional ids and the container's fps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from datasets.names import sanitize_name
from datasets.raw.base import (
    VIDEO_SUFFIXES,
    RawDataError,
    RawPlan,
    Selection,
    filesystem,
    list_dirs,
    list_files,
    to_url,
)
from datasets.raw.monocular import DEFAULT_FOCAL, image_sequence, mono_clip
from datasets.raw.nersemble_layouts import describe_top
from datasets.raw.sources import ImageSequence, VideoSource

_CLIP = re.compile(r"Clip\+(?P<vid>.+?)\+P(?P<p>\d+)\+C(?P<c>\d+)(?:\+F(?P<f0>\d+)-(?P<f1>\d+))?")


def vfhq_names(name: str) -> tuple[str, str]:
    """(subject, sequence) of a VFHQ clip folder or file stem; other names: (name, 'clip')."""
    m = _CLIP.fullmatch(name)
    if not m:
        return name, "clip"
    seq = f"C{m['c']}" + (f"_F{m['f0']}-{m['f1']}" if m["f0"] else "")
    return sanitize_name(f"{m['vid']}_P{m['p']}"), seq


@dataclass(frozen=True)
class VfhqMeta:
    path: str
    video: str | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    crop: tuple[int, int, int, int] | None = None  # x0, y0, x1, y1 in the source video (x1, y1 exclusive)
    frame_ids: tuple[int, ...] = ()  # source frame id of each per-frame row


def parse_meta(text: str, path: str = "") -> VfhqMeta:
    """A meta info file's text -> VfhqMeta (unknown lines are skipped)."""
    fields: dict = {"path": path}
    ids: list[int] = []
    for line in text.splitlines():
        tokens = line.replace(":", " ").split()
        if not tokens:
            continue
        key = tokens[0].upper()
        try:
            if key == "VIDEO":
                fields["video"] = " ".join(tokens[1:]) or None
            elif key in ("H", "W") and len(tokens) >= 2:
                fields["height" if key == "H" else "width"] = int(float(tokens[-1]))
            elif key == "FPS" and len(tokens) >= 2:
                fields["fps"] = float(tokens[-1])
            elif key == "CROP" and len(tokens) >= 5:
                fields["crop"] = tuple(int(float(t)) for t in tokens[-4:])
            elif tokens[0].isdigit() and len(tokens) >= 6:
                ids.append(int(tokens[0]))
        except ValueError:
            continue
    return VfhqMeta(frame_ids=tuple(ids), **fields)


def _is_clip_entry(name: str) -> bool:
    stem = name.rsplit(".", 1)[0] if name.lower().endswith(VIDEO_SUFFIXES) else name
    return bool(_CLIP.fullmatch(stem))


def _holds_clips(fs, folder: str) -> bool:
    return any(_is_clip_entry(n) for n in list_dirs(fs, folder) + list_files(fs, folder, VIDEO_SUFFIXES))


def _meta_index(fs, folders: list[str]) -> dict[str, str]:
    """clip name -> path of its meta info file, over every .txt under the given folders."""
    index: dict[str, str] = {}
    for folder in folders:
        try:
            paths = fs.find(folder)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for path in paths:
            name = path.rsplit("/", 1)[-1]
            if name.lower().endswith(".txt"):
                index.setdefault(name[:-4], path)
    return index


def _meta_folders(fs, folder: str) -> list[str]:
    return [f"{folder}/{d}" for d in list_dirs(fs, folder) if "meta" in d.lower()]


def _source_ids(meta: VfhqMeta | None, name: str, n: int) -> tuple[tuple[int, ...] | None, str]:
    """(source frame ids of the clip's n frames, or None; the provenance note)."""
    if meta is not None and len(meta.frame_ids) == n:
        return meta.frame_ids, f"meta info {meta.path}"
    where = f"meta info {meta.path}; " if meta is not None else ""
    m = _CLIP.fullmatch(name)
    if m and m["f0"] and int(m["f1"]) - int(m["f0"]) - 1 == n:
        start = int(m["f0"]) + 1
        return tuple(range(start, start + n)), f"{where}frame ids from the clip name's F range"
    if meta is not None:
        return None, f"meta info {meta.path} has {len(meta.frame_ids)} frame rows for {n} frames: ids kept by position"
    return None, ""


def read_vfhq(root: str, selection: Selection, focal: float = DEFAULT_FOCAL) -> RawPlan:
    """VFHQ clips (frame folders or videos) of a split folder or of the folder above the splits."""
    fs, base = filesystem(root)
    if not fs.isdir(base):
        raise RawDataError(f"VFHQ root {root} is not a directory")
    parent = base.rsplit("/", 1)[0] if "/" in base else base
    if _holds_clips(fs, base):
        splits, metas = [base], _meta_folders(fs, base) + _meta_folders(fs, parent)
    else:
        splits = [f"{base}/{d}" for d in list_dirs(fs, base)
                  if "meta" not in d.lower() and _holds_clips(fs, f"{base}/{d}")]
        metas = _meta_folders(fs, base)
    plan = RawPlan()
    named = bool(splits)
    if not splits:  # plain folders of frames (no VFHQ names): one clip each, as before
        splits = [base]
    index = _meta_index(fs, metas)
    for split in splits:
        _read_split(fs, plan, split, index, selection, focal)
    if not plan.clips and not plan.unselected and not named:
        raise RawDataError(f"no VFHQ clip found under {root}: looked for Clip+<id>+P<n>+C<k>+F<a>-<b> frame folders "
                           f"or videos, in the root or in split folders below it; the root holds "
                           f"{describe_top(fs, base)}" + _first_problem(plan))
    return plan


def _first_problem(plan: RawPlan) -> str:
    items = [i for found in plan.issues.values() for i in found]
    return f"; {len(items)} problem(s), e.g. {items[0].clip}: {items[0].reason}" if items else ""


def _read_split(fs, plan: RawPlan, split: str, index: dict[str, str], selection: Selection, focal: float) -> None:
    entries = [(d, False) for d in list_dirs(fs, split) if "meta" not in d.lower()]
    entries += [(f, True) for f in list_files(fs, split, VIDEO_SUFFIXES)]
    for name, is_video in entries:
        stem = name.rsplit(".", 1)[0] if is_video else name
        subject, sequence = vfhq_names(stem)
        if is_video:
            source = VideoSource(to_url(fs, f"{split}/{name}"))
        else:
            source = image_sequence(fs, f"{split}/{name}")
            if source is None:
                plan.add_issue(f"{subject}/{sequence}", f"sequence has no frames: no images in {split}/{name}")
                continue
        meta = None
        if stem in index:
            try:
                with fs.open(index[stem], "rb") as f:
                    meta = parse_meta(f.read().decode("utf-8", "replace"), index[stem])
            except OSError as e:
                plan.add_issue(f"{subject}/{sequence}", f"meta info {index[stem]} unreadable: {e}")
        described = None
        if isinstance(source, ImageSequence):
            n = len(source.urls)
        else:  # a video is opened once: mono_clip takes what describe() found
            try:
                described = source.describe()
                n = described[0]
            except Exception:  # noqa: BLE001 - mono_clip records the unreadable clip
                n = 0
        ids, note = _source_ids(meta, stem, n)
        source_meta: list[tuple[str, object]] = [("split", split.rsplit("/", 1)[-1])]
        if meta is not None:
            source_meta += [(k, getattr(meta, k)) for k in ("video", "width", "height", "crop") if getattr(meta, k)]
        if ids is not None and isinstance(source, ImageSequence):
            source = ImageSequence(source.urls, ids)
        elif ids is not None:
            source_meta.append(("source_frame_ids", ids))
        mono_clip(plan, "vfhq", subject, sequence, source, selection, focal,
                  fps=meta.fps if meta is not None and meta.fps else None, notes=(note,) if note else (),
                  source_meta=tuple(source_meta), described=described,
                  layout=("video" if is_video else "frame folder") + (" + meta info" if meta is not None else ""))
