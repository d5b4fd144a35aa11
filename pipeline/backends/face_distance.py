"""Face Distance (GPHMv2 Table 3): the distance of dlib's 128-d face descriptors of two images' faces, offline
(the face-recognition-models package ships the model). Faces of one person lie within SAME_PERSON."""

from __future__ import annotations

import os

import cv2
import numpy as np

from datasets.weights import MissingWeightsError
from pipeline.backends.dlib_landmarks import EMBEDDING_FILE, SAME_PERSON, DlibFaceLandmarks

FACE_SIDE = 256  # images are upscaled to this first: dlib's HOG detector wants faces of about 80 px

__all__ = ["FaceDistance", "SAME_PERSON"]


class FaceDistance:
    """distance(a, b) of two uint8 [H, W, 3] RGB images (None when dlib finds no face in one of them)."""

    def __init__(self, model_dir: str = ""):
        self.dlib = DlibFaceLandmarks(model_dir)
        if not os.path.isfile(os.path.join(self.dlib.folder, EMBEDDING_FILE)):
            raise MissingWeightsError(f"Face Distance needs dlib's face descriptor model {EMBEDDING_FILE} in "
                                      f"{self.dlib.folder} (the face-recognition-models package ships it)")

    def descriptor(self, image: np.ndarray) -> np.ndarray | None:
        big = cv2.resize(image, (FACE_SIDE, FACE_SIDE), interpolation=cv2.INTER_CUBIC)
        face = self.dlib(big)
        if face.landmarks68 is None:
            return None
        return self.dlib.descriptor(big, face.landmarks68)

    def __call__(self, a: np.ndarray, b: np.ndarray) -> float | None:
        da, db = self.descriptor(a), self.descriptor(b)
        return None if da is None or db is None else float(np.linalg.norm(da - db))
