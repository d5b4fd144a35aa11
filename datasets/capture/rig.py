"""A 16-camera rig like NeRSemble's: a frontal arc of about +-60 degrees yaw on three pitch levels,
portrait frames, all cameras aimed at the head. World: x right, y up, z towards the frontal camera
(metres). Cameras: OpenCV world-to-camera matrices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# (pitch degrees, yaw degrees of each camera on that level): 5 + 6 + 5 = 16 cameras
NERSEMBLE_LIKE_LEVELS = (
    (20.0, (-48.0, -24.0, 0.0, 24.0, 48.0)),
    (0.0, (-60.0, -36.0, -12.0, 12.0, 36.0, 60.0)),
    (-20.0, (-48.0, -24.0, 0.0, 24.0, 48.0)),
)


@dataclass(frozen=True)
class Camera:
    serial: str
    K: np.ndarray  # [3, 3]
    world_to_cam: np.ndarray  # [4, 4]
    width: int
    height: int
    yaw: float  # degrees, 0 = frontal
    pitch: float


def look_at(position: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, 1.0, 0.0])) -> np.ndarray:
    """[4, 4] OpenCV world-to-camera matrix of a camera at `position` looking at `target`."""
    z = target - position
    z = z / np.linalg.norm(z)
    x = np.cross(z, up)
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    E = np.eye(4)
    E[:3, :3] = R
    E[:3, 3] = -R @ position
    return E


def make_rig(width: int = 560, height: int = 800, distance: float = 1.0, view_height: float = 0.42,
             target: tuple[float, float, float] = (0.0, 0.0, 0.0),
             levels=NERSEMBLE_LIKE_LEVELS, serial_base: int = 222200036) -> list[Camera]:
    """Cameras on a sphere of `distance` around `target`; each frame spans `view_height` metres
    vertically at the target."""
    f = height * distance / view_height
    K = np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])
    tgt = np.asarray(target, dtype=np.float64)
    cams = []
    for pitch, yaws in levels:
        for yaw in yaws:
            p, y = np.radians(pitch), np.radians(yaw)
            pos = tgt + distance * np.array([np.sin(y) * np.cos(p), np.sin(p), np.cos(y) * np.cos(p)])
            cams.append(Camera(str(serial_base + len(cams)), K.copy(), look_at(pos, tgt), width, height, yaw, pitch))
    return cams
