"""Expressions as landmark displacements in the head frame, and their transfer to another face.

The fitting stage gives, per frame, 3D landmarks and the head pose and scale; in the head frame
(pose and scale removed) a frame's landmarks minus its subject's neutral landmarks is its expression,
independent of where the head was. Normalised by the inter-ocular distance it transfers to a face of
another size; projected through the source's pose and camera it becomes a 2D displacement of the
source's detected landmarks.
"""

from __future__ import annotations

import numpy as np

from datasets.cameras import project
from pipeline.backends.face_align import apply


def inter_ocular(shape: np.ndarray) -> float:
    """Distance between the eye centres of landmarks [68, 2|3]."""
    return float(np.linalg.norm(shape[36:42].mean(0) - shape[42:48].mean(0)))


def expressiveness(local: np.ndarray) -> np.ndarray:
    """[N] how far each face of local [N, 68, 3] (head frame, y up) is from a neutral one, in inter-ocular
    distances, without knowing the person's neutral face: the mouth's opening and width (smiles widen it,
    speech and surprise open it; the narrowest, closed mouths are the neutral ones) plus how far the eyes'
    opening and the brows' height are from their usual (median) values (a blink, wide eyes, raised brows).
    The median of a clip is no neutral face when the person smiles through most of it; this is."""
    iod = np.linalg.norm(local[:, 36:42].mean(1) - local[:, 42:48].mean(1), axis=-1)  # [N]
    gap = np.linalg.norm(local[:, [61, 62, 63]] - local[:, [67, 66, 65]], axis=-1).mean(1)
    width = np.linalg.norm(local[:, 54] - local[:, 48], axis=-1)
    eyes = np.linalg.norm(local[:, [37, 38, 43, 44]] - local[:, [41, 40, 47, 46]], axis=-1).mean(1)
    brows = local[:, 17:27, 1].mean(1) - local[:, 36:48, 1].mean(1)
    eyes, brows = eyes / iod, brows / iod
    return (gap + width) / iod + np.abs(eyes - np.median(eyes)) + np.abs(brows - np.median(brows))


def least_expressive(local: np.ndarray, fraction: float = 0.2) -> np.ndarray:
    """Indices of the `fraction` (at least one) of frames local [N, 68, 3] least expressive."""
    k = max(1, int(round(fraction * len(local))))
    return np.argsort(expressiveness(local), kind="stable")[:k]


def neutral_shape(local: np.ndarray, fraction: float = 0.2) -> np.ndarray:
    """The subject's neutral landmarks [68, 3]: the mean of its least expressive frames (local [N, 68, 3],
    head frame)."""
    return local[least_expressive(local, fraction)].mean(0)


def target_points(source_points: np.ndarray, source_local: np.ndarray, source_neutral: np.ndarray,
                  driving_local: np.ndarray, driving_neutral: np.ndarray, pose: np.ndarray, scale: float,
                  K: np.ndarray, E: np.ndarray, crop: np.ndarray) -> np.ndarray:
    """Where the source's landmarks go to wear the driving expression.

    source_points [68, 2]: detected, in source crop pixels; source_local [68, 3]: the source frame's
    landmarks in its head frame; source_neutral, driving_local, driving_neutral [68, 3] head frames;
    pose [4, 4], scale: the source frame's; K [3, 3], E [4, 4]: its camera; crop [2, 3]: image -> crop.
    -> [68, 2] crop pixels."""
    expression = (driving_local - driving_neutral) / inter_ocular(driving_neutral) * inter_ocular(source_neutral)
    goal = source_neutral + expression

    def to_crop(local: np.ndarray) -> np.ndarray:
        world = scale * local @ pose[:3, :3].T + pose[:3, 3]
        return apply(crop, project(world, K, E))

    return source_points[:, :2] + to_crop(goal) - to_crop(source_local)
