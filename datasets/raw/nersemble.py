"""NeRSemble readers (layouts of the official releases, as read by the dataset's own tooling).

v2 (one mp4 per camera, calibration per participant):
    {p:03d}/calibration/camera_params.json        {"intrinsics": 3x3, "world_2_cam": {serial: 4x4}}
    {p:03d}/sequences/{SEQ}/images/cam_{serial}.mp4
    {p:03d}/sequences/BACKGROUND/image_{serial}.jpg
v1 (one image per frame and camera, every third frame of the 73 fps capture, at half resolution):
    {p:03d}/camera_params.json  (or calibration/camera_params.json), intrinsics at full resolution
    {p:03d}/sequences/{SEQ}/timesteps/frame_{t:05d}/images-2x/cam_{serial}.jpg
    (also accepted: frame folders directly under {SEQ}, `images` or `images-{k}x`, .png)

World-to-camera matrices are OpenCV convention. Intrinsics may also be given per serial.
"""

from __future__ import annotations

import json
import re

import numpy as np

from datasets.cameras import as_4x4, check_calibration, rescale_intrinsics
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
from datasets.raw.sources import ImageSequence, VideoSource

BACKGROUND = "BACKGROUND"
_FRAME_DIR = re.compile(r"frame_(\d+)")
_IMAGES_DIR = re.compile(r"images(?:-(\d+)x)?")
_CAM_FILE = re.compile(r"cam_(.+)\.(mp4|jpg|jpeg|png)", re.IGNORECASE)


class CalibrationError(ValueError):
    pass


def load_calibration(fs, path: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, str]]:
    """camera_params.json -> (K per serial, world_to_cam per serial, reason per unusable serial)."""
    try:
        with fs.open(path, "rb") as f:
            data = json.loads(f.read())
    except FileNotFoundError:
        raise CalibrationError(f"no calibration file at {path}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise CalibrationError(f"calibration file {path} is not valid JSON: {e}") from None
    if not isinstance(data, dict) or "world_2_cam" not in data or "intrinsics" not in data:
        raise CalibrationError(f"calibration file {path} lacks 'intrinsics' or 'world_2_cam'")
    extrinsics = data["world_2_cam"]
    intrinsics = data["intrinsics"]
    Ks, Es, bad = {}, {}, {}
    for serial, E in extrinsics.items():
        serial = str(serial)
        K = intrinsics.get(serial) if isinstance(intrinsics, dict) else intrinsics
        if K is None:
            bad[serial] = f"camera {serial} has no intrinsics in {path}"
            continue
        try:
            K_arr = np.asarray(K, dtype=np.float64)
            E_arr = np.asarray(E, dtype=np.float64)
        except (TypeError, ValueError):
            bad[serial] = f"camera {serial}: calibration values are not numbers in {path}"
            continue
        reason = check_calibration(K_arr, E_arr)
        if reason:
            bad[serial] = f"camera {serial}: {reason} in {path}"
            continue
        Ks[serial], Es[serial] = K_arr, as_4x4(E_arr)
    return Ks, Es, bad


def _calibration_path(fs, participant_dir: str) -> str:
    for rel in ("calibration/camera_params.json", "camera_params.json"):
        if fs.exists(f"{participant_dir}/{rel}"):
            return f"{participant_dir}/{rel}"
    return f"{participant_dir}/calibration/camera_params.json"


def _v1_frame_dirs(fs, seq_dir: str) -> tuple[str, list[tuple[int, str]]]:
    """(folder holding frame_* dirs, [(frame id, dir name)]) of a v1 sequence."""
    for base in (f"{seq_dir}/timesteps", seq_dir):
        frames = [(int(m.group(1)), d) for d in list_dirs(fs, base) if (m := _FRAME_DIR.fullmatch(d))]
        if frames:
            return base, sorted(frames)
    return seq_dir, []


def _v1_images_dir(fs, frame_dir: str) -> tuple[str, int] | None:
    """(images folder name, downscale factor) inside one v1 frame folder; the finest one wins."""
    found = []
    for d in list_dirs(fs, frame_dir):
        m = _IMAGES_DIR.fullmatch(d)
        if m:
            found.append((int(m.group(1) or 1), d))
    if not found:
        return None
    factor, name = min(found)
    return name, factor


def _layout_of(fs, seq_dir: str) -> str | None:
    if list_files(fs, f"{seq_dir}/images", (".mp4",)):
        return "v2"
    if _v1_frame_dirs(fs, seq_dir)[1]:
        return "v1"
    return None


def _background_plates(fs, participant_dir: str) -> dict[str, str]:
    """serial -> URL of its background plate (v2 `image_{serial}.jpg`, or frame 0 of a v1 BACKGROUND)."""
    bg_dir = f"{participant_dir}/sequences/{BACKGROUND}"
    plates = {}
    for name in list_files(fs, bg_dir, IMAGE_SUFFIXES):
        m = re.fullmatch(r"image_(.+)\.\w+", name)
        if m:
            plates[m.group(1)] = to_url(fs, f"{bg_dir}/{name}")
    if not plates:
        base, frames = _v1_frame_dirs(fs, bg_dir)
        if frames:
            found = _v1_images_dir(fs, f"{base}/{frames[0][1]}")
            if found:
                img_dir = f"{base}/{frames[0][1]}/{found[0]}"
                for name in list_files(fs, img_dir, IMAGE_SUFFIXES):
                    m = _CAM_FILE.fullmatch(name)
                    if m:
                        plates[m.group(1)] = to_url(fs, f"{img_dir}/{name}")
    return plates


def read_nersemble(root: str, selection: Selection, version: str = "auto") -> RawPlan:
    """List the clips of a NeRSemble capture root (v1, v2, or auto-detected per sequence)."""
    if version not in ("auto", "v1", "v2"):
        raise ConfigError(f"NeRSemble version must be auto, v1 or v2, got {version!r}")
    fs, base = filesystem(root)
    if not fs.isdir(base):
        raise RawDataError(f"NeRSemble root {root} is not a directory")
    plan = RawPlan()
    for participant in list_dirs(fs, base):
        p_dir = f"{base}/{participant}"
        if not fs.isdir(f"{p_dir}/sequences"):
            continue
        try:
            validate_name(participant, "subject")
        except InvalidNameError as e:
            plan.add_issue(participant, str(e))
            continue
        sequences = [s for s in list_dirs(fs, f"{p_dir}/sequences") if s != BACKGROUND]
        wanted = []
        for seq in sequences:
            try:
                validate_name(seq, "sequence")
            except InvalidNameError as e:
                plan.add_issue(f"{participant}/{seq}", str(e))
                continue
            if selection.wants(participant, seq):
                wanted.append(seq)
        if not wanted:
            continue
        calib_path = _calibration_path(fs, p_dir)
        try:
            Ks, Es, bad = load_calibration(fs, calib_path)
        except CalibrationError as e:
            for seq in wanted:
                plan.add_issue(f"{participant}/{seq}", str(e))
            continue
        plates = _background_plates(fs, p_dir)
        for seq in wanted:
            _read_sequence(fs, plan, participant, seq, f"{p_dir}/sequences/{seq}", Ks, Es, bad, plates,
                           selection, version)
    return plan


def _read_sequence(fs, plan: RawPlan, subject: str, seq: str, seq_dir: str, Ks, Es, bad, plates,
                   selection: Selection, version: str) -> None:
    key = f"{subject}/{seq}"
    layout = _layout_of(fs, seq_dir) if version == "auto" else version
    if layout is None:
        plan.add_issue(key, f"sequence has no frames: no images/cam_*.mp4 and no frame_* folders in {seq_dir}")
        return
    if layout == "v2":
        cams = {}
        for name in list_files(fs, f"{seq_dir}/images", (".mp4",)):
            m = _CAM_FILE.fullmatch(name)
            if m:
                cams[m.group(1)] = VideoSource(to_url(fs, f"{seq_dir}/images/{name}"))
        factors = {serial: 1 for serial in cams}
    else:
        cams, factors = _v1_cameras(fs, plan, key, seq_dir)
    if not cams:
        plan.add_issue(key, f"sequence has no frames: no camera files found in {seq_dir}")
        return
    views, counts, fps = [], [], 0.0
    for serial in sorted(cams):
        if serial in bad:
            plan.add_issue(key, bad[serial], view=serial)
            continue
        if serial not in Es:
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
        K = rescale_intrinsics(Ks[serial], factors[serial]) if factors[serial] != 1 else Ks[serial]
        views.append(ViewSpec(serial, as_tuple(K), as_tuple(Es[serial]), cams[serial], width, height, plates.get(serial)))
        counts.append(n)
        fps = fps or view_fps
    if not views:
        plan.add_issue(key, "no usable camera in this sequence")
        return
    if layout == "v2":
        frame_ids = selection.frame_ids(max(counts))
    else:
        all_ids = sorted({fid for v in views for fid in v.source.frame_ids})
        frame_ids = tuple(all_ids[:: max(1, selection.stride)])
    plan.clips.append(ClipSpec(f"nersemble-{layout}", subject, seq, tuple(views), frame_ids, fps))


def _v1_cameras(fs, plan: RawPlan, key: str, seq_dir: str):
    base, frames = _v1_frame_dirs(fs, seq_dir)
    per_cam: dict[str, list[tuple[int, str]]] = {}
    factors: dict[str, int] = {}
    for fid, frame_dir in frames:
        found = _v1_images_dir(fs, f"{base}/{frame_dir}")
        if found is None:
            plan.add_issue(key, f"frame folder {base}/{frame_dir} has no images folder", frame=fid)
            continue
        img_dir = f"{base}/{frame_dir}/{found[0]}"
        for name in list_files(fs, img_dir, IMAGE_SUFFIXES):
            m = _CAM_FILE.fullmatch(name)
            if m:
                per_cam.setdefault(m.group(1), []).append((fid, to_url(fs, f"{img_dir}/{name}")))
                factors.setdefault(m.group(1), found[1])
    cams = {
        serial: ImageSequence(tuple(u for _, u in items), tuple(f for f, _ in items))
        for serial, items in per_cam.items()
    }
    return cams, factors


