"""face-alignment 1.5.0: the 2D FAN landmark network (weights from the torch hub cache under TORCH_HOME)
and its S3FD face detector (weights from a path). Nothing is downloaded: both files must be present."""

from __future__ import annotations

import os

import numpy as np

from datasets.weights import require_file
from pipeline.backends.face_result import FaceResult, choose_face

FAN_FILE = "2DFAN4-11f355bf06.pth.tar"  # the file face-alignment 1.5.0 loads for 2D landmarks
SFD_FILE = "s3fd-619a316812.pth"
PUBLISHED = "https://www.adrianbulat.com/downloads/python-fan/"


def hub_checkpoints() -> str:
    import torch

    return os.path.join(torch.hub.get_dir(), "checkpoints")


def fan_weights() -> str:
    return require_file(os.path.join(hub_checkpoints(), FAN_FILE), what="face-alignment 2D FAN weights",
                        variable="TORCH_HOME (the file lives in $TORCH_HOME/hub/checkpoints)",
                        published=PUBLISHED + FAN_FILE)


def detector_weights(path: str = "") -> str:
    return require_file(path or os.path.join(hub_checkpoints(), SFD_FILE), what="face-alignment S3FD detector weights",
                        variable="--fa-detector PATH (default $TORCH_HOME/hub/checkpoints)",
                        published=PUBLISHED + SFD_FILE)


class FanFaceLandmarks:
    """2D FAN on the faces found by S3FD; `batch` runs several frames through both networks at once."""

    def __init__(self, device: str = "cpu", detector_path: str = "", select: str = "center", compile: bool = False,
                 flip_input: bool = False, batch_size: int = 8):
        fan_weights()
        detector = detector_weights(detector_path)
        import face_alignment

        self.select = select
        self.device = device
        self.fa = face_alignment.FaceAlignment(
            face_alignment.LandmarksType.TWO_D, device=device, face_detector="sfd",
            face_detector_kwargs={"path_to_detector": detector}, compile=compile, flip_input=flip_input,
            max_batch_size=batch_size)

    def _result(self, image_shape, landmarks, scores, boxes) -> FaceResult:
        if not landmarks:
            return FaceResult(0)
        h, w = image_shape[:2]
        k = choose_face([np.asarray(b[:4]) for b in boxes], w, h, self.select)
        conf = np.asarray(scores[k], np.float32).reshape(68, 1)
        lm = np.concatenate([np.asarray(landmarks[k], np.float32)[:, :2], conf], 1)
        box = np.asarray(boxes[k], np.float32)[:5]
        return FaceResult(len(landmarks), lm, lm.copy(), box)

    def __call__(self, image: np.ndarray) -> FaceResult:
        landmarks, scores, boxes = self.fa.get_landmarks_from_image(image, return_bboxes=True,
                                                                    return_landmark_score=True)
        return self._result(image.shape, landmarks or [], scores or [], boxes or [])

    def batch(self, images: np.ndarray) -> list[FaceResult]:
        """images: [N, H, W, 3] uint8 RGB of one size."""
        import torch

        tensor = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).to(self.device).float()
        landmarks, scores, boxes = self.fa.get_landmarks_from_batch(tensor, return_bboxes=True,
                                                                    return_landmark_score=True)
        out = []
        for lm, sc, bx in zip(landmarks, scores, boxes):
            # per image: all faces' landmarks stacked [n * 68, 2], their scores, their boxes
            faces = list(np.asarray(lm, np.float32).reshape(-1, 68, 2)) if len(lm) else []
            out.append(self._result(images.shape[1:], faces, list(sc) if sc is not None else [], list(bx)))
        return out

    def close(self) -> None:
        pass
