"""mediapipe 0.10.21 face detection + face mesh (478 points with refined irises), mapped to iBUG-68.

One instance per camera view: in tracking mode its face mesh follows the face from frame to frame
(video), in static mode every image is detected afresh (unrelated photos)."""

from __future__ import annotations

import numpy as np

from datasets.landmarks68 import MEDIAPIPE_TO_IBUG68
from datasets.native_output import quiet_native_stderr
from pipeline.backends.face_result import FaceResult, box_iou, choose_face


class MediapipeFaceLandmarks:
    def __init__(self, tracking: bool = True, max_faces: int = 4, select: str = "center",
                 min_confidence: float = 0.5):
        import mediapipe as mp

        self.select = select
        with quiet_native_stderr():
            self.detector = mp.solutions.face_detection.FaceDetection(
                model_selection=0, min_detection_confidence=min_confidence)
            self.mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=not tracking, max_num_faces=max_faces, refine_landmarks=True,
                min_detection_confidence=min_confidence, min_tracking_confidence=min_confidence)

    def __call__(self, image: np.ndarray) -> FaceResult:
        """image: [H, W, 3] uint8 RGB."""
        h, w = image.shape[:2]
        image = np.ascontiguousarray(image)
        with quiet_native_stderr():
            detections = self.detector.process(image).detections or []
            meshes = self.mesh.process(image).multi_face_landmarks or []
        scores = [d.score[0] for d in detections]
        det_boxes = []
        for d in detections:
            b = d.location_data.relative_bounding_box
            det_boxes.append(np.array([b.xmin * w, b.ymin * h, (b.xmin + b.width) * w, (b.ymin + b.height) * h]))
        count = max(len(detections), len(meshes))
        if not meshes:
            return FaceResult(count)
        points = [np.array([[p.x * w, p.y * h, p.z * w] for p in m.landmark], np.float32) for m in meshes]
        boxes = [np.array([p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()]) for p in points]
        k = choose_face(boxes, w, h, self.select)
        score = _matching_score(boxes[k], det_boxes, scores)
        lm68 = np.concatenate([points[k][MEDIAPIPE_TO_IBUG68, :2], np.full((68, 1), score, np.float32)], 1)
        return FaceResult(count, lm68, points[k], np.append(boxes[k], score).astype(np.float32))

    def reset(self) -> None:
        """Forget the tracked face (the next image is detected afresh)."""
        self.mesh.reset()

    def close(self) -> None:
        self.detector.close()
        self.mesh.close()


def _matching_score(box: np.ndarray, det_boxes: list[np.ndarray], scores: list[float]) -> float:
    """The detection score of the detector box overlapping the mesh's box most; a mesh the detector did
    not confirm (e.g. a profile view it tracked) gets 0.5."""
    best, best_iou = 0.5, 0.3
    for b, s in zip(det_boxes, scores):
        iou = box_iou(box, b)
        if iou > best_iou:
            best, best_iou = float(s), iou
    return best


def detect_near(detector: MediapipeFaceLandmarks, image: np.ndarray, box: np.ndarray, size: int = 320,
                context: float = 2.0) -> FaceResult:
    """The face expected in `box` [>=4] (x0, y0, x1, y1) of image [H, W, 3]: `detector` (a static-mode
    instance) looks at a square `context` times the box's side around it, resized to `size` pixels, where a
    small, blurred or half-covered face is easier to find than in the whole frame; points mapped back."""
    from pipeline.backends.face_align import warp

    c = (np.asarray(box[:2], np.float64) + np.asarray(box[2:4], np.float64)) / 2
    side = context * max(box[2] - box[0], box[3] - box[1], 8.0)
    s = size / side
    M = np.array([[s, 0.0, size / 2 - s * c[0] - 0.5 + 0.5 * s], [0.0, s, size / 2 - s * c[1] - 0.5 + 0.5 * s]])
    res = detector(warp(image, M, size))
    if res.landmarks68 is None:
        return res

    def back(xy: np.ndarray) -> np.ndarray:
        return (xy - M[:, 2]) / s

    lm68, full, b = res.landmarks68.copy(), res.landmarks_full.copy(), res.box.copy()
    lm68[:, :2] = back(lm68[:, :2])
    full[:, :2] = back(full[:, :2])
    full[:, 2] /= s  # mediapipe's depth is in the crop's pixels too
    b[:4] = back(b[:4].reshape(2, 2)).ravel()
    return FaceResult(res.count, lm68, full, b)
