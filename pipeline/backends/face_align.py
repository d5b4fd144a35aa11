"""Face crops from 68 landmarks: similarity transforms (image -> crop, [2, 3]) and the face-region mask.

face: a tight crop for the expression encoder: eye centres, nose tip and mouth corners fitted (least
      squares similarity) to fixed positions in the crop, leaving room for an open jaw.
head: an FFHQ-style crop covering the whole head: the square oriented by the eye line and the
      eye-to-mouth direction, sized from the larger of the eye distance and the eye-to-mouth distance,
      grown by `head_scale` (1.0 is FFHQ's framing).
"""

from __future__ import annotations

import cv2
import numpy as np

# eye centres, nose tip, mouth corners, in [0, 1] crop coordinates
FACE_TEMPLATE = np.array([[0.36, 0.36], [0.64, 0.36], [0.5, 0.5], [0.385, 0.62], [0.615, 0.62]])


def five_points(lmk68: np.ndarray) -> np.ndarray:
    """[68, >=2] -> [5, 2]: right eye centre, left eye centre, nose tip, right and left mouth corners."""
    lm = lmk68[:, :2]
    return np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) taking src [N, 2]
    to dst [N, 2], as a [2, 3] matrix (Umeyama)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    U, S, Vt = np.linalg.svd(cov)
    D = np.diag([1.0, np.sign(np.linalg.det(U @ Vt))])
    R = U @ D @ Vt
    scale = np.trace(np.diag(S) @ D) / (s**2).sum(1).mean()
    t = mu_d - scale * R @ mu_s
    return np.hstack([scale * R, t[:, None]])


def face_transform(lmk68: np.ndarray, size: int) -> np.ndarray:
    """[2, 3] image -> tight face crop of size x size (pixel centres at integers)."""
    return similarity(five_points(lmk68), FACE_TEMPLATE * size - 0.5)


def head_transform(lmk68: np.ndarray, size: int, head_scale: float = 1.0) -> np.ndarray:
    """[2, 3] image -> FFHQ-style head crop of size x size."""
    p = five_points(lmk68)
    eye_left, eye_right = p[0], p[1]
    eye_avg = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    mouth_avg = (p[3] + p[4]) / 2
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * np.array([-1, 1])
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8) * head_scale
    y = np.flipud(x) * np.array([-1, 1])
    c = eye_avg + eye_to_mouth * 0.1
    src = np.stack([c - x - y, c + x - y, c - x + y])  # top-left, top-right, bottom-left corners
    dst = np.array([[-0.5, -0.5], [size - 0.5, -0.5], [-0.5, size - 0.5]])
    return cv2.getAffineTransform(src.astype(np.float32), dst.astype(np.float32)).astype(np.float64)


def warp(image: np.ndarray, transform: np.ndarray, size: int) -> np.ndarray:
    """The size x size crop of an image under an image -> crop transform (black outside the image)."""
    return cv2.warpAffine(image, transform, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def apply(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """points [N, 2] -> [N, 2] under a [2, 3] affine transform."""
    return points[:, :2] @ transform[:, :2].T + transform[:, 2]


def face_mask(lmk68: np.ndarray, height: int, width: int, margin: float) -> np.ndarray:
    """uint8 [H, W] (0 or 255): the convex hull of the landmarks dilated by margin x eye distance."""
    pts = lmk68[:, :2]
    hull = cv2.convexHull(np.round(pts).astype(np.int32))
    mask = np.zeros((height, width), np.uint8)
    cv2.fillConvexPoly(mask, hull, 255)
    r = int(round(margin * np.linalg.norm(pts[36:42].mean(0) - pts[42:48].mean(0))))
    if r > 0:
        mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    return mask
