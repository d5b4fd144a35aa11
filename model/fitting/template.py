"""A mean 3D iBUG-68 landmark template in the head frame, metres: the pose reference of the offline
fitting when a clip has one view, and the frame that defines head orientation for every fit.

Head frame (as in datasets/synthhead): x to the subject's left (image right of a frontal view), y up,
z out of the face; origin between the ears at their height. Made by `build_template()` from the metric
face meshes of the four base identities of the embedded data (mediapipe face mesh on the two portraits
shipped in installed packages, each also mirrored), averaged and made left-right symmetric; rounded to
0.1 mm. tests/model/test_fitting_geometry.py checks that this table is what `build_template()` gives.
"""

from __future__ import annotations

import numpy as np

IBUG68_TEMPLATE = np.array([
    (-0.0725, 0.0000, 0.0000),
    (-0.0716, -0.0141, 0.0004),
    (-0.0698, -0.0292, 0.0043),
    (-0.0661, -0.0448, 0.0115),
    (-0.0604, -0.0571, 0.0231),
    (-0.0537, -0.0662, 0.0354),
    (-0.0443, -0.0747, 0.0456),
    (-0.0263, -0.0862, 0.0626),
    (0.0000, -0.0914, 0.0706),
    (0.0263, -0.0862, 0.0626),
    (0.0443, -0.0747, 0.0456),
    (0.0537, -0.0662, 0.0354),
    (0.0604, -0.0571, 0.0231),
    (0.0661, -0.0448, 0.0115),
    (0.0698, -0.0292, 0.0043),
    (0.0716, -0.0141, 0.0004),
    (0.0725, 0.0000, 0.0000),
    (-0.0609, 0.0384, 0.0541),
    (-0.0546, 0.0449, 0.0623),
    (-0.0446, 0.0487, 0.0690),
    (-0.0315, 0.0490, 0.0751),
    (-0.0164, 0.0477, 0.0783),
    (0.0164, 0.0477, 0.0783),
    (0.0315, 0.0490, 0.0751),
    (0.0446, 0.0487, 0.0690),
    (0.0546, 0.0449, 0.0623),
    (0.0609, 0.0384, 0.0541),
    (0.0000, 0.0311, 0.0787),
    (0.0000, 0.0168, 0.0902),
    (0.0000, 0.0035, 0.1033),
    (0.0000, -0.0054, 0.1066),
    (-0.0206, -0.0164, 0.0794),
    (-0.0096, -0.0187, 0.0865),
    (0.0000, -0.0194, 0.0883),
    (0.0096, -0.0187, 0.0865),
    (0.0206, -0.0164, 0.0794),
    (-0.0480, 0.0250, 0.0556),
    (-0.0416, 0.0306, 0.0622),
    (-0.0303, 0.0316, 0.0639),
    (-0.0184, 0.0237, 0.0612),
    (-0.0283, 0.0227, 0.0635),
    (-0.0391, 0.0222, 0.0617),
    (0.0184, 0.0237, 0.0612),
    (0.0303, 0.0316, 0.0639),
    (0.0416, 0.0306, 0.0622),
    (0.0480, 0.0250, 0.0556),
    (0.0391, 0.0222, 0.0617),
    (0.0283, 0.0227, 0.0635),
    (-0.0310, -0.0396, 0.0652),
    (-0.0240, -0.0355, 0.0772),
    (-0.0095, -0.0322, 0.0870),
    (0.0000, -0.0337, 0.0879),
    (0.0095, -0.0322, 0.0870),
    (0.0240, -0.0355, 0.0772),
    (0.0310, -0.0396, 0.0652),
    (0.0236, -0.0470, 0.0753),
    (0.0093, -0.0528, 0.0840),
    (0.0000, -0.0535, 0.0849),
    (-0.0093, -0.0528, 0.0840),
    (-0.0236, -0.0470, 0.0753),
    (-0.0286, -0.0397, 0.0672),
    (-0.0148, -0.0387, 0.0783),
    (0.0000, -0.0395, 0.0823),
    (0.0148, -0.0387, 0.0783),
    (0.0286, -0.0397, 0.0672),
    (0.0144, -0.0437, 0.0779),
    (0.0000, -0.0450, 0.0819),
    (-0.0144, -0.0437, 0.0779),
], dtype=np.float64)  # [68, 3]


def build_template() -> np.ndarray:
    """Recompute the table (runs mediapipe on the portraits; about 2 s)."""
    from datasets.landmarks68 import IBUG68_MIRROR, MEDIAPIPE_TO_IBUG68
    from datasets.synthhead.face_model import fit_face_model, portrait

    sets = []
    for name in ("astronaut", "grace_hopper"):
        image = portrait(name)
        for mirror in (False, True):
            face = fit_face_model(np.ascontiguousarray(image[:, ::-1]) if mirror else image)
            sets.append(face.verts[MEDIAPIPE_TO_IBUG68])
    mean = np.mean(sets, 0)
    return 0.5 * (mean + mean[IBUG68_MIRROR] * np.array([-1.0, 1.0, 1.0]))


def head_size(points: np.ndarray) -> float:
    """The yardstick of the accuracy figures: diagonal of the landmark set's bounding box (about
    0.23 m for an adult head)."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    return float(np.linalg.norm(points.max(0) - points.min(0)))
