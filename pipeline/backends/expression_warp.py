"""The offline expression-transfer backend: move a source face's landmarks to the target configuration
and warp the source crop piecewise-affinely (Delaunay triangles over the landmarks and a fixed ring
around the face), painting a mouth interior (teeth, shadow) where the mouth opens wider than in the
source and the lids' skin where an eye closes. Colours come from the source (identity kept); pixels
outside the ring are the source's own.
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


def _mouth_frame(points: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel grids xs, ys in the mouth's own frame (the inner-lip corners 60 -> 64 as the x axis): (u
    along the mouth in [-1, 1] between the corners, s across it: 0 on the upper inner lip, 1 on the
    lower, the lips' gap at u)."""
    a, b = points[60], points[64]
    axis = (b - a) / max(np.linalg.norm(b - a), 1e-6)
    normal = np.array([-axis[1], axis[0]])
    if normal[1] < 0:
        normal = -normal  # pointing down the face
    c = (a + b) / 2
    half = max(np.linalg.norm(b - a) / 2, 1e-6)

    def frame(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = p - c
        return d @ axis / half, d @ normal

    pu, pv = frame(np.stack([xs, ys], -1))
    upper_u, upper_v = frame(points[[60, 61, 62, 63, 64]])
    lower_u, lower_v = frame(points[[60, 67, 66, 65, 64]])
    top = np.interp(pu, upper_u, upper_v)
    bottom = np.interp(pu, lower_u, lower_v)
    gap = np.maximum(bottom - top, 1e-3)
    return pu, (pv - top) / gap, gap


def paint_mouth_interior(image: np.ndarray, points: np.ndarray, amount: float) -> np.ndarray:
    """Fill the inner-lip polygon of points [68, 2] with an open mouth, feathered: upper teeth from the
    upper lip down, lower teeth up from the lower lip, a dark gap between them and dark corners, lit like
    the face (teeth and shadow scaled by the lips' brightness); amount in [0, 1] (how much wider than
    the source the mouth opened)."""
    H, W = image.shape[:2]
    poly = np.round(points[INNER_LIPS] * 16).astype(np.int32)
    mask = np.zeros((H, W), np.uint8)
    cv2.fillPoly(mask, [poly], 255, lineType=cv2.LINE_AA, shift=4)
    if mask.max() == 0:
        return image
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    gy, gx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    u, s, gap = _mouth_frame(points[:, :2].astype(np.float64), gx, gy)
    ring = cv2.dilate(mask, np.ones((5, 5), np.uint8)) > 0
    lips = image[ring & (mask == 0)].astype(np.float32)
    around = image[max(0, y0 - (y1 - y0)):y1 + (y1 - y0), x0:x1].reshape(-1, 3).astype(np.float32)
    light = float(np.clip(np.percentile(around.mean(1), 90) / 190.0, 0.4, 1.25))  # the lit skin near the mouth
    dark = 0.3 * (np.median(lips, 0) if len(lips) else np.array([120.0, 60, 60])) * np.array([1.0, 0.6, 0.6])
    teeth = np.minimum(np.array([232.0, 222.0, 205.0]) * light, 250.0)
    # teeth fill a smile's narrow opening; a wide-open mouth shows them only near the lips
    opening = float(np.median(gap) / max(np.linalg.norm(points[64] - points[60]), 1e-6))
    upper = np.clip(0.55 - 1.2 * max(opening - 0.15, 0), 0.2, 0.55)
    lower = np.clip(0.3 - 0.8 * max(opening - 0.15, 0), 0.1, 0.3)
    band = np.clip((upper - s) / 0.08, 0, 1) + np.clip((s - (1 - lower)) / 0.08, 0, 1)
    band *= np.clip((0.8 - np.abs(u)) / 0.15, 0, 1)  # the corners stay dark
    shade = 0.85 + 0.15 * np.cos(np.clip(u, -1, 1) * np.pi / 2)  # rounder towards the middle
    edges = np.array([0.0, 0.2, 0.38, 0.55, 0.7])  # gaps between teeth, narrower towards the corners
    shade = shade * (1 - 0.22 * np.exp(-((np.abs(u)[..., None] - edges) / 0.018) ** 2).max(-1))
    interior = dark + np.clip(band, 0, 1)[..., None] * (teeth * shade[..., None] - dark)
    alpha = cv2.GaussianBlur(mask, (0, 0), 0.8).astype(np.float32)[y0:y1, x0:x1, None] / 255 * amount
    out = image.astype(np.float32)
    out[y0:y1, x0:x1] = out[y0:y1, x0:x1] * (1 - alpha) + interior * alpha
    return out.round().clip(0, 255).astype(np.uint8)


def eye_opening(points: np.ndarray, right: bool) -> float:
    """Lid gap over eye width of one eye of iBUG-68 points [68, 2] (right: the subject's right, 36-41)."""
    i = 36 if right else 42
    width = np.linalg.norm(points[i + 3] - points[i])
    gap = np.linalg.norm(points[[i + 1, i + 2]] - points[[i + 5, i + 4]], axis=-1).mean()
    return float(gap / max(width, 1e-6))


def close_eyelids(image: np.ndarray, source_points: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Where the warp closed an eye (its lids meet in points [68, 2] but not in source_points), paint the
    collapsed slit with the lid's own skin (sampled just above the eye) and a soft lash line, so no sliver
    of the eyeball the warp squeezed remains."""
    out = image.astype(np.float32)
    H, W = image.shape[:2]
    for right in (True, False):
        i = 36 if right else 42
        closed = 1.0 - eye_opening(points, right) / max(eye_opening(source_points, right), 1e-6)
        if closed < 0.5:
            continue
        eye = points[i:i + 6, :2]
        width = np.linalg.norm(eye[3] - eye[0])
        mask = np.zeros((H, W), np.uint8)
        cv2.fillPoly(mask, [np.round(eye * 16).astype(np.int32)], 255, lineType=cv2.LINE_AA, shift=4)
        mask = cv2.dilate(mask, np.ones((3, 3), np.uint8), iterations=max(1, int(round(0.06 * width))))
        lid = np.zeros((H, W), np.uint8)
        up = np.array([0.0, -0.18 * width])
        cv2.fillPoly(lid, [np.round((eye[[0, 1, 2, 3]] + up) * 16).astype(np.int32)], 255, shift=4)
        skin = np.median(image[(lid > 0) & (mask == 0)].reshape(-1, 3), 0) if ((lid > 0) & (mask == 0)).any() \
            else np.median(image[mask > 0], 0)
        alpha = cv2.GaussianBlur(mask, (0, 0), max(0.8, 0.05 * width)).astype(np.float32)[..., None] / 255
        weight = float(np.clip((closed - 0.5) / 0.3, 0, 1))
        out = out * (1 - weight * alpha) + skin * weight * alpha
        lash = np.zeros((H, W), np.uint8)
        cv2.polylines(lash, [np.round((eye[[0, 1, 2, 3]] + eye[[0, 5, 4, 3]]) / 2 * 16).astype(np.int32)], False, 255,
                      thickness=max(1, int(round(0.05 * width))), lineType=cv2.LINE_AA, shift=4)
        a = cv2.GaussianBlur(lash, (0, 0), 0.7).astype(np.float32)[..., None] / 255 * 0.55 * weight
        out = out * (1 - a) + 0.45 * skin * a
    return out.round().clip(0, 255).astype(np.uint8)


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
        out = close_eyelids(out, src, dst)
        keep = ~ring_mask(src, size) & ~ring_mask(dst, size)
        out[keep] = source[keep]  # outside the face ring: the source's pixels, exactly
        return out
