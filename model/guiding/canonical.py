"""The canonical space of the head model: the fitted head frame re-oriented, centred and scaled from
the training set's mean 3D landmarks, so that the head is about 1 long whatever the fitting backend's
units (template metres, BFM millimetres, FLAME metres). The paper's thresholds (t1, t2) assume this.

    head frame x  ->  canonical c = rotation @ (x - origin) / unit
    world = scale * R_pose @ x + t_pose  ->  world = A c + b,  A = scale * unit * R_pose @ rotation.T

Axes from the landmarks (iBUG-68): x from the right jaw corner (0) to the left one (16), y from the chin
(8) towards the nose bridge (27), z = x cross y out of the face. The head length is taken as the jaw width
/ 0.7 and the origin sits behind the landmarks, near the skull's centre (offsets measured on the
project's landmark template and its synthetic heads).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

JAW_WIDTH = 0.7  # jaw width (landmarks 0-16) in head lengths
CENTRE_OFFSET = (0.0, 0.12, -0.36)  # skull centre from the landmarks' centroid, canonical units


@dataclass
class CanonicalFrame:
    rotation: np.ndarray  # [3, 3] rows: canonical axes in the head frame
    origin: np.ndarray  # [3] canonical origin in the head frame
    unit: float  # head-frame units per canonical unit

    @staticmethod
    def from_landmarks(mean_head: np.ndarray) -> CanonicalFrame:
        """mean_head: [68, 3] mean fitted landmarks in the head frame."""
        p = np.asarray(mean_head, np.float64)
        x = p[16] - p[0]
        width = float(np.linalg.norm(x))
        if not np.isfinite(width) or width <= 0:
            raise ValueError("the mean fitted landmarks are degenerate (jaw corners coincide)")
        x /= width
        up = p[27] - p[8]
        y = up - x * float(up @ x)
        y /= np.linalg.norm(y)
        z = np.cross(x, y)
        rotation = np.stack([x, y, z])
        unit = width / JAW_WIDTH
        origin = p.mean(0) + unit * rotation.T @ np.asarray(CENTRE_OFFSET)
        return CanonicalFrame(rotation, origin, unit)

    def to_canonical(self, head: np.ndarray) -> np.ndarray:
        """head: [..., 3] head-frame points -> [..., 3] canonical."""
        return (np.asarray(head) - self.origin) @ self.rotation.T / self.unit

    def state(self) -> dict[str, Tensor]:
        return {"rotation": torch.tensor(self.rotation, dtype=torch.float64),
                "origin": torch.tensor(self.origin, dtype=torch.float64),
                "unit": torch.tensor(self.unit, dtype=torch.float64)}

    @staticmethod
    def from_state(state: dict[str, Tensor]) -> CanonicalFrame:
        return CanonicalFrame(state["rotation"].numpy(), state["origin"].numpy(), float(state["unit"]))


def world_transform(frame: CanonicalFrame, pose: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
    """Canonical -> world per sample. pose: [B, 4, 4]; scale: [B] -> (A [B, 3, 3], b [B, 3]): world = A c + b."""
    rot = torch.as_tensor(frame.rotation, dtype=pose.dtype, device=pose.device)
    origin = torch.as_tensor(frame.origin, dtype=pose.dtype, device=pose.device)
    R, t = pose[:, :3, :3], pose[:, :3, 3]
    A = (scale * frame.unit)[:, None, None] * R @ rot.T
    b = scale[:, None] * (R @ origin) + t
    return A, b
