"""Which NeRSemble packaging a root holds, per participant, and where each of its files is.

Layouts, as the dataset's own tools and the public preprocessing code read them (p: 3-digit participant):

  v2            {p}/calibration/camera_params.json, {p}/calibration/color_calibration.json,
                {p}/sequences/{SEQ}/images/cam_{serial}.mp4, {p}/sequences/BACKGROUND/image_{serial}.jpg
                (nersemble_data toolkit)
  v2-benchmark  as v2 with mattes {p}/sequences/{SEQ}/alpha_maps/cam_{serial}.mp4, background-removed
                images, per-camera intrinsics and {SEQ}/tracking/flame2023_tracking[_v2].npz; under
                nvs/ or mono_flame_avatar/ (nersemble_benchmark toolkit)
  v1-release    camera_params/{p}/camera_params.json, sequence_{SEQ}_part-{k}/{p}/{SEQ}/cam_{serial}.mp4,
                sequence_BACKGROUND_part-1/{p}/BACKGROUND/image_{serial}.jpg, color_correction/{p}/{serial}.npy
                (the full v1 release unzipped; Gaussian Head Avatar's preprocessing reads it)
  v1-participant participant_{p}/{p}/{SEQ}/cam_{serial}.mp4 (calibration and colour folders as in v1-release,
                inside participant_{p}/ or beside it)
  v1-merged     {p}/{SEQ}/cam_{serial}.mp4, {p}/BACKGROUND/image_{serial}.jpg, camera_params/{p}/,
                color_correction/{p}/ (VHAP's form of the v1 release)
  v1-paper      {p}/camera_params.json, {p}/sequences/{SEQ}/frame_{t:05d}/images-2x-73fps/cam_{serial}.png,
                .../alpha_map-73fps/cam_{serial}.png, {p}/annotations/{SEQ}/color_correction/{serial}.npy
                (the NVS paper subset; nersemble's multi-view data manager)
  processed     {p}/calibration/calibration_result.json + config.json,
                {p}/sequences/{SEQ}/timesteps/frame_{t:05d}/images-2x/cam_{serial}.jpg (or images/*.png),
                .../alpha_map/cam_{serial}.png, {SEQ}/annotations/color_correction/{serial}.npy,
                {SEQ}/annotations/tracking/FLAME2023*/tracked_flame_params.npz (DiffusionAvatars' release)
  v1-frames     {p}/camera_params.json (or calibration/), {p}/sequences/{SEQ}/[timesteps/]frame_*/images[-kx]/
                (per-frame image folders with a camera_params.json: earlier processed copies)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from datasets.raw.base import list_dirs, list_files

BACKGROUND = "BACKGROUND"
LAYOUTS = ("v2", "v2-benchmark", "v1-release", "v1-participant", "v1-merged", "v1-paper", "processed", "v1-frames")
_PART = re.compile(r"sequence_(?P<seq>.+)_part-(?P<k>\d+)")
_PARTICIPANT = re.compile(r"participant_(?P<p>.+)")
BENCHMARK_TASKS = ("nvs", "mono_flame_avatar")
_TRACKING = ("flame2023_tracking_v2.npz", "flame2023_tracking.npz")
_DA_TRACKING = ("FLAME2023_v2", "FLAME2023", "FLAME")


@dataclass
class SequenceFiles:
    """Where one sequence's files are."""

    name: str
    path: str  # the sequence folder (frame folders under it, or its videos in `videos`)
    videos: str | None = None  # folder of cam_{serial}.mp4
    alpha_videos: str | None = None  # folder of cam_{serial}.mp4 mattes (benchmark)
    color_dir: str | None = None  # folder of {serial}.npy v1 affines for this sequence
    tracking: str | None = None  # released FLAME tracking (.npz)


@dataclass
class Participant:
    name: str
    layout: str
    calibration: str  # camera_params.json or calibration_result.json
    calibration_config: str | None = None  # config.json beside calibration_result.json
    sequences: dict[str, SequenceFiles] = field(default_factory=dict)
    plates: str | None = None  # folder of image_{serial}.jpg, or a BACKGROUND sequence folder of frame folders
    color_dir: str | None = None  # folder of {serial}.npy (v1) for every sequence
    color_json: str | None = None  # v2 color_calibration.json
    problems: list[str] = field(default_factory=list)  # found but unusable (e.g. no calibration)


def _files(fs, path: str, suffix: str) -> list[str]:
    return list_files(fs, path, (suffix,))


def _has_videos(fs, path: str) -> bool:
    return any(n.startswith("cam_") for n in _files(fs, path, ".mp4"))


def _first(fs, paths: list[str]) -> str | None:
    return next((p for p in paths if fs.exists(p)), None)


def _dir(fs, path: str) -> str | None:
    return path if fs.isdir(path) else None


def _tracking(fs, folder: str) -> str | None:
    return _first(fs, [f"{folder}/{name}" for name in _TRACKING])


def _v2_participant(fs, p_dir: str, name: str) -> Participant | None:
    seq_root = f"{p_dir}/sequences"
    if not fs.isdir(seq_root):
        return None
    calib = _first(fs, [f"{p_dir}/calibration/camera_params.json", f"{p_dir}/camera_params.json"])
    result = f"{p_dir}/calibration/calibration_result.json"
    seqs = [s for s in list_dirs(fs, seq_root) if s != BACKGROUND]
    video_seqs = [s for s in seqs if _has_videos(fs, f"{seq_root}/{s}/images")]
    if video_seqs:
        benchmark = any(fs.isdir(f"{seq_root}/{s}/alpha_maps") for s in video_seqs)
        part = Participant(name, "v2-benchmark" if benchmark else "v2",
                           calib or f"{p_dir}/calibration/camera_params.json",
                           plates=f"{seq_root}/{BACKGROUND}",
                           color_json=_first(fs, [f"{p_dir}/calibration/color_calibration.json"]))
        for s in seqs:
            d = f"{seq_root}/{s}"
            part.sequences[s] = SequenceFiles(s, d, videos=f"{d}/images", alpha_videos=_dir(fs, f"{d}/alpha_maps"),
                                              tracking=_tracking(fs, f"{d}/tracking"))
        return part
    if not seqs:
        return None
    # per-frame image folders: the paper subset, DiffusionAvatars' processed release, earlier copies
    if fs.exists(result):
        part = Participant(name, "processed", result, f"{p_dir}/calibration/config.json")
    else:
        children = _frame_children(fs, f"{seq_root}/{seqs[0]}")
        paper = any(re.fullmatch(r"images.*-\d+fps", d) for d in children)
        part = Participant(name, "v1-paper" if paper else "v1-frames", calib or f"{p_dir}/camera_params.json")
    part.plates = f"{seq_root}/{BACKGROUND}"
    for s in seqs:
        d = f"{seq_root}/{s}"
        color = _dir(fs, f"{d}/annotations/color_correction") or _dir(fs, f"{p_dir}/annotations/{s}/color_correction")
        track = next((t for t in (f"{d}/annotations/tracking/{v}/tracked_flame_params.npz" for v in _DA_TRACKING)
                      if fs.exists(t)), None)
        part.sequences[s] = SequenceFiles(s, d, color_dir=color, tracking=track)
    return part


def _frame_children(fs, seq_dir: str) -> list[str]:
    """Folder names inside the first frame folder of a sequence (to tell the paper subset's `-73fps`)."""
    for base in (f"{seq_dir}/timesteps", seq_dir):
        frames = [d for d in list_dirs(fs, base) if d.startswith("frame_")]
        if frames:
            return list_dirs(fs, f"{base}/{frames[0]}")
    return []


def _video_folders_participant(fs, name: str, layout: str, seq_parent: str, calib_roots: list[str],
                               extra: list[tuple[str, str]] = ()) -> Participant:
    """A participant whose sequences are folders of cam_*.mp4 under `seq_parent` (v1-merged, v1-participant);
    `extra`: (sequence, folder) found elsewhere (v1-release part folders)."""
    calib = _first(fs, [f"{r}/camera_params/{name}/camera_params.json" for r in calib_roots]
                   + ([f"{seq_parent}/camera_params.json"] if seq_parent else []))
    part = Participant(name, layout, calib or f"{calib_roots[0]}/camera_params/{name}/camera_params.json")
    part.color_dir = next((d for d in (f"{r}/color_correction/{name}" for r in calib_roots) if fs.isdir(d)), None)
    folders = [(s, f"{seq_parent}/{s}") for s in list_dirs(fs, seq_parent)] if seq_parent else []
    for s, d in [*folders, *extra]:
        if s == BACKGROUND:
            part.plates = d
        elif _has_videos(fs, d):
            part.sequences.setdefault(s, SequenceFiles(s, d, videos=d))
    return part


def find_participants(fs, base: str) -> tuple[list[Participant], list[tuple[str, str]]]:
    """(participants found, (folder, why) for folders that match no layout)."""
    top = list_dirs(fs, base)
    found: list[Participant] = []
    unmatched: list[tuple[str, str]] = []
    tasks = [t for t in BENCHMARK_TASKS if t in top]
    for task in tasks:  # the benchmark folder: its task folders hold v2-style participants
        sub, bad = find_participants(fs, f"{base}/{task}")
        found += sub
        unmatched += [(f"{task}/{f}", why) for f, why in bad]
    parts = {m["seq"]: d for d in top if (m := _PART.fullmatch(d))}
    if parts:  # v1-release: one folder per zip, each listed once (object stores: one request per folder)
        members = {seq: set(list_dirs(fs, f"{base}/{d}")) for seq, d in parts.items()}
        for name in sorted(set().union(*members.values())):
            extra = [(seq, f"{base}/{parts[seq]}/{name}/{seq}") for seq in sorted(parts) if name in members[seq]]
            found.append(_video_folders_participant(fs, name, "v1-release", "", [base], extra))
    handled = set(tasks) | set(parts.values()) | {"camera_params", "color_correction"}
    for d in top:
        if d in handled:
            continue
        p_dir = f"{base}/{d}"
        m = _PARTICIPANT.fullmatch(d)
        if m:
            inner = f"{p_dir}/{m['p']}"
            found.append(_video_folders_participant(fs, m["p"], "v1-participant", inner, [p_dir, base]))
            continue
        part = _v2_participant(fs, p_dir, d)
        if part is None and any(_has_videos(fs, f"{p_dir}/{s}") for s in list_dirs(fs, p_dir)):
            part = _video_folders_participant(fs, d, "v1-merged", p_dir, [base])
        if part is None:
            unmatched.append((d, _why_not(fs, p_dir)))
        else:
            found.append(part)
    return found, unmatched


def _why_not(fs, folder: str) -> str:
    dirs = list_dirs(fs, folder)
    try:
        files = [e.rsplit("/", 1)[-1] for e in fs.ls(folder, detail=False) if fs.isfile(e)]
    except (FileNotFoundError, NotADirectoryError):
        files = []
    listing = ", ".join([f"{d}/" for d in dirs[:6]] + files[:4]) or "nothing"
    return f"matches no NeRSemble layout (it holds {listing})"


def describe_top(fs, base: str, limit: int = 8) -> str:
    """The first entries at the top of a root, for an error message."""
    try:
        entries = sorted(fs.ls(base, detail=True), key=lambda e: e["name"])
    except (FileNotFoundError, NotADirectoryError):
        return "nothing"
    names = [e["name"].rstrip("/").rsplit("/", 1)[-1] + ("/" if e["type"] == "directory" else "") for e in entries]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return (", ".join(names[:limit]) + more) or "nothing (empty folder)"
