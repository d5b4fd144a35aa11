"""Pinhole camera helpers (OpenCV convention: x right, y down, z forward; pixel centres at integers).

Crop and resize change the intrinsics exactly: a crop shifts the principal point, a resize by s maps a
continuous pixel coordinate u to (u + 0.5) * s - 0.5 (the pixel-centre alignment OpenCV's resize uses).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from datasets.errors import ConfigError


@dataclass(frozen=True)
class SquareCrop:
    """A square region of a source image, in source pixels; it may extend past the image (padding)."""

    x0: int
    y0: int
    size: int

    @staticmethod
    def centred(width: int, height: int) -> "SquareCrop":
        """The largest square centred in a width x height image."""
        size = min(width, height)
        return SquareCrop((width - size) // 2, (height - size) // 2, size)

    @staticmethod
    def padded(width: int, height: int) -> "SquareCrop":
        """The smallest square holding the whole width x height image, centred (padded on the short side)."""
        size = max(width, height)
        return SquareCrop((width - size) // 2, (height - size) // 2, size)

    @staticmethod
    def parse(text: str, width: int, height: int) -> "SquareCrop":
        """'center', 'pad' or 'X0,Y0,SIZE' (source pixels)."""
        if text in ("center", "centre"):
            return SquareCrop.centred(width, height)
        if text == "pad":
            return SquareCrop.padded(width, height)
        try:
            x0, y0, size = (int(v) for v in text.split(","))
        except ValueError:
            raise ConfigError(f"crop must be 'center', 'pad' or 'X0,Y0,SIZE' in source pixels, got {text!r}") from None
        if size <= 0:
            raise ConfigError(f"crop size must be positive, got {size}")
        return SquareCrop(x0, y0, size)


def scale_intrinsics(K, s: float):
    """K [..., 3, 3] (a numpy array, or a torch tensor) of an image -> that of the image resized by s (pixel
    centres aligned, as OpenCV's resize does): focal lengths and skew times s, principal point
    (c + 0.5) s - 0.5."""
    K = K.clone() if hasattr(K, "clone") else np.asarray(K, dtype=np.float64).copy()
    K[..., 0, 0] *= s
    K[..., 1, 1] *= s
    K[..., 0, 1] *= s
    K[..., :2, 2] = (K[..., :2, 2] + 0.5) * s - 0.5
    return K


def crop_resize_intrinsics(K: np.ndarray, crop: SquareCrop, out_size: int) -> np.ndarray:
    """K: [3, 3] of the source image -> [3, 3] of the crop resized to out_size x out_size."""
    K = np.asarray(K, dtype=np.float64).copy()
    K[0, 2] -= crop.x0
    K[1, 2] -= crop.y0
    return scale_intrinsics(K, out_size / crop.size)


def source_to_stored(points: np.ndarray, crop: SquareCrop, out_size: int) -> np.ndarray:
    """points [..., 2] in source pixels -> pixels of the crop resized to out_size (centres aligned)."""
    s = out_size / crop.size
    return (np.asarray(points, np.float64) - np.array([crop.x0, crop.y0]) + 0.5) * s - 0.5


def padding_mask(crop: SquareCrop, width: int, height: int, out_size: int) -> np.ndarray:
    """bool [out_size, out_size]: stored pixels whose centre falls outside the width x height source
    (the black padding of a crop that extends past the frame)."""
    s = crop.size / out_size
    centres = (np.arange(out_size) + 0.5) * s - 0.5  # source coordinate of each stored pixel centre
    outside_x = (centres + crop.x0 < -0.5) | (centres + crop.x0 > width - 0.5)
    outside_y = (centres + crop.y0 < -0.5) | (centres + crop.y0 > height - 0.5)
    return outside_y[:, None] | outside_x[None, :]


def rescale_intrinsics(K: np.ndarray, factor: float) -> np.ndarray:
    """Intrinsics of an image downscaled by `factor` (e.g. NeRSemble's images-2x: factor 2)."""
    return scale_intrinsics(K, 1.0 / factor)


def crop_resize_image(image: np.ndarray, crop: SquareCrop, out_size: int) -> np.ndarray:
    """image: [H, W, C] or [H, W] -> [out_size, out_size, ...]; areas outside the source are black."""
    h, w = image.shape[:2]
    x1, y1 = crop.x0 + crop.size, crop.y0 + crop.size
    if crop.x0 >= 0 and crop.y0 >= 0 and x1 <= w and y1 <= h:
        region = image[crop.y0:y1, crop.x0:x1]
    else:
        region = np.zeros((crop.size, crop.size) + image.shape[2:], dtype=image.dtype)
        sx0, sy0 = max(crop.x0, 0), max(crop.y0, 0)
        sx1, sy1 = min(x1, w), min(y1, h)
        if sx1 > sx0 and sy1 > sy0:
            region[sy0 - crop.y0:sy1 - crop.y0, sx0 - crop.x0:sx1 - crop.x0] = image[sy0:sy1, sx0:sx1]
    if crop.size == out_size:
        return np.ascontiguousarray(region)
    # area averaging when shrinking (no aliasing), bicubic when enlarging
    interp = cv2.INTER_AREA if crop.size > out_size else cv2.INTER_CUBIC
    return cv2.resize(region, (out_size, out_size), interpolation=interp)


def project(points: np.ndarray, K: np.ndarray, world_to_cam: np.ndarray) -> np.ndarray:
    """points: [N, 3] world -> [N, 2] pixel coordinates."""
    points = np.asarray(points, dtype=np.float64)
    cam = points @ np.asarray(world_to_cam)[:3, :3].T + np.asarray(world_to_cam)[:3, 3]
    uvw = cam @ np.asarray(K).T
    return uvw[:, :2] / uvw[:, 2:3]


def check_calibration(K: np.ndarray, world_to_cam: np.ndarray) -> str | None:
    """A reason string when a camera's parameters are unusable, else None."""
    K = np.asarray(K, dtype=np.float64)
    E = np.asarray(world_to_cam, dtype=np.float64)
    if K.shape != (3, 3):
        return f"intrinsics have shape {K.shape}, expected (3, 3)"
    if E.shape not in ((4, 4), (3, 4)):
        return f"world_2_cam has shape {E.shape}, expected (4, 4)"
    if not np.isfinite(K).all():
        return "intrinsics contain non-finite values"
    if not np.isfinite(E).all():
        return "world_2_cam contains non-finite values"
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        return f"focal lengths must be positive, got fx={K[0, 0]}, fy={K[1, 1]}"
    R = E[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-3) or np.linalg.det(R) < 0:
        return "world_2_cam rotation is not orthonormal"
    return None


def as_4x4(world_to_cam: np.ndarray) -> np.ndarray:
    E = np.asarray(world_to_cam, dtype=np.float64)
    if E.shape == (3, 4):
        E = np.vstack([E, [0.0, 0.0, 0.0, 1.0]])
    return E
