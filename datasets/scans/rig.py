"""The fixed camera rig every scan of a dataset is rendered with.

Cameras sit on rings of constant pitch around the head centre, all at the same distance, looking at it
(OpenCV: x right, y down, z forward; the image's up is the head's up). The default 80 cameras:

    pitches   -30, -15, 0, +15, +30 degrees (5 rings; + looks down on the head from above)
    yaws      16 per ring, every 22.5 degrees, the full circle; odd rings turned by half a step (11.25)
              so that the rings interleave; yaw 0 faces the face, +90 the subject's left side
    distance  1.0 m (in the scan's units: units_per_metre)
    focal     3.0 image sides: a 0.30 m box around the head centre fills 90% of the square frame

Camera i is on ring i % 5, at yaw step i // 5: the first n of any count are spread over all rings (the
`views` override for tests and quick looks keeps that spread). Pixel centres are at integer coordinates,
the principal point at the frame centre ((size - 1) / 2).

A dataset places the rig in its scans' coordinates with a HeadFrame: the head centre, the scan units
per metre and the scan axes (which way is up and which way the face looks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from datasets.capture.rig import look_at  # OpenCV world-to-camera of a camera looking at a point

PITCHES = (-30.0, -15.0, 0.0, 15.0, 30.0)  # degrees, one ring each
DEFAULT_VIEWS = 80
DISTANCE_M = 1.0  # camera distance from the head centre, metres
FOCAL_SIDES = 3.0  # focal length in units of the image side
HEAD_BOX_M = 0.30  # the box (metres) that fills FILL of the frame at that focal and distance
FILL = FOCAL_SIDES * HEAD_BOX_M / DISTANCE_M  # = 0.9


@dataclass(frozen=True)
class HeadFrame:
    """Where the head is in a dataset's scan coordinates."""

    centre: tuple[float, float, float]  # the point the cameras look at, scan units
    units_per_metre: float  # scan units in one metre (NPHM: 4, FLAME's metres times 4)
    up: tuple[float, float, float] = (0.0, 1.0, 0.0)  # the head's up, scan axes
    forward: tuple[float, float, float] = (0.0, 0.0, 1.0)  # the way the face looks, scan axes


def ring_angles(n_views: int) -> np.ndarray:
    """[n, 2] (yaw, pitch) degrees of the first n cameras of the rig."""
    rings = len(PITCHES)
    per_ring = -(-n_views // rings)
    step = 360.0 / per_ring
    out = []
    for i in range(n_views):
        ring, k = i % rings, i // rings
        yaw = (k * step + (step / 2 if ring % 2 else 0.0)) % 360.0
        out.append((yaw, PITCHES[ring]))
    return np.array(out, np.float64)


def intrinsics(size: int) -> np.ndarray:
    f = FOCAL_SIDES * size
    c = (size - 1) / 2.0
    return np.array([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]])


def camera_directions(n_views: int, frame: HeadFrame) -> np.ndarray:
    """[n, 3] unit vectors from the head centre to each camera, scan axes."""
    up = np.asarray(frame.up, np.float64)
    fwd = np.asarray(frame.forward, np.float64)
    left = np.cross(up, fwd)  # the subject's left (x in a y-up, z-forward head frame)
    out = []
    for yaw, pitch in np.radians(ring_angles(n_views)):
        out.append(np.cos(pitch) * (np.cos(yaw) * fwd + np.sin(yaw) * left) + np.sin(pitch) * up)
    return np.array(out)


def make_scan_rig(frame: HeadFrame, size: int, n_views: int = DEFAULT_VIEWS
                  ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(serials, K [n, 3, 3], world_to_cam [n, 4, 4]) of the rig in the scan's coordinates, for square
    frames of `size` pixels."""
    centre = np.asarray(frame.centre, np.float64)
    up = np.asarray(frame.up, np.float64)
    distance = DISTANCE_M * frame.units_per_metre
    dirs = camera_directions(n_views, frame)
    E = np.stack([look_at(centre + distance * d, centre, up) for d in dirs])
    K = np.repeat(intrinsics(size)[None], n_views, 0)
    return [f"view{i:02d}" for i in range(n_views)], K, E
