"""Per-frame head motion and expression curves of a sequence, smooth and seeded."""

from __future__ import annotations

import numpy as np

from datasets.synthhead.expression import Expression

NECK_PIVOT = np.array([0.0, -0.075, -0.02])  # head-frame point the head turns about (top of the neck)

# what each sequence of a participant acts out, in turn
SCRIPTS = (("jaw_open", "blink"), ("smile", "brow", "blink"), ("jaw_open", "smile", "blink"),
           ("brow", "jaw_open", "blink"))


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """[3, 3] rotation: yaw about y (turn), pitch about x (nod), roll about z (tilt); radians."""
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    Rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return Ry @ Rx @ Rz


def head_poses(n_frames: int, rng: np.random.Generator, max_yaw_deg: float = 18.0) -> np.ndarray:
    """[T, 4, 4] world-from-head transforms: turns, nods and tilts about the neck, small shifts."""
    t = np.arange(n_frames) / max(1, n_frames)
    ph = rng.uniform(0, 2 * np.pi, 6)
    yaw = np.radians(max_yaw_deg) * np.sin(2 * np.pi * t + ph[0])
    pitch = np.radians(8.0) * np.sin(4 * np.pi * t + ph[1])
    roll = np.radians(4.0) * np.sin(2 * np.pi * t + ph[2])
    shift = np.stack([0.008 * np.sin(2 * np.pi * t + ph[3]), 0.005 * np.sin(2 * np.pi * t + ph[4]),
                      0.006 * np.sin(2 * np.pi * t + ph[5])], 1)
    poses = np.tile(np.eye(4), (n_frames, 1, 1))
    for i in range(n_frames):
        R = rotation(yaw[i], pitch[i], roll[i])
        poses[i, :3, :3] = R
        poses[i, :3, 3] = NECK_PIVOT - R @ NECK_PIVOT + shift[i]
    return poses


def _bump(t: np.ndarray, center: float, width: float) -> np.ndarray:
    """A raised-cosine bump of height 1 centred at `center` (fractions of the sequence)."""
    x = np.clip((t - center) / width, -1, 1)
    return 0.5 * (1 + np.cos(np.pi * x))


def expressions(n_frames: int, script: tuple[str, ...], rng: np.random.Generator) -> list[Expression]:
    """One Expression per frame: each expression of the script peaks once or twice, blinks are short."""
    t = (np.arange(n_frames) + 0.5) / max(1, n_frames)
    curves = {name: np.zeros(n_frames) for name in ("jaw_open", "smile", "brow", "blink")}
    slots = [name for name in script if name != "blink"]
    for k, name in enumerate(slots):
        center = (k + 0.5) / len(slots) + rng.uniform(-0.05, 0.05)
        curves[name] = np.maximum(curves[name], _bump(t, center, 0.5 / len(slots)) * rng.uniform(0.8, 1.0))
    if "blink" in script:
        for center in rng.uniform(0.1, 0.9, 2):
            curves["blink"] = np.maximum(curves["blink"], _bump(t, center, max(0.06, 1.6 / max(1, n_frames))))
    return [Expression(*(float(curves[k][i]) for k in ("jaw_open", "smile", "brow", "blink")))
            for i in range(n_frames)]
