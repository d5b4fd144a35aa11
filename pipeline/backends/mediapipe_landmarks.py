"""mediapipe 0.10.21 face detection + face mesh (478 points with refined irises), mapped to iBUG-68.

One instance per camera view: in tracking mode its face mesh follows the face from frame to frame
(video), in static mode every image is detected afresh (unrelated photos)."""

from __future__ import annotations

import numpy as np

from datasets.landmarks68 import MEDIAPIPE_TO_IBUG68
from datasets.native_output import quiet_native_stderr
from pipeline.backends.face_result import FaceResult, choose_face


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
        ix = max(0.0, min(box[2], b[2]) - max(box[0], b[0]))
        iy = max(0.0, min(box[3], b[3]) - max(box[1], b[1]))
        inter = ix * iy
        union = (box[2] - box[0]) * (box[3] - box[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        iou = inter / union if union > 0 else 0.0
        if iou > best_iou:
            best, best_iou = float(s), iou
    return best
