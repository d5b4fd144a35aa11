"""The non-face image (GPHMv2 section 3.1): the frame with the face region masked out."""

from __future__ import annotations

import cv2
import numpy as np


def non_face_image(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """rgb [..., H, W, 3] uint8, face_mask [..., H, W] uint8 (255: face) -> uint8 [..., H, W, 3]:
    round(rgb * (255 - mask) / 255). OpenCV's saturating multiply: ~20x faster than numpy through float."""
    if rgb.ndim > 3:
        return np.stack([non_face_image(r, m) for r, m in zip(rgb, mask, strict=True)])
    keep = cv2.merge([255 - mask] * 3)
    return cv2.multiply(np.ascontiguousarray(rgb), keep, scale=1.0 / 255.0)
