"""NeRSemble camera calibrations in the two formats the releases ship.

camera_params.json (v1 full release, paper subset, v2, benchmark; nersemble / nersemble_data /
nersemble_benchmark data managers):
    {"intrinsics": 3x3 shared (v1, v2) or {serial: 3x3} (benchmark), "world_2_cam": {serial: 4x4}}
    optional "width"/"height" (read by VHAP) give the image size the intrinsics are for.
calibration/calibration_result.json + calibration/config.json (DiffusionAvatars' processed release):
    result["params_result"]: "rs" [I][3] Rodrigues and "ts" [I][3] translations (world-to-camera),
    "intrinsics": [{"fx", "fy", "cx", "cy"}] (one shared, or one per camera; legacy files: fx, cx, cy
    at the top level of params_result); config["serials"] orders the cameras, config["image_size"].
All world-to-camera matrices are OpenCV (x right, y down, z forward), world in metres. Intrinsics are for
the full capture (2200 x 3208) unless the file says otherwise; `reference_size` is what the file says.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import cv2
import numpy as np

from datasets.cameras import as_4x4, check_calibration


class CalibrationError(ValueError):
    pass


@dataclass
class Calibration:
    """Cameras of one participant: K and world_to_cam per serial, the reason per unusable serial, and the
    image size (width, height) the intrinsics are for when the file says so."""

    path: str
    K: dict[str, np.ndarray] = field(default_factory=dict)
    world_to_cam: dict[str, np.ndarray] = field(default_factory=dict)
    bad: dict[str, str] = field(default_factory=dict)
    reference_size: tuple[int, int] | None = None

    def add(self, serial: str, K, E) -> None:
        try:
            K_arr = np.asarray(K, dtype=np.float64)
            E_arr = np.asarray(E, dtype=np.float64)
        except (TypeError, ValueError):
            self.bad[serial] = f"camera {serial}: calibration values are not numbers in {self.path}"
            return
        reason = check_calibration(K_arr, E_arr)
        if reason:
            self.bad[serial] = f"camera {serial}: {reason} in {self.path}"
            return
        self.K[serial], self.world_to_cam[serial] = K_arr, as_4x4(E_arr)


def _read_json(fs, path: str):
    try:
        with fs.open(path, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        raise CalibrationError(f"no calibration file at {path}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise CalibrationError(f"calibration file {path} is not valid JSON: {e}") from None


def _size(value) -> tuple[int, int] | None:
    """(width, height) from [w, h], {"w", "h"} or {"width", "height"}; None when absent or unreadable."""
    try:
        if isinstance(value, dict):
            w = value.get("width", value.get("w"))
            h = value.get("height", value.get("h"))
            return (int(w), int(h)) if w and h else None
        if isinstance(value, (list, tuple)) and len(value) == 2:
            return int(value[0]), int(value[1])
    except (TypeError, ValueError):
        return None
    return None


def load_camera_params(fs, path: str) -> Calibration:
    """camera_params.json -> Calibration."""
    data = _read_json(fs, path)
    if not isinstance(data, dict) or "world_2_cam" not in data or "intrinsics" not in data:
        raise CalibrationError(f"calibration file {path} lacks 'intrinsics' or 'world_2_cam'")
    cal = Calibration(path)
    if "width" in data and "height" in data:
        cal.reference_size = _size({"width": data["width"], "height": data["height"]})
    intrinsics = data["intrinsics"]
    for serial, E in data["world_2_cam"].items():
        serial = str(serial)
        K = intrinsics.get(serial) if isinstance(intrinsics, dict) else intrinsics
        if K is None:
            cal.bad[serial] = f"camera {serial} has no intrinsics in {path}"
            continue
        cal.add(serial, K, E)
    return cal


def _intrinsic_matrix(entry) -> np.ndarray:
    fx = float(entry["fx"])
    fy = float(entry.get("fy", fx))
    return np.array([[fx, 0.0, float(entry["cx"])], [0.0, fy, float(entry["cy"])], [0.0, 0.0, 1.0]])


def load_calibration_result(fs, result_path: str, config_path: str) -> Calibration:
    """calibration_result.json + config.json -> Calibration."""
    result, config = _read_json(fs, result_path), _read_json(fs, config_path)
    params = result.get("params_result") if isinstance(result, dict) else None
    serials = config.get("serials") if isinstance(config, dict) else None
    if not isinstance(params, dict) or "rs" not in params or "ts" not in params:
        raise CalibrationError(f"calibration file {result_path} lacks params_result.rs / params_result.ts")
    if not isinstance(serials, list) or not serials:
        raise CalibrationError(f"calibration config {config_path} lacks the camera list 'serials'")
    rs, ts = params["rs"], params["ts"]
    if len(rs) != len(serials) or len(ts) != len(serials):
        raise CalibrationError(f"{result_path} has {len(rs)} rotations and {len(ts)} translations for the "
                               f"{len(serials)} serials of {config_path}")
    intrinsics = params.get("intrinsics")
    if intrinsics is None and "fx" in params:  # legacy: one camera model at the top level
        intrinsics = [params]
    if isinstance(intrinsics, dict):
        intrinsics = [intrinsics]
    if not isinstance(intrinsics, list) or len(intrinsics) not in (1, len(serials)):
        raise CalibrationError(f"{result_path}: params_result.intrinsics must hold one camera model or one per "
                               f"camera ({len(serials)})")
    cal = Calibration(result_path, reference_size=_size(config.get("image_size")))
    for i, serial in enumerate(serials):
        serial = str(serial)
        try:
            K = _intrinsic_matrix(intrinsics[i if len(intrinsics) > 1 else 0])
            R, _ = cv2.Rodrigues(np.asarray(rs[i], np.float64).reshape(3, 1))
            E = np.eye(4)
            E[:3, :3], E[:3, 3] = R, np.asarray(ts[i], np.float64).reshape(3)
        except (KeyError, TypeError, ValueError, cv2.error):
            cal.bad[serial] = f"camera {serial}: unreadable pose or intrinsics in {result_path}"
            continue
        cal.add(serial, K, E)
    return cal
