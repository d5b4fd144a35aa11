"""dlib's 68-point landmarks (iBUG-68 order natively) and its HOG face detector, offline: the model files
ship in the `face-recognition-models` package (or any folder given), read by `dlib-bin`.

Licence: dlib is Boost-licensed; shape_predictor_68_face_landmarks.dat was trained on the iBUG 300-W
dataset, whose terms exclude commercial use: research use only.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np

from datasets.weights import MissingWeightsError, require_file
from pipeline.backends.face_result import FaceResult, choose_face

SHAPE_FILE = "shape_predictor_68_face_landmarks.dat"
EMBEDDING_FILE = "dlib_face_recognition_resnet_model_v1.dat"  # 128-d face descriptor (same folder)
SAME_PERSON = 0.6  # descriptor distance below which dlib's model calls two faces the same person
DLIB_MODELS_VARIABLE = "HEADFORGE_DLIB_MODELS"
PUBLISHED = "http://dlib.net/files/shape_predictor_68_face_landmarks.dat.bz2 (or the face-recognition-models package)"
LICENCE = ("dlib 68-point shape predictor: trained on iBUG 300-W, whose terms exclude commercial use (research "
           "use only); dlib itself is Boost-licensed")
# dlib gives no per-point confidence; its points carry this one (above the stages' 0.1 "no face" floor)
DLIB_CONFIDENCE = 0.5


def dlib_model_dir(folder: str = "") -> str:
    """The folder holding the 68-point model: `folder`, $HEADFORGE_DLIB_MODELS, or the models shipped in
    the face-recognition-models package (found without importing it)."""
    folder = folder or os.environ.get(DLIB_MODELS_VARIABLE, "")
    if not folder:
        spec = importlib.util.find_spec("face_recognition_models")
        if spec is None or not spec.origin:
            raise MissingWeightsError(
                f"dlib landmarks: no model folder given and the face-recognition-models package is not installed. "
                f"Set {DLIB_MODELS_VARIABLE} to a folder holding {SHAPE_FILE} (published at {PUBLISHED}), or "
                "pip install face-recognition-models. Nothing is downloaded at run time.")
        folder = os.path.join(os.path.dirname(spec.origin), "models")
    require_file(os.path.join(folder, SHAPE_FILE), what="dlib 68-point landmark model",
                 variable=f"{DLIB_MODELS_VARIABLE} (or --set landmarks.dlib_models=FOLDER)", published=PUBLISHED)
    return folder


def box_from_landmarks(lmk68: np.ndarray) -> np.ndarray:
    """[4] the box dlib's detector would give a face with these iBUG-68 points [68, >=2] (measured on real
    faces: a square 1.14 times the points' width, centred 9% of it above their centre)."""
    lo, hi = lmk68[:, :2].min(0), lmk68[:, :2].max(0)
    w = hi[0] - lo[0]
    c = (lo + hi) / 2 + np.array([-0.03, -0.09]) * w
    half = 0.57 * w
    return np.array([c[0] - half, c[1] - half, c[0] + half, c[1] + half])


class DlibFaceLandmarks:
    """landmarks(image [H, W, 3] uint8 RGB, box=None) -> FaceResult. With a box (x0, y0, x1, y1, of the
    size dlib's detector gives) the 68 points are placed in it without detection (a tracked or expected
    face, e.g. behind a hand); without one the HOG detector looks for faces first."""

    def __init__(self, model_dir: str = "", select: str = "center"):
        import dlib

        self.dlib = dlib
        self.select = select
        self.folder = dlib_model_dir(model_dir)
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(os.path.join(self.folder, SHAPE_FILE))

    def descriptor(self, image: np.ndarray, lmk68: np.ndarray) -> np.ndarray | None:
        """[128] dlib's face descriptor of the face with points lmk68 [68, >=2] (None without the model
        file): faces of one person lie within SAME_PERSON of each other."""
        if getattr(self, "_embedder", None) is None:
            path = os.path.join(self.folder, EMBEDDING_FILE)
            if not os.path.isfile(path):
                return None
            self._embedder = self.dlib.face_recognition_model_v1(path)
        box = self.dlib.rectangle(*(int(round(x)) for x in box_from_landmarks(lmk68)))
        shape = self.dlib.full_object_detection(box, [self.dlib.point(int(round(x)), int(round(y)))
                                                      for x, y in lmk68[:, :2]])
        return np.array(self._embedder.compute_face_descriptor(np.ascontiguousarray(image), shape))

    def detect(self, image: np.ndarray, upsample: int = 0) -> list[tuple[np.ndarray, float]]:
        """[(box [4], score)]: the HOG detector (faces of 80 pixels and more; `upsample` doubles the image
        that many times for smaller ones, at 4x the time each: the stored frames are framed on the head,
        so their faces are large)."""
        rects, scores, _ = self.detector.run(image, upsample, 0.0)
        return [(np.array([r.left(), r.top(), r.right(), r.bottom()], np.float64), float(s))
                for r, s in zip(rects, scores)]

    def points(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        """[68, 2] the points of the face in `box` [4]."""
        rect = self.dlib.rectangle(*(int(round(x)) for x in box[:4]))
        shape = self.predictor(image, rect)
        return np.array([[p.x, p.y] for p in shape.parts()], np.float32)

    def __call__(self, image: np.ndarray, box: np.ndarray | None = None) -> FaceResult:
        image = np.ascontiguousarray(image)
        h, w = image.shape[:2]
        count, score = 1, DLIB_CONFIDENCE
        if box is None:
            found = self.detect(image)
            if not found:
                return FaceResult(0)
            k = choose_face([b for b, _ in found], w, h, self.select)
            (box, _), count = found[k], len(found)
        pts = self.points(image, box)
        lm = np.concatenate([pts, np.full((68, 1), score, np.float32)], 1)
        out_box = np.array([*pts.min(0), *pts.max(0), score], np.float32)
        return FaceResult(count, lm, lm.copy(), out_box)

    def close(self) -> None:
        pass
