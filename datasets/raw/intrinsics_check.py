"""Do a camera's intrinsics belong to the frames that were decoded?

NeRSemble's intrinsics are for the full 2200 x 3208 capture; a release or a user may hold smaller frames
(v1's images-2x folders, a v2 download shrunk to save space). The image size the intrinsics are for is,
in this order: what the calibration file says; the capture size, when the principal point sits near its
centre; the decoded size times a small factor, the first whose centre is near the principal point (none:
the view is refused, its frames were cut or the calibration is another camera's). The
decoded frames must then be that size divided by one factor on both axes (to the pixel): the intrinsics
are rescaled by it (pixel centres aligned), or the view is refused with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CAPTURE_SIZE = (2200, 3208)  # NeRSemble's cameras, width x height
_CENTRE_TOLERANCE = 0.2  # principal point within this fraction of the size from the centre


@dataclass(frozen=True)
class IntrinsicsFit:
    K: np.ndarray | None  # [3, 3] for the decoded frames (None: refused)
    factor: float  # reference size / decoded size
    reference: tuple[int, int]  # the size the calibration's intrinsics are for
    problem: str = ""  # why the view was refused

    @property
    def note(self) -> str:
        """The provenance line of a rescale ('' when the intrinsics were used as they are)."""
        if self.K is None or self.factor == 1:
            return ""
        return (f"intrinsics for {self.reference[0]}x{self.reference[1]} rescaled by 1/{self.factor:g} "
                f"to the decoded frames")


def _centred(K: np.ndarray, size: tuple[int, int]) -> bool:
    w, h = size
    return abs(K[0, 2] - (w - 1) / 2) <= _CENTRE_TOLERANCE * w and abs(K[1, 2] - (h - 1) / 2) <= _CENTRE_TOLERANCE * h


def reference_size(K: np.ndarray, decoded: tuple[int, int], stated: tuple[int, int] | None = None,
                   hint: int = 1, capture: tuple[int, int] | None = CAPTURE_SIZE) -> tuple[int, int] | None:
    """The image size (width, height) the intrinsics K are for (see the module's rule); None when no size
    fits: the principal point is far from the centre of the decoded frames and of their upscales."""
    if stated:
        return stated
    if capture and _centred(K, capture):
        return capture
    w, h = decoded
    for k in dict.fromkeys((hint, 1, 2, 3, 4, 8)):
        if _centred(K, (w * k, h * k)):
            return w * k, h * k
    return None


def fit_intrinsics(K: np.ndarray, decoded: tuple[int, int], stated: tuple[int, int] | None = None, hint: int = 1,
                   capture: tuple[int, int] | None = CAPTURE_SIZE) -> IntrinsicsFit:
    """K [3, 3] of the calibration -> intrinsics of the decoded (width, height) frames, or the reason not.
    A downscale is exact when both axes shrank by the same factor up to the rounding of the sizes (one
    pixel); each axis is then rescaled by its own ratio, which is what the resize did."""
    K = np.asarray(K, np.float64)
    ref = reference_size(K, decoded, stated, hint, capture)
    w, h = decoded
    if ref is None:
        return IntrinsicsFit(None, 1.0, decoded, f"frames are {w}x{h} but the principal point "
                             f"({K[0, 2]:.1f}, {K[1, 2]:.1f}) is far from their centre (and from the centre of any "
                             f"exact upscale of them): the intrinsics are for other frames")
    if (w, h) == tuple(ref):
        return IntrinsicsFit(K, 1.0, ref)
    sx, sy = w / ref[0], h / ref[1]
    if sx > 1 or sy > 1 or abs(sx - sy) * max(ref) > 1.0:
        return IntrinsicsFit(None, ref[0] / w, ref, f"frames are {w}x{h} but the calibration's intrinsics are for "
                                                    f"{ref[0]}x{ref[1]}, and the frames are not an exact downscale")
    out = K.copy()
    out[0, :] *= sx
    out[1, :] *= sy
    out[0, 2] += 0.5 * sx - 0.5  # pixel centres aligned: c' = (c + 0.5) s - 0.5
    out[1, 2] += 0.5 * sy - 0.5
    out[2] = K[2]
    return IntrinsicsFit(out, ref[0] / w, ref)
