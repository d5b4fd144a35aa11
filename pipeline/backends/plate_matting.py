"""Background-difference matting against the clean plate of the same camera.

1. colour distance d in CIELAB, tolerant to shadows (a darker pixel of the plate's chroma counts less);
2. per pixel, the posterior of "foreground" from two likelihoods, background: d is camera noise (a
   half-normal of the frame's own noise scale), foreground: d is anything (flat up to `spread`), and a
   prior from person segmentation where one is given (0.5 otherwise). A large difference decides
   alone; where the subject's colour is close to the wall's, the prior decides;
3. clean-up: small islands removed, holes inside the subject filled;
4. edges refined with a guided filter on the frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from pipeline.backends.guided_filter import guided_filter


@dataclass
class PlateMattingParams:
    min_noise: float = 1.0  # CIELAB units: the noise scale is never taken below this
    spread: float = 40.0  # CIELAB units over which a foreground pixel's distance is spread (flat)
    shadow_weight: float = 0.4  # weight of "darker than the plate" luminance differences
    prior_floor: float = 0.1  # the prior is clipped to [floor, 1 - floor]: it cannot beat a clear plate match
    min_island: float = 0.002  # foreground islands smaller than this fraction of the image are dropped
    fill_holes: bool = True
    radius: int = 4  # guided filter radius, pixels
    eps: float = 2e-3


def to_lab(image: np.ndarray) -> np.ndarray:
    """uint8 RGB [H, W, 3] -> lightly blurred CIELAB float32 (a plate's can be computed once and reused)."""
    return cv2.cvtColor(cv2.GaussianBlur(image, (3, 3), 0).astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def color_distance(image: np.ndarray, plate: np.ndarray, shadow_weight: float,
                   plate_lab: np.ndarray | None = None) -> np.ndarray:
    """[H, W] shadow-tolerant CIELAB distance between a frame and its plate."""
    a, b = to_lab(image), to_lab(plate) if plate_lab is None else plate_lab
    dL = a[..., 0] - b[..., 0]
    dL = np.where(dL < 0, shadow_weight * dL, dL)
    dab = np.linalg.norm(a[..., 1:] - b[..., 1:], axis=-1)
    return np.sqrt(dL**2 + dab**2)


def foreground_posterior(d: np.ndarray, prior: np.ndarray | None, params: PlateMattingParams) -> np.ndarray:
    """P(foreground | distance d, prior): background distances are half-normal noise of a scale measured
    on the frame (the lower part of the distribution: at least a third of a frame is background)."""
    sigma = max(1.4826 * float(np.percentile(d, 30)), params.min_noise)
    like_bg = np.sqrt(2 / np.pi) / sigma * np.exp(-0.5 * (d / sigma) ** 2)
    like_fg = 1.0 / params.spread
    pri = 0.5 if prior is None else np.clip(prior, params.prior_floor, 1 - params.prior_floor)
    return pri * like_fg / (pri * like_fg + (1 - pri) * like_bg)


def plate_matte(image: np.ndarray, plate: np.ndarray, prior: np.ndarray | None = None,
                params: PlateMattingParams = PlateMattingParams(), plate_lab: np.ndarray | None = None) -> np.ndarray:
    """image, plate: [H, W, 3] uint8 RGB; prior: [H, W] in [0, 1] or None -> alpha [H, W] float32.
    plate_lab: to_lab(plate), when the caller mattes many frames against the same plate."""
    p = foreground_posterior(color_distance(image, plate, params.shadow_weight, plate_lab), prior, params)
    hard = p > 0.5
    labels, n = ndimage.label(hard)
    if n:
        sizes = ndimage.sum(hard, labels, index=np.arange(1, n + 1))
        keep = np.zeros(n + 1, bool)
        keep[1:] = sizes >= params.min_island * hard.size
        hard = keep[labels]
        p = np.where(hard | (p <= 0.5), p, 0.0)
    if params.fill_holes:
        filled = ndimage.binary_fill_holes(hard)
        p = np.where(filled & ~hard, 1.0, p)
    alpha = guided_filter(image, p.astype(np.float32), params.radius, params.eps)
    alpha[alpha < 0.02] = 0.0
    alpha[alpha > 0.98] = 1.0
    return alpha
