"""Face detection for framing: mediapipe 0.10.21's BlazeFace detectors (shipped in the wheel), run on a
downscaled copy of the frame; boxes and keypoints come back in the frame's own pixels.

The short-range model (faces within about 2 m: selfies, interviews) runs first; when it finds nothing
the full-range model (smaller, farther faces) tries the same image.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from datasets.native_output import quiet_native_stderr

# BlazeFace keypoints, in this order: the subject's right eye, left eye, nose tip, mouth centre, right
# ear tragion, left ear tragion
RIGHT_EYE, LEFT_EYE, NOSE, MOUTH, RIGHT_EAR, LEFT_EAR = range(6)


@dataclass
class Detection:
    box: np.ndarray  # [4] x0, y0, x1, y1 (frame pixels)
    score: float
    keypoints: np.ndarray  # [6, 2] (frame pixels), order above

    def scaled(self, s: float) -> "Detection":
        return Detection(self.box * s, self.score, self.keypoints * s)


class FaceDetector:
    """detector(image [H, W, 3] uint8 RGB) -> detections, best score first."""

    def __init__(self, min_score: float = 0.5, detect_size: int = 480):
        import mediapipe as mp

        self.detect_size = detect_size
        self.min_score = min_score
        self._mp = mp
        self.models: list = [None, None]  # short range, full range (made when first needed)

    def __call__(self, image: np.ndarray) -> list[Detection]:
        h, w = image.shape[:2]
        s = min(1.0, self.detect_size / max(h, w))
        small = cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA) \
            if s < 1 else image
        return [d.scaled(1.0 / s) for d in self.detect_small(np.ascontiguousarray(small))]

    def detect_small(self, image: np.ndarray) -> list[Detection]:
        """Detections in the pixels of `image` itself (already downscaled)."""
        h, w = image.shape[:2]
        for k in range(2):
            with quiet_native_stderr():
                if self.models[k] is None:
                    self.models[k] = self._mp.solutions.face_detection.FaceDetection(
                        model_selection=k, min_detection_confidence=self.min_score)
                found = self.models[k].process(image).detections or []
            if found:
                out = []
                for d in found:
                    b = d.location_data.relative_bounding_box
                    box = np.array([b.xmin * w, b.ymin * h, (b.xmin + b.width) * w, (b.ymin + b.height) * h])
                    kps = np.array([[k.x * w, k.y * h] for k in d.location_data.relative_keypoints])
                    out.append(Detection(box, float(d.score[0]), kps))
                return sorted(out, key=lambda d: -d.score)
        return []

    def close(self) -> None:
        for model in self.models:
            if model is not None:
                model.close()
