"""NeRSemble readers: every packaging of datasets/raw/nersemble_layouts.py, detected per participant.

A sequence is either a folder of `cam_{serial}.mp4` videos (v2, benchmark, v1 release and its repackagings)
or per-frame folders `frame_{t:05d}/<images folder>/cam_{serial}.{jpg,png}` (paper subset, processed
release). Per view the reader attaches what the release ships beside the frames: the background plate,
the release's mattes (benchmark `alpha_maps/`, per-frame `alpha_map*/`), its colour correction (v1 .npy
affines, v2 colour calibration) and per clip its FLAME tracking. Intrinsics are checked against the decoded
frame size (datasets/raw/intrinsics_check.py): rescaled for an exact downscale (noted in the provenance),
the view refused otherwise. World-to-camera matrices are OpenCV.
"""

from __future__ import annotations

import re

from datasets.color_correction import (
    ColorCorrection,
    ColorCorrectionError,
    load_v1,
    load_v2,
)
from datasets.errors import ConfigError
from datasets.names import InvalidNameError, validate_name
from datasets.raw.base import (
    IMAGE_SUFFIXES,
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
from datasets.raw.intrinsics_check import fit_intrinsics
from datasets.raw.nersemble_calibration import (
    Calibration,
    CalibrationError,
    load_calibration_result,
    load_camera_params,
)
from datasets.raw.nersemble_layouts import (
    LAYOUTS,
    Participant,
    SequenceFiles,
    describe_top,
    find_participants,
)
from datasets.raw.sources import ImageSequence, VideoSource

_FRAME_DIR = re.compile(r"frame_(\d+)")
_IMAGES_DIR = re.compile(r"images(?:-(\d+)x)?(?:-\d+fps)?")
_ALPHA_DIR = re.compile(r"alpha_maps?(?:-\d+fps)?")
_CAM_FILE = re.compile(r"cam_(.+)\.(mp4|jpg|jpeg|png)", re.IGNORECASE)
VERSIONS = ("auto", "v1", "v2")


def family(layout: str) -> str:
    """v2 for the v2 toolkit's packagings, v1 for the v1 release and its processed forms."""
    return "v2" if layout.startswith("v2") else "v1"


def load_calibration(fs, part: Participant) -> Calibration:
    if part.calibration_config:
        return load_calibration_result(fs, part.calibration, part.calibration_config)
    return load_camera_params(fs, part.calibration)


def _frame_dirs(fs, seq_dir: str) -> tuple[str, list[tuple[int, str]]]:
    """(folder holding frame_* dirs, [(frame id, dir name)]) of a per-frame sequence."""
    for base in (f"{seq_dir}/timesteps", seq_dir):
        frames = [(int(m.group(1)), d) for d in list_dirs(fs, base) if (m := _FRAME_DIR.fullmatch(d))]
        if frames:
            return base, sorted(frames)
    return seq_dir, []


def _images_dir(fs, frame_dir: str) -> tuple[str, int, str | None] | None:
    """(images folder, downscale factor, alpha folder or None) inside one frame folder; the finest images
    folder wins."""
    found, alpha = [], None
    for d in list_dirs(fs, frame_dir):
        m = _IMAGES_DIR.fullmatch(d)
        if m:
            found.append((int(m.group(1) or 1), d))
        elif _ALPHA_DIR.fullmatch(d):
            alpha = d
    if not found:
        return None
    factor, name = min(found)
    return name, factor, alpha


def _background_plates(fs, folder: str | None) -> dict[str, str]:
    """serial -> URL of its background plate (`image_{serial}.jpg`, or frame 0 of a per-frame BACKGROUND)."""
    if not folder:
        return {}
    plates = {}
    for name in list_files(fs, folder, IMAGE_SUFFIXES):
        m = re.fullmatch(r"image_(.+)\.\w+", name)
        if m:
            plates[m.group(1)] = to_url(fs, f"{folder}/{name}")
    if not plates:
        base, frames = _frame_dirs(fs, folder)
        found = _images_dir(fs, f"{base}/{frames[0][1]}") if frames else None
        if found:
            img_dir = f"{base}/{frames[0][1]}/{found[0]}"
            for name in list_files(fs, img_dir, IMAGE_SUFFIXES):
                m = _CAM_FILE.fullmatch(name)
                if m:
                    plates[m.group(1)] = to_url(fs, f"{img_dir}/{name}")
    return plates


def _videos(fs, folder: str | None) -> dict[str, VideoSource]:
    if not folder:
        return {}
    out = {}
    for name in list_files(fs, folder, (".mp4",)):
        m = _CAM_FILE.fullmatch(name)
        if m:
            out[m.group(1)] = VideoSource(to_url(fs, f"{folder}/{name}"))
    return out


def _frame_cameras(fs, plan: RawPlan, key: str, seq_dir: str):
    """Per serial: ImageSequence of its frames, ImageSequence of the release's mattes (or None), and the
    downscale factor the images folder names (a hint for the intrinsics check)."""
    base, frames = _frame_dirs(fs, seq_dir)
    images: dict[str, list[tuple[int, str]]] = {}
    mattes: dict[str, list[tuple[int, str]]] = {}
    factors: dict[str, int] = {}
    for fid, frame_dir in frames:
        found = _images_dir(fs, f"{base}/{frame_dir}")
        if found is None:
            plan.add_issue(key, f"frame folder {base}/{frame_dir} has no images folder", frame=fid)
            continue
        for folder, target in ((found[0], images), (found[2], mattes)):
            if folder is None:
                continue
            path = f"{base}/{frame_dir}/{folder}"
            for name in list_files(fs, path, IMAGE_SUFFIXES):
                m = _CAM_FILE.fullmatch(name)
                if m:
                    target.setdefault(m.group(1), []).append((fid, to_url(fs, f"{path}/{name}")))
                    if target is images:
                        factors.setdefault(m.group(1), found[1])

    def seq(items):
        return ImageSequence(tuple(u for _, u in items), tuple(f for f, _ in items))

    cams = {serial: seq(items) for serial, items in images.items()}
    alphas = {serial: seq(items) for serial, items in mattes.items()}
    return cams, alphas, factors


def _colors(fs, plan: RawPlan, key: str, part: Participant, seq: SequenceFiles, serials) -> dict[str, ColorCorrection]:
    """serial -> the release's colour correction; unreadable files are ledger items (the view stays, uncorrected)."""
    out: dict[str, ColorCorrection] = {}
    if part.color_json:
        try:
            out.update(load_v2(fs, part.color_json))
        except ColorCorrectionError as e:
            plan.add_issue(key, f"colour calibration not used: {e}")
    folder = seq.color_dir or part.color_dir
    if folder:
        for serial in serials:
            path = f"{folder}/{serial}.npy"
            if not fs.exists(path):
                continue
            try:
                out[serial] = load_v1(fs, path)
            except ColorCorrectionError as e:
                plan.add_issue(key, f"colour correction not used: {e}", view=serial)
    return out


def read_nersemble(root: str, selection: Selection, version: str = "auto") -> RawPlan:
    """List the clips of a NeRSemble root (any packaging; `version` v1 / v2 keeps that family only)."""
    if version not in VERSIONS:
        raise ConfigError(f"NeRSemble version must be one of {VERSIONS}, got {version!r}")
    fs, base = filesystem(root)
    if not fs.isdir(base):
        raise RawDataError(f"NeRSemble root {root} is not a directory")
    participants, unmatched = find_participants(fs, base)
    plan = RawPlan()
    for folder, why in unmatched:  # a participant id (NeRSemble's are numbers) that matches no layout
        if folder.rsplit("/", 1)[-1].isdigit():
            plan.add_issue(folder, why)
    usable = [p for p in participants if version in ("auto", family(p.layout))]
    for part in usable:
        _read_participant(fs, plan, part, selection)
    if not usable:
        which = "" if version == "auto" else f" of the {version} family"
        raise RawDataError(
            f"no NeRSemble participant{which} found under {root}: looked for the layouts "
            f"{', '.join(LAYOUTS)} (see the README's dataset table); the root holds {describe_top(fs, base)}"
            + (f"; e.g. {unmatched[0][0]}: {unmatched[0][1]}" if unmatched else ""))
    return plan


def _read_participant(fs, plan: RawPlan, part: Participant, selection: Selection) -> None:
    try:
        validate_name(part.name, "subject")
    except InvalidNameError as e:
        plan.add_issue(part.name, str(e))
        return
    plan.layouts[part.name] = part.layout
    wanted = []
    for name, seq in sorted(part.sequences.items()):
        try:
            validate_name(name, "sequence")
        except InvalidNameError as e:
            plan.add_issue(f"{part.name}/{name}", str(e))
            continue
        if selection.wants(part.name, name):
            wanted.append(seq)
        else:
            plan.unselected += 1
    if not wanted:
        if not part.sequences:
            plan.add_issue(part.name, f"participant ({part.layout} layout) has no sequence with camera files")
        return
    try:
        cal = load_calibration(fs, part)
    except CalibrationError as e:
        for seq in wanted:
            plan.add_issue(f"{part.name}/{seq.name}", str(e))
        return
    plates = _background_plates(fs, part.plates)
    for seq in wanted:
        _read_sequence(fs, plan, part, seq, cal, plates, selection)


def _read_sequence(fs, plan: RawPlan, part: Participant, seq: SequenceFiles, cal: Calibration,
                   plates: dict[str, str], selection: Selection) -> None:
    key = f"{part.name}/{seq.name}"
    cams = _videos(fs, seq.videos)
    if cams:
        alphas, factors = _videos(fs, seq.alpha_videos), {}
    else:
        cams, alphas, factors = _frame_cameras(fs, plan, key, seq.path)
    if not cams:
        plan.add_issue(key, f"sequence has no frames: no cam_*.mp4 and no frame_* folders with images in {seq.path}")
        return
    colors = _colors(fs, plan, key, part, seq, cams)
    views, counts, fps, notes = [], [], 0.0, []
    for serial in sorted(cams):
        if serial in cal.bad:
            plan.add_issue(key, cal.bad[serial], view=serial)
            continue
        if serial not in cal.world_to_cam:
            plan.add_issue(key, f"camera {serial} has frames but is missing from the calibration", view=serial)
            continue
        try:
            n, width, height, view_fps = cams[serial].describe()
        except Exception as e:  # noqa: BLE001 - any unreadable source is an item failure
            plan.add_issue(key, f"cannot read camera {serial}: {e}", view=serial)
            continue
        if n == 0:
            plan.add_issue(key, f"camera {serial} has no frames", view=serial)
            continue
        fit = fit_intrinsics(cal.K[serial], (width, height), cal.reference_size, factors.get(serial, 1))
        if fit.K is None:
            plan.add_issue(key, f"camera {serial}: {fit.problem}", view=serial)
            continue
        if fit.note:
            notes.append(f"camera {serial}: {fit.note}")
        views.append(ViewSpec(serial, as_tuple(fit.K), as_tuple(cal.world_to_cam[serial]), cams[serial], width,
                              height, plates.get(serial), alphas.get(serial), colors.get(serial)))
        counts.append(n)
        fps = fps or view_fps
    if not views:
        plan.add_issue(key, "no usable camera in this sequence")
        return
    if isinstance(views[0].source, VideoSource):
        frame_ids = selection.frame_ids(max(counts))
    else:
        all_ids = sorted({fid for v in views for fid in v.source.frame_ids})
        frame_ids = tuple(all_ids[:: max(1, selection.stride)])
    if seq.tracking:
        notes.append(f"FLAME tracking released: {seq.tracking}")
    plan.clips.append(ClipSpec(f"nersemble-{family(part.layout)}", part.name, seq.name, tuple(views), frame_ids, fps,
                               layout=part.layout, notes=tuple(notes),
                               tracking=to_url(fs, seq.tracking) if seq.tracking else None))
