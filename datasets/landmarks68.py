"""The iBUG-68 landmark convention and its table into mediapipe's 478-point face mesh.

iBUG-68 (image view of a subject facing the camera; "right" = the subject's right = image left):
    0-16 jaw contour, image-left ear level -> chin (8) -> image-right   17-21 right brow, outer -> inner
    22-26 left brow, inner -> outer      27-30 nose bridge, top -> tip      31-35 nostril base, left -> right
    36-41 right eye: outer corner, upper lid x2, inner corner, lower lid x2
    42-47 left eye: inner corner, upper lid x2, outer corner, lower lid x2
    48-59 outer lips: right corner, upper lip -> left corner (54), lower lip back
    60-67 inner lips: right corner, upper -> left corner (64), lower back

MEDIAPIPE_TO_IBUG68[i] is the mediapipe face-mesh vertex standing for iBUG point i. The table was made
for this project from the canonical mesh: every left/right pair of iBUG points maps to a mirror pair
of mesh vertices (e.g. 33/263 eye corners, 61/291 mouth corners, 234/454 jaw ends), the jaw points
follow the face oval from ear level to the chin (152), the lip points the outer (61, 40, 37, 0, ...)
and inner (78, 81, 13, ...) lip contours. tests/datasets/test_landmarks68.py checks the symmetry and
the left-to-right order on real portraits.
"""

from __future__ import annotations

import numpy as np

MEDIAPIPE_TO_IBUG68 = np.array([
    # jaw 0-16
    234, 93, 132, 58, 172, 136, 150, 176, 152, 400, 379, 365, 397, 288, 361, 323, 454,
    # right brow 17-21, left brow 22-26
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    # nose bridge 27-30, nostrils 31-35
    168, 197, 5, 4, 98, 97, 2, 326, 327,
    # right eye 36-41, left eye 42-47
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    # outer lips 48-59
    61, 40, 37, 0, 267, 270, 291, 321, 314, 17, 84, 91,
    # inner lips 60-67
    78, 81, 13, 311, 308, 402, 14, 178,
], dtype=np.int64)

# iBUG index of each point's mirror image (used to check the table and to flip landmarks)
IBUG68_MIRROR = np.array(
    list(range(16, -1, -1))  # jaw
    + list(range(26, 16, -1))  # brows
    + [27, 28, 29, 30, 35, 34, 33, 32, 31]  # nose
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]  # eyes
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]  # outer lips
    + [64, 63, 62, 61, 60, 67, 66, 65],  # inner lips
    dtype=np.int64,
)

REGIONS = {
    "jaw": range(0, 17), "right_brow": range(17, 22), "left_brow": range(22, 27), "nose": range(27, 36),
    "right_eye": range(36, 42), "left_eye": range(42, 48), "outer_lips": range(48, 60),
    "inner_lips": range(60, 68),
}


def mediapipe_to_ibug68(points: np.ndarray) -> np.ndarray:
    """points: [..., 478 (or 468), D] mediapipe landmarks -> [..., 68, D] in iBUG order."""
    return np.take(points, MEDIAPIPE_TO_IBUG68, axis=-2)
