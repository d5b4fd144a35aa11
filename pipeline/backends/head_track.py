"""Where the head is in a clip, and the square the store keeps of it.

From face detections on some frames (lists of `Detection`, frame pixels) to one face per frame: the
detections are linked into tracks (overlapping boxes within a gap of frames), the track with the most
evidence is the subject, tracks of other times that do not overlap it are kept too (a cut, the face
re-appearing elsewhere), and the frames between two detections of a track are interpolated.

A face becomes a head square the way FFHQ's aligner frames a head (eye centres and mouth: side
2 x max(2 x eye distance, 1.8 x eye-to-mouth distance), centred a tenth of the way from the eyes to the
mouth), grown by `head_scale` and made axis-aligned around the rolled square, so hair, chin and some neck
fit. The stored square of a clip is the union of its frames' head squares (one pinhole camera per clip),
or, following the head, each frame's square smoothed over time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from datasets.cameras import SquareCrop
from pipeline.backends.face_detect import LEFT_EYE, MOUTH, RIGHT_EYE, Detection
from pipeline.backends.face_result import box_iou


@dataclass
class FaceTrack:
    """The subject's face in every frame of a clip (frame pixels)."""

    boxes: np.ndarray  # [T, 4] x0, y0, x1, y1
    keypoints: np.ndarray  # [T, 6, 2]
    score: np.ndarray  # [T] detection score; -1 interpolated between detections; 0 no face

    @property
    def found(self) -> np.ndarray:
        return self.score != 0

    def as_array(self) -> np.ndarray:
        """[T, 5] box and score, the store's framing/face_box."""
        return np.concatenate([self.boxes, self.score[:, None]], 1).astype(np.float32)


def link_tracks(detections: list[list[Detection] | None], min_score: float, max_gap: int
                ) -> list[dict[int, Detection]]:
    """Tracks (frame -> detection) from per-frame detections (None: the frame was not looked at). A
    detection joins the track whose latest box, at most max_gap frames back, it overlaps most (IoU > 0.2)."""
    tracks: list[dict[int, Detection]] = []
    last: list[int] = []
    for t, found in enumerate(detections):
        taken: set[int] = set()
        for d in sorted(found or [], key=lambda d: -d.score):
            if d.score < min_score:
                continue
            best, best_iou = -1, 0.2
            for k, track in enumerate(tracks):
                if k in taken or t - last[k] > max_gap:
                    continue
                iou = box_iou(track[last[k]].box, d.box)
                if iou > best_iou:
                    best, best_iou = k, iou
            if best < 0:
                tracks.append({})
                last.append(t)
                best = len(tracks) - 1
            tracks[best][t] = d
            last[best] = t
            taken.add(best)
    return tracks


def subject_track(detections: list[list[Detection] | None], min_score: float = 0.75, max_gap: int = 15,
                  min_detections: int = 2) -> FaceTrack:
    """The subject's face per frame: the strongest track, plus tracks at other times that do not overlap
    the chosen ones in time (each with at least `min_detections` detections), interpolated inside."""
    T = len(detections)
    boxes, kps, score = np.zeros((T, 4)), np.zeros((T, 6, 2)), np.zeros(T)
    tracks = [tr for tr in link_tracks(detections, min_score, max_gap) if len(tr) >= min(min_detections, T)]
    tracks.sort(key=lambda tr: -sum(d.score for d in tr.values()))
    spans: list[tuple[int, int]] = []
    for track in tracks:
        frames = sorted(track)
        span = (frames[0], frames[-1])
        if any(span[0] <= b and a <= span[1] for a, b in spans):
            continue  # at the same time as the subject: someone else (or a false detection)
        spans.append(span)
        for i, t0 in enumerate(frames):
            a = track[t0]
            boxes[t0], kps[t0], score[t0] = a.box, a.keypoints, a.score
            t1 = frames[i + 1] if i + 1 < len(frames) else t0
            for t in range(t0 + 1, t1):  # between two detections: linear
                w = (t - t0) / (t1 - t0)
                boxes[t] = (1 - w) * a.box + w * track[t1].box
                kps[t] = (1 - w) * a.keypoints + w * track[t1].keypoints
                score[t] = -1.0
    return FaceTrack(boxes, kps, score)


def head_squares(keypoints: np.ndarray, boxes: np.ndarray, head_scale: float) -> np.ndarray:
    """[T, 3] (centre x, centre y, side) of the axis-aligned head square of each face (keypoints
    [T, 6, 2], boxes [T, 4]); the side is at least 2.2 face-box sides grown by head_scale (a guard when
    keypoints collapse, e.g. in profile)."""
    eye_l, eye_r, mouth = keypoints[:, RIGHT_EYE], keypoints[:, LEFT_EYE], keypoints[:, MOUTH]
    eye_avg = (eye_l + eye_r) / 2
    eye_to_eye = eye_r - eye_l
    eye_to_mouth = mouth - eye_avg
    x = eye_to_eye - eye_to_mouth[:, ::-1] * np.array([-1.0, 1.0])  # FFHQ's horizontal axis of the head
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-9)
    half = np.maximum(2.0 * np.linalg.norm(eye_to_eye, axis=1), 1.8 * np.linalg.norm(eye_to_mouth, axis=1))
    half = half * (np.abs(x[:, 0]) + np.abs(x[:, 1]))  # the rolled square's axis-aligned extent
    box_side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    side = np.maximum(2.0 * half, 1.1 * box_side) * head_scale
    centre = eye_avg + 0.1 * eye_to_mouth
    return np.concatenate([centre, side[:, None]], 1)


def union_square(squares: np.ndarray) -> np.ndarray:
    """[3] the smallest square (centre x, centre y, side) holding every square [N, 3]."""
    lo = (squares[:, :2] - squares[:, 2:] / 2).min(0)
    hi = (squares[:, :2] + squares[:, 2:] / 2).max(0)
    return np.array([*(lo + hi) / 2, (hi - lo).max()])


def to_crop(square: np.ndarray) -> SquareCrop:
    """A (centre x, centre y, side) square in continuous pixels -> the integer crop covering it."""
    lo = np.floor(square[:2] - square[2] / 2)
    size = max(1, int(np.ceil((square[:2] + square[2] / 2 - lo).max())))
    return SquareCrop(int(lo[0]), int(lo[1]), size)


def follow_squares(squares: np.ndarray, found: np.ndarray, sigma: float) -> np.ndarray:
    """[T, 3] per-frame squares following the head: frames without a face take the nearest face frame's
    square, then centre and log side are smoothed over time with a Gaussian of `sigma` frames (0: none)."""
    T = len(squares)
    idx = np.flatnonzero(found)
    nearest = idx[np.abs(np.arange(T)[:, None] - idx[None]).argmin(1)]
    filled = squares[nearest].astype(np.float64)
    if sigma > 0 and T > 1:
        filled[:, :2] = gaussian_filter1d(filled[:, :2], sigma, axis=0, mode="nearest")
        filled[:, 2] = np.exp(gaussian_filter1d(np.log(filled[:, 2]), sigma, mode="nearest"))
    return filled


def place_square(head: np.ndarray, face: np.ndarray, width: int, height: int, face_margin: float = 1.2
                 ) -> SquareCrop:
    """The crop of a calibrated view: a square of the frame's shorter side (larger, padded, only when the
    face itself, square `face` grown by face_margin, would not fit), moved from the centre of the frame as
    little as holds the head square `head` (centre x, centre y, side), inside the frame where it fits;
    centred on the head where the head is larger than the square."""
    side = int(np.ceil(max(min(width, height), face[2] * face_margin)))

    def axis(c: float, n: int) -> int:
        start = (n - side) // 2
        lo, hi = c - head[2] / 2, c + head[2] / 2
        if hi - lo > side:
            start = int(round(c - side / 2))
        elif lo < start:
            start = int(np.floor(lo))
        elif hi > start + side:
            start = int(np.ceil(hi)) - side
        return min(max(start, 0), n - side) if side <= n else start

    return SquareCrop(axis(head[0], width), axis(head[1], height), side)


def nearest_point(centres: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """[3] the point nearest (least squares) to the rays from centres [N, 3] along directions [N, 3]."""
    d = directions / np.linalg.norm(directions, axis=1, keepdims=True)
    P = np.eye(3)[None] - d[:, :, None] * d[:, None, :]  # projectors onto each ray's normal plane
    return np.linalg.solve(P.sum(0), np.einsum("nij,nj->i", P, centres))
