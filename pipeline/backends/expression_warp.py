"""The offline expression-transfer backend: move a source face's landmarks to the target configuration
and warp the source crop piecewise-affinely (Delaunay triangles over the landmarks and a fixed ring
around the face), painting a mouth interior where the mouth opens wider than in the source. Every
pixel comes from the source (colour and identity kept); pixels outside the ring are the source's own.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.spatial import Delaunay

RING_POINTS = 24  # fixed anchors around the face
RING_SCALE = 1.35  # ring radius relative to the landmark hull, about the landmarks' centroid
INNER_LIPS = slice(60, 68)


def face_ring(points: np.ndarray, size: int) -> np.ndarray:
    """[RING_POINTS + 8, 2]: points on an ellipse around the landmarks [68, 2] and the crop's corners
    and edge midpoints, all kept in place by the warp."""
    c = points.mean(0)
    d = points - c
    rx, ry = np.abs(d[:, 0]).max() * RING_SCALE, np.abs(d[:, 1]).max() * RING_SCALE
    a = np.linspace(0, 2 * np.pi, RING_POINTS, endpoint=False)
    ring = c + np.stack([rx * np.cos(a), ry * np.sin(a)], 1)
    e = size - 1.0
    border = np.array([[0, 0], [e / 2, 0], [e, 0], [e, e / 2], [e, e], [e / 2, e], [0, e], [0, e / 2]])
    far = np.array([[-size, -size], [2 * size, -size], [2 * size, 2 * size], [-size, 2 * size]], float)
    return np.concatenate([ring, border, far])


def ring_mask(points: np.ndarray, size: int) -> np.ndarray:
    """bool [size, size]: inside the ring (the only pixels the warp may change)."""
    ring = face_ring(points, size)[:RING_POINTS]
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [np.round(ring * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def piecewise_affine(image: np.ndarray, src: np.ndarray, dst: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Warp image [H, W, C] so that points src [N, 2] land on dst [N, 2]; triangles [F, 3] index the
    points (a triangulation of src, kept for dst). Backward mapping: every output pixel in a dst
    triangle samples the source through that triangle's affine map."""
    H, W = image.shape[:2]
    tri_id = np.full((H, W), -1, np.int32)
    affines = np.zeros((len(triangles), 2, 3))
    for k, tri in enumerate(triangles):
        affines[k] = cv2.getAffineTransform(dst[tri].astype(np.float32), src[tri].astype(np.float32))
        cv2.fillConvexPoly(tri_id, np.round(dst[tri] * 16).astype(np.int32), k, lineType=cv2.LINE_8, shift=4)
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    A = affines[np.maximum(tri_id, 0)]  # [H, W, 2, 3]
    map_x = A[..., 0, 0] * xs + A[..., 0, 1] * ys + A[..., 0, 2]
    map_y = A[..., 1, 0] * xs + A[..., 1, 1] * ys + A[..., 1, 2]
    outside = tri_id < 0
    map_x[outside], map_y[outside] = xs[outside], ys[outside]
    return cv2.remap(image, map_x.astype(np.float32), map_y.astype(np.float32), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REFLECT)


def mouth_opening(points: np.ndarray) -> float:
    """Inner-lip gap over mouth width of iBUG-68 points [68, 2]."""
    width = np.linalg.norm(points[54] - points[48])
    gap = np.linalg.norm(points[[61, 62, 63]] - points[[67, 66, 65]], axis=-1).mean()
    return float(gap / max(width, 1e-6))


def paint_mouth_interior(image: np.ndarray, points: np.ndarray, amount: float) -> np.ndarray:
    """Fill the inner-lip polygon of points [68, 2] with a dark mouth and a band of upper teeth,
    feathered; amount in [0, 1] (how much wider than the source the mouth opened)."""
    H, W = image.shape[:2]
    poly = np.round(points[INNER_LIPS] * 16).astype(np.int32)
    mask = np.zeros((H, W), np.uint8)
    cv2.fillPoly(mask, [poly], 255, lineType=cv2.LINE_AA, shift=4)
    if mask.max() == 0:
        return image
    lips = image[mask > 0].astype(np.float32)
    interior = np.empty_like(image, dtype=np.float32)
    interior[:] = 0.25 * np.median(lips, 0) * np.array([1.0, 0.6, 0.6])  # the lips' hue, in shadow
    top = points[[61, 62, 63]].mean(0)
    bottom = points[[65, 66, 67]].mean(0)
    gap = max(bottom[1] - top[1], 1.0)
    ys = np.arange(H, dtype=np.float32)[:, None]
    teeth = np.clip(1.0 - (ys - top[1]) / (0.3 * gap), 0, 1) * (ys >= top[1] - 1)
    interior = interior + teeth[..., None] * (np.array([205, 200, 190], np.float32) - interior) * 0.8
    alpha = cv2.GaussianBlur(mask, (0, 0), max(0.6, 0.04 * gap)).astype(np.float32)[..., None] / 255 * amount
    return (image * (1 - alpha) + interior * alpha).round().clip(0, 255).astype(np.uint8)


class WarpExpression:
    """warp(source crop, its landmarks, the target landmarks) -> the source face with the target's
    expression. Works on crops of any size; landmarks in crop pixels."""

    framing = "face"
    name = "warp"

    def __call__(self, source: np.ndarray, source_points: np.ndarray, target_points: np.ndarray) -> np.ndarray:
        """source uint8 [S, S, 3]; source_points, target_points [68, 2] -> uint8 [S, S, 3]."""
        size = source.shape[0]
        src = np.asarray(source_points, np.float64)[:, :2]
        dst = np.asarray(target_points, np.float64)[:, :2]
        anchors = face_ring(src, size)
        src_all = np.concatenate([src, anchors])
        dst_all = np.concatenate([dst, anchors])
        triangles = Delaunay(src_all).simplices
        out = piecewise_affine(source, src_all, dst_all, triangles)
        wider = mouth_opening(dst) - mouth_opening(src)
        if wider > 0.03:
            out = paint_mouth_interior(out, dst, float(np.clip(wider / 0.15, 0, 1)))
        keep = ~ring_mask(src, size) & ~ring_mask(dst, size)
        out[keep] = source[keep]  # outside the face ring: the source's pixels, exactly
        return out
