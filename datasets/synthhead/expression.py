"""Expressions as smooth displacements of landmark regions of the face mesh (head frame, metres).

    jaw_open  the mandible rotates about an axis between the ears, the lower lip with it
    smile     mouth corners move up and out
    brow      eyebrows and the forehead above them rise
    blink     upper eyelids close onto the lower ones
Each is in [0, 1]; `deform(face_verts, expr)` applies them all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LOWER_LIP = [146, 91, 181, 84, 17, 314, 405, 321, 375, 95, 88, 178, 87, 14, 317, 402, 318, 324]
UPPER_LIP = [185, 40, 39, 37, 0, 267, 269, 270, 409, 191, 80, 81, 82, 13, 312, 311, 310, 415]
MOUTH_CORNERS = [61, 291, 78, 308]
EYES = (  # (upper lid, lower lid, brow) from the outer to the inner corner
    ([33, 246, 161, 160, 159, 158, 157, 173, 133], [33, 7, 163, 144, 145, 153, 154, 155, 133],
     [70, 63, 105, 66, 107, 46, 53, 52, 65, 55]),
    ([263, 466, 388, 387, 386, 385, 384, 398, 362], [263, 249, 390, 373, 374, 380, 381, 382, 362],
     [300, 293, 334, 296, 336, 276, 283, 282, 295, 285]),
)
IRISES = [list(range(468, 473)), list(range(473, 478))]


@dataclass
class Expression:
    jaw_open: float = 0.0
    smile: float = 0.0
    brow: float = 0.0
    blink: float = 0.0

    def as_array(self) -> np.ndarray:
        return np.array([self.jaw_open, self.smile, self.brow, self.blink], np.float32)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def jaw_weights(v: np.ndarray) -> np.ndarray:
    """[N] how much each face vertex follows the mandible (1 chin and lower lip, 0 above the mouth)."""
    corners = v[[61, 291]]
    y_mouth = corners[:, 1].mean()
    half = np.abs(corners[:, 0]).mean()
    # the split line runs through the mouth corners and rises towards the jaw joints beside the ears
    lateral = np.clip((np.abs(v[:, 0]) - half) / (0.072 - half), 0, 1) ** 1.5
    y_split = y_mouth + (-0.01 - y_mouth) * lateral
    w = _smoothstep((y_split - v[:, 1]) / 0.014)
    w[LOWER_LIP] = 1.0
    w[UPPER_LIP] = 0.0
    w[MOUTH_CORNERS] = 0.35
    return w


def deform(verts: np.ndarray, e: Expression, jaw_w: np.ndarray | None = None) -> np.ndarray:
    """verts: [478, 3] neutral face -> [478, 3] with the expression."""
    v = verts.copy()
    if e.blink > 0:
        for upper, lower, brow in EYES:
            _close_eye(v, verts, upper, lower, brow, e.blink)
    if e.brow > 0:
        for _, _, brow in EYES:
            d = np.linalg.norm(verts[:, None, :2] - verts[None, brow, :2], axis=-1).min(1)
            # full lift at the brow's lower edge, none 8 mm below it (the eyelids stay)
            above = _smoothstep((verts[:, 1] - (verts[brow, 1].min() - 0.008)) / 0.008)
            w = np.exp(-(d**2) / (2 * 0.014**2)) * above
            v[:, 1] += e.brow * 0.009 * w
    if e.smile > 0:
        for corner, side in ((61, -1.0), (291, 1.0)):
            d2 = ((verts - verts[corner]) ** 2).sum(-1)
            w = np.exp(-d2 / (2 * 0.016**2))[:, None]
            v += e.smile * w * np.array([side * 0.007, 0.006, -0.003])
    if e.jaw_open > 0:
        w = jaw_weights(verts) if jaw_w is None else jaw_w
        pivot = np.array([0.0, -0.012, -0.005])
        a = e.jaw_open * 0.30  # radians: about 17 degrees fully open
        R = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
        rotated = (v - pivot) @ R.T + pivot
        v = v + w[:, None] * (rotated - v)
    return v


def _close_eye(v: np.ndarray, neutral: np.ndarray, upper: list[int], lower: list[int], brow: list[int],
               amount: float) -> None:
    """Move the upper lid (and the skin up to the brow, fading) down onto the lower lid."""
    xs_u, ys_u = neutral[upper, 0], neutral[upper, 1]
    xs_l, ys_l = neutral[lower, 0], neutral[lower, 1]
    ou, ol = np.argsort(xs_u), np.argsort(xs_l)
    x0, x1 = min(xs_u.min(), xs_l.min()), max(xs_u.max(), xs_l.max())
    y_brow = neutral[brow, 1].min()
    in_x = (neutral[:, 0] > x0 - 0.002) & (neutral[:, 0] < x1 + 0.002)
    y_up = np.interp(neutral[:, 0], xs_u[ou], ys_u[ou])
    y_lo = np.interp(neutral[:, 0], xs_l[ol], ys_l[ol])
    opening = np.clip(y_up - y_lo, 0, None)
    span = max(y_brow - y_up.max(), 1e-3)
    fade = np.clip(1 - (neutral[:, 1] - y_up) / (0.7 * span), 0, 1)
    sel = in_x & (neutral[:, 1] >= y_up - 1e-4) & (neutral[:, 1] < y_brow)
    v[sel, 1] -= amount * 0.92 * opening[sel] * fade[sel]
