"""FLAME tracking as NeRSemble releases ship it (benchmark `tracking/flame2023_tracking[_v2].npz`,
DiffusionAvatars' `tracked_flame_params.npz`), aligned to a clip's stored frames.

npz keys (nersemble_benchmark's FlameTracking): shape [1, S], expression [T, X], rotation [T, 3] (Euler
angles, intrinsic XYZ, radians), translation [T, 3], jaw [T, 3], neck [T, 3], eyes [T, 6] (axis-angle),
scale [1, 1], frames [T] (the capture frame of each row; optional: rows are frames 0..T-1 otherwise).
The model-to-world transform is v_world = scale * R_xyz(rotation) @ v + translation, in the metric world
of the calibration's world_2_cam (FLAME's own global rotation and translation are zero).
"""

from __future__ import annotations

from dataclasses import dataclass

import fsspec
import numpy as np

PER_FRAME = {"rotation": 3, "translation": 3, "jaw": 3, "neck": 3, "eyes": 6}


class TrackingError(ValueError):
    """A tracking file that cannot be used; the message names it and says why."""


@dataclass
class FlameTracking:
    shape: np.ndarray  # [S]
    expression: np.ndarray  # [T, X]
    rotation: np.ndarray  # [T, 3] Euler XYZ (intrinsic), radians
    translation: np.ndarray  # [T, 3]
    jaw: np.ndarray  # [T, 3]
    neck: np.ndarray  # [T, 3]
    eyes: np.ndarray  # [T, 6]
    scale: float
    ok: np.ndarray  # [T] bool: the row exists

    def arrays(self) -> dict[str, np.ndarray]:
        """The store's `tracking/*` arrays (datasets/schema.py)."""
        out = {f"tracking/{k}": getattr(self, k).astype(np.float32) for k in (*PER_FRAME, "expression", "shape")}
        out["tracking/scale"] = np.array([self.scale], np.float32)
        out["tracking/ok"] = self.ok
        return out


def read_tracking(url: str, frame_ids: list[int] | tuple[int, ...]) -> FlameTracking:
    """The tracking file's rows for the given capture frame ids (missing rows: ok False, zeros)."""
    try:
        with fsspec.open(url, "rb") as f:
            data = dict(np.load(f, allow_pickle=False))
    except (OSError, ValueError) as e:
        raise TrackingError(f"{url}: not a readable .npz tracking file: {e}") from None
    missing = [k for k in ("shape", "expression", "rotation", "translation") if k not in data]
    if missing:
        raise TrackingError(f"{url}: lacks {', '.join(missing)} (keys: {', '.join(sorted(data))})")
    T = len(data["rotation"])
    rows = {}
    for key, width in {**PER_FRAME, "expression": data["expression"].shape[-1]}.items():
        value = np.asarray(data.get(key, np.zeros((T, width))), np.float64)
        if value.shape != (T, width):
            raise TrackingError(f"{url}: {key} has shape {value.shape}, expected ({T}, {width})")
        rows[key] = value
    frames = np.asarray(data.get("frames", np.arange(T)), np.int64).reshape(-1)
    if len(frames) != T:
        raise TrackingError(f"{url}: frames has {len(frames)} entries for {T} rows")
    where = {int(f): i for i, f in enumerate(frames)}
    index = np.array([where.get(int(f), -1) for f in frame_ids], np.int64)
    ok = index >= 0
    picked = {k: np.where(ok[:, None], v[np.maximum(index, 0)], 0.0) for k, v in rows.items()}
    scale = float(np.asarray(data.get("scale", 1.0)).reshape(-1)[0])
    return FlameTracking(np.asarray(data["shape"], np.float64).reshape(-1), picked["expression"], picked["rotation"],
                         picked["translation"], picked["jaw"], picked["neck"], picked["eyes"], scale, ok)


def euler_xyz(angles: np.ndarray) -> np.ndarray:
    """[..., 3] intrinsic X-Y-Z Euler angles (scipy's 'XYZ') -> [..., 3, 3] = Rx(a) @ Ry(b) @ Rz(c)."""
    a, b, c = np.moveaxis(np.asarray(angles, np.float64), -1, 0)
    ca, sa, cb, sb, cc, sc = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(c), np.sin(c)
    one, zero = np.ones_like(a), np.zeros_like(a)
    Rx = np.stack([one, zero, zero, zero, ca, -sa, zero, sa, ca], -1)
    Ry = np.stack([cb, zero, sb, zero, one, zero, -sb, zero, cb], -1)
    Rz = np.stack([cc, -sc, zero, sc, cc, zero, zero, zero, one], -1)
    shape = a.shape + (3, 3)
    return Rx.reshape(shape) @ Ry.reshape(shape) @ Rz.reshape(shape)
