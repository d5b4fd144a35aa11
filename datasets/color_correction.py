"""The colour corrections NeRSemble releases ship per camera, applied as the dataset's own tools apply them.

v1 (`color_correction/{p}/{serial}.npy`, also `annotations/.../color_correction/{serial}.npy`): an affine
map of the sRGB-encoded values in [0, 1], in row-vector form, not linearised:
    out = clip(x @ A[:3, :3] + A[:3, 3], 0, 1)              x: [..., 3] RGB / 255
v2 (`calibration/color_calibration.json`, {serial: CCM}): a colour correction matrix of Cheung et al.
(2004) on linear RGB: decode sRGB, expand each colour into the CCM's polynomial terms, map, encode:
    out = srgb_encode(CCM @ terms(srgb_decode(x)))           CCM: [3, n_terms]
Both work on uint8 RGB images and return uint8 (rounded, clipped).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

# Cheung 2004 polynomial expansions, by term count: exponents of (R, G, B) per term, in the order
# colour-science's matrix_augmented_Cheung2004 uses (the NeRSemble v2 toolkit applies it through that).
_LINEAR = [(1, 0, 0), (0, 1, 0), (0, 0, 1)]
_CROSS = [(1, 1, 0), (1, 0, 1), (0, 1, 1)]
_SQUARES = [(2, 0, 0), (0, 2, 0), (0, 0, 2)]
_RGB = [(1, 1, 1)]
_CUBIC_MIX = [(2, 1, 0), (0, 2, 1), (1, 0, 2)]  # R^2 G, G^2 B, B^2 R
_CUBIC_MIX2 = [(2, 0, 1), (1, 2, 0), (0, 1, 2)]  # R^2 B, G^2 R, B^2 G
_CUBES = [(3, 0, 0), (0, 3, 0), (0, 0, 3)]
_QUARTIC = [(3, 1, 0), (3, 0, 1), (1, 3, 0), (0, 3, 1), (1, 0, 3), (0, 1, 3),
            (2, 1, 1), (1, 2, 1), (1, 1, 2), (2, 2, 0), (2, 0, 2), (0, 2, 2), (4, 0, 0), (0, 4, 0), (0, 0, 4)]
_ONE = [(0, 0, 0)]
CHEUNG_TERMS: dict[int, list[tuple[int, int, int]]] = {
    3: _LINEAR,
    4: _LINEAR + _ONE,
    5: _LINEAR + _RGB + _ONE,
    7: _LINEAR + _CROSS + _ONE,
    8: _LINEAR + _CROSS + _RGB + _ONE,
    10: _LINEAR + _CROSS + _SQUARES + _ONE,
    11: _LINEAR + _CROSS + _SQUARES + _RGB + _ONE,
    14: _LINEAR + _CROSS + _SQUARES + _RGB + _CUBES + _ONE,
    16: _LINEAR + _CROSS + _SQUARES + _RGB + _CUBIC_MIX + _CUBES,
    17: _LINEAR + _CROSS + _SQUARES + _RGB + _CUBIC_MIX + _CUBES + _ONE,
    19: _LINEAR + _CROSS + _SQUARES + _RGB + _CUBIC_MIX + _CUBIC_MIX2 + _CUBES,
    20: _LINEAR + _CROSS + _SQUARES + _RGB + _CUBIC_MIX + _CUBIC_MIX2 + _CUBES + _ONE,
    22: _LINEAR + _CROSS + _SQUARES + _RGB + _CUBIC_MIX + _CUBIC_MIX2 + _CUBES + [(2, 1, 1), (1, 2, 1), (1, 1, 2)],
    35: _LINEAR + _CROSS + _SQUARES + _RGB + _CUBIC_MIX + _CUBIC_MIX2 + _CUBES + _QUARTIC + _ONE,
}


class ColorCorrectionError(ValueError):
    """A colour-correction file that cannot be used (the message names it and says why)."""


@dataclass(frozen=True)
class ColorCorrection:
    """One camera's correction: kind 'v1' (affine, matrix [3, 4] = [A[:3, :3] | A[:3, 3]]) or 'v2'
    (Cheung CCM [3, n_terms]), and the file it came from."""

    kind: str
    matrix: tuple  # nested tuples of floats (hashable, JSON-able)
    source: str

    @property
    def array(self) -> np.ndarray:
        return np.asarray(self.matrix, np.float64)

    def apply(self, image: np.ndarray) -> np.ndarray:
        """uint8 [..., 3] RGB -> uint8 [..., 3], corrected."""
        return apply_v1(image, self.array) if self.kind == "v1" else apply_v2(image, self.array)

    def describe(self) -> dict:
        return {"kind": self.kind, "matrix": [list(r) for r in self.matrix], "source": self.source,
                "space": SPACES[self.kind]}


SPACES = {"v1": "affine on sRGB-encoded values in [0, 1], row vectors: x @ A[:3, :3] + A[:3, 3]",
          "v2": "Cheung 2004 CCM on linear RGB (sRGB decoded, corrected, sRGB encoded)"}


def srgb_decode(x: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] -> linear (IEC 61966-2-1)."""
    x = np.asarray(x, np.float64)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def srgb_encode(x: np.ndarray) -> np.ndarray:
    """Linear values -> sRGB-encoded (negative values stay linear, as the standard's extension does)."""
    x = np.asarray(x, np.float64)
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * np.power(np.maximum(x, 0.0031308), 1 / 2.4) - 0.055)


def cheung_terms(rgb: np.ndarray, n_terms: int) -> np.ndarray:
    """[N, 3] -> [N, n_terms] polynomial expansion."""
    if n_terms not in CHEUNG_TERMS:
        raise ColorCorrectionError(f"a Cheung 2004 colour matrix has 3, 4, 5, 7, 8, 10, 11, 14, 16, 17, 19, 20, "
                                   f"22 or 35 terms, not {n_terms}")
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    return np.stack([r ** i * g ** j * b ** k for i, j, k in CHEUNG_TERMS[n_terms]], 1)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def apply_v1(image: np.ndarray, A: np.ndarray) -> np.ndarray:
    """uint8 [..., 3] and A [3, 4] (or the file's [3+, 4+]) -> uint8 [..., 3]."""
    x = image.astype(np.float64) / 255.0
    return _to_uint8(np.clip(x @ A[:3, :3] + A[:3, 3], 0.0, 1.0))


def apply_v2(image: np.ndarray, ccm: np.ndarray) -> np.ndarray:
    """uint8 [..., 3] and CCM [3, n_terms] -> uint8 [..., 3]."""
    shape = image.shape
    lin = srgb_decode(image.reshape(-1, 3).astype(np.float64) / 255.0)
    out = cheung_terms(lin, ccm.shape[1]) @ ccm.T
    return _to_uint8(srgb_encode(out).reshape(shape))


def _nested(a: np.ndarray) -> tuple:
    return tuple(tuple(float(v) for v in row) for row in a)


def load_v1(fs, path: str) -> ColorCorrection:
    """One camera's affine from its .npy (at least [3, 4]: the tools read A[:3, :3] and A[:3, 3])."""
    try:
        with fs.open(path, "rb") as f:
            A = np.load(f, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ColorCorrectionError(f"{path}: not a readable .npy colour correction: {e}") from None
    A = np.asarray(A, np.float64)
    if A.ndim != 2 or A.shape[0] < 3 or A.shape[1] < 4 or not np.isfinite(A[:3, :4]).all():
        raise ColorCorrectionError(f"{path}: a v1 colour correction is a finite matrix of at least 3x4, "
                                   f"got shape {A.shape}")
    return ColorCorrection("v1", _nested(A[:3, :4]), path)


def load_v2(fs, path: str) -> dict[str, ColorCorrection]:
    """serial -> its CCM, from a v2 `color_calibration.json`."""
    try:
        with fs.open(path, "rb") as f:
            data = json.loads(f.read())
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise ColorCorrectionError(f"{path}: not a readable colour calibration: {e}") from None
    if not isinstance(data, dict):
        raise ColorCorrectionError(f"{path}: expected an object serial -> matrix")
    out = {}
    for serial, m in data.items():
        try:
            ccm = np.asarray(m, np.float64)
        except (TypeError, ValueError):
            raise ColorCorrectionError(f"{path}: camera {serial}: the matrix is not numbers") from None
        if ccm.ndim != 2 or ccm.shape[0] != 3 or ccm.shape[1] not in CHEUNG_TERMS or not np.isfinite(ccm).all():
            raise ColorCorrectionError(f"{path}: camera {serial}: a colour matrix is 3 x n_terms (n_terms one of "
                                       f"{sorted(CHEUNG_TERMS)}), got shape {ccm.shape}")
        out[str(serial)] = ColorCorrection("v2", _nested(ccm), path)
    return out
