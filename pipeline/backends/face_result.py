"""What a landmark backend returns for one image, and how one face is chosen among several."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class FaceResult:
    count: int  # faces found in the image
    landmarks68: np.ndarray | None = None  # [68, 3] x, y, confidence (iBUG order) of the chosen face
    landmarks_full: np.ndarray | None = None  # [P, 3] the detector's full set (mediapipe: x, y, z pixels)
    box: np.ndarray | None = None  # [5] x0, y0, x1, y1, score


def choose_face(boxes: list[np.ndarray], width: int, height: int, select: str) -> int:
    """Index of the face to keep: the one whose box centre is nearest the image centre, or the largest."""
    if select == "largest":
        return int(np.argmax([(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]))
    if select != "center":
        raise ValueError(f"face selection must be 'center' or 'largest', got {select!r}")
    c = np.array([(width - 1) / 2, (height - 1) / 2])
    return int(np.argmin([np.linalg.norm([(b[0] + b[2]) / 2 - c[0], (b[1] + b[3]) / 2 - c[1]]) for b in boxes]))


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boxes [>=4] (x0, y0, x1, y1)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0
