"""Head pose and scale from landmarks without a morphable model.

Multi-view: the clip's reference landmark set (the subject's face in the head frame, found by a
generalised Procrustes alignment of its triangulated frames, oriented like the template) and per frame
a robust similarity from the reference to the triangulated points.
One view: the mean template posed by robust Gauss-Newton on the reprojection error (perspective-n-point
with the template's metric size).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from model.fitting.geometry import apply_similarity, axis_angle_to_matrix, robust_similarity, similarity

# How much each iBUG-68 landmark says about the rigid head pose: the nose and the eye corners do not
# move with expressions, the upper face contour little, brows and eyelids some, the mouth and the jaw a lot.
RIGID_WEIGHTS = np.full(68, 0.1)
RIGID_WEIGHTS[[0, 1, 2, 14, 15, 16]] = 0.7
RIGID_WEIGHTS[27:36] = 1.0
RIGID_WEIGHTS[[36, 39, 42, 45]] = 1.0
RIGID_WEIGHTS[[37, 38, 40, 41, 43, 44, 46, 47]] = 0.3
RIGID_WEIGHTS[17:27] = 0.3


@dataclass
class LandmarkPoses:
    scale: np.ndarray  # [T] head-frame units (template metres) -> world
    rotation: np.ndarray  # [T, 3, 3] head -> world
    translation: np.ndarray  # [T, 3] world position of the head-frame origin
    ok: np.ndarray  # [T] bool: enough landmarks for a pose
    reference: np.ndarray  # [L, 3] the reference landmark set in the head frame

    def posed_reference(self) -> np.ndarray:
        """[T, L, 3] the reference placed by each frame's pose."""
        return apply_similarity(self.scale, self.rotation, self.translation, self.reference[None])


def reference_shape(points: np.ndarray, valid: np.ndarray, template: np.ndarray, *, rounds: int = 3,
                    min_points: int = 20) -> np.ndarray:
    """The reference landmark set [L, 3] of a subject: a generalised Procrustes alignment of its
    triangulated frames (points [T, L, 3], NaN where invalid; valid [T, L]), the per-point median in
    the head frame (robust to expressions), oriented, placed and sized like `template` [L, 3]."""
    L = points.shape[1]
    rigid = RIGID_WEIGHTS[:L] if L == 68 else np.ones(L)
    reference = np.asarray(template, np.float64)
    ok = usable_frames(valid, min_points)
    if not ok.any():
        return reference
    P = np.where(valid[..., None], points, 0.0)[ok]
    w = (valid * rigid)[ok]
    for _ in range(rounds):
        s, R, t, _ = robust_similarity(np.broadcast_to(reference, P.shape), P, w)
        local = np.einsum("tji,tlj->tli", R, P - t[:, None]) / s[:, None, None]
        local = np.where(valid[ok][..., None], local, np.nan)
        median = np.nanmedian(local, 0)
        median = np.where(np.isfinite(median).all(-1)[:, None], median, reference)
        # keep the head frame the template's: orientation, origin and size relative to it
        s_n, R_n, t_n = similarity(median, template, rigid)
        reference = apply_similarity(s_n, R_n, t_n, median)
    return reference


def usable_frames(valid: np.ndarray, min_points: int = 20) -> np.ndarray:
    """[T] bool: frames with enough triangulated landmarks, most of the rigid ones among them."""
    L = valid.shape[1]
    rigid = RIGID_WEIGHTS[:L] if L == 68 else np.ones(L)
    return (valid.sum(1) >= min_points) & ((valid * rigid).sum(1) >= 0.5 * rigid.sum())


def reference_poses(points: np.ndarray, valid: np.ndarray, reference: np.ndarray, min_points: int = 20
                    ) -> LandmarkPoses:
    """Per frame the robust similarity placing `reference` [L, 3] (head frame) on the triangulated
    points [T, L, 3] (valid [T, L]); frames without enough points keep the identity pose, ok False."""
    T, L, _ = points.shape
    rigid = RIGID_WEIGHTS[:L] if L == 68 else np.ones(L)
    ok = usable_frames(valid, min_points)
    s, R, t = np.ones(T), np.tile(np.eye(3), (T, 1, 1)), np.zeros((T, 3))
    if ok.any():
        P = np.where(valid[..., None], points, 0.0)[ok]
        s[ok], R[ok], t[ok], _ = robust_similarity(np.broadcast_to(reference, P.shape), P, (valid * rigid)[ok])
    return LandmarkPoses(s, R, t, ok, np.asarray(reference, np.float64))


def template_poses(uv: np.ndarray, conf: np.ndarray, K: np.ndarray, E: np.ndarray, template: np.ndarray, *,
                   min_conf: float = 0.1, robust: float = 0.02, iters: int = 30) -> LandmarkPoses:
    """One view: pose the metric template [L, 3] to 2D landmarks uv [T, L, 2], conf [T, L] seen by the
    camera K [3, 3] (or [T, 3, 3], one per frame), E [4, 4] world_to_cam. The scale stays 1 (depth and
    size are not separable in one view; the template carries an adult's size)."""
    uv = np.asarray(uv, np.float64)
    T, L, _ = uv.shape
    rigid = RIGID_WEIGHTS[:L] if L == 68 else np.ones(L)
    w0 = np.where(conf >= min_conf, conf, 0.0) * rigid
    ok = (conf >= min_conf).sum(1) >= 20
    K = np.broadcast_to(np.asarray(K, np.float64), (T, 3, 3))
    f = np.stack([K[:, 0, 0], K[:, 1, 1]], 1)  # [T, 2]
    c = K[:, :2, 2]  # [T, 2]
    # start: facing the camera, at the depth where the template's width matches the detected width
    det = np.where((conf >= min_conf)[..., None], uv, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # frames without a face: NaN, not ok
        width_px = np.nanmax(det[..., 0], 1) - np.nanmin(det[..., 0], 1)
        height_px = np.nanmax(det[..., 1], 1) - np.nanmin(det[..., 1], 1)
        centre = np.nanmean(det, 1)
    width_m = template[:, 0].max() - template[:, 0].min()
    depth = np.where(width_px > 1, f[:, 0] * width_m / np.maximum(width_px, 1), 1.0)
    cam_centre = np.concatenate([(np.nan_to_num(centre, nan=0.0) - c) / f * depth[:, None], depth[:, None]], 1)
    R_cam = np.tile(np.diag([1.0, -1.0, -1.0]), (T, 1, 1))  # head y up, z to the camera -> OpenCV camera
    t_cam = cam_centre - np.einsum("tij,j->ti", R_cam, template.mean(0))
    size = np.nan_to_num(np.sqrt(width_px ** 2 + height_px ** 2), nan=1.0)
    c_px = np.maximum(robust * size, 1.0)
    fx, fy = f[:, 0:1], f[:, 1:2]  # [T, 1]
    for _ in range(iters):
        cam = np.einsum("tij,lj->tli", R_cam, template) + t_cam[:, None]  # [T, L, 3]
        z = np.maximum(cam[..., 2], 1e-6)
        proj = cam[..., :2] / z[..., None] * f[:, None] + c[:, None]
        r = proj - uv
        dist = np.linalg.norm(r, axis=-1)
        wr = w0 / (1.0 + (dist / c_px[:, None]) ** 2)
        # parameters: a rotation increment (axis-angle, applied on the left) and a translation increment
        Jp = np.zeros((T, L, 2, 3))
        Jp[..., 0, 0] = fx / z
        Jp[..., 0, 2] = -fx * cam[..., 0] / z ** 2
        Jp[..., 1, 1] = fy / z
        Jp[..., 1, 2] = -fy * cam[..., 1] / z ** 2
        arm = cam - t_cam[:, None]  # R p: d(exp(w) R p)/dw = -[R p]x
        skew = np.zeros((T, L, 3, 3))
        skew[..., 0, 1], skew[..., 0, 2] = -arm[..., 2], arm[..., 1]
        skew[..., 1, 0], skew[..., 1, 2] = arm[..., 2], -arm[..., 0]
        skew[..., 2, 0], skew[..., 2, 1] = -arm[..., 1], arm[..., 0]
        J = np.concatenate([np.einsum("tlab,tlbc->tlac", Jp, -skew), Jp], -1)  # [T, L, 2, 6]
        H = np.einsum("tl,tlai,tlaj->tij", wr, J, J) + 1e-6 * np.eye(6)
        g = np.einsum("tl,tlai,tla->ti", wr, J, r)
        step = -np.linalg.solve(H, g[..., None])[..., 0]
        R_cam = axis_angle_to_matrix(step[:, :3]) @ R_cam
        t_cam = t_cam + step[:, 3:]
    R, t = camera_to_world(R_cam, t_cam, E)
    return LandmarkPoses(np.ones(T), R, t, ok, np.asarray(template, np.float64))


def camera_to_world(R_cam: np.ndarray, t_cam: np.ndarray, E: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Head poses in a camera's frame (R_cam [T, 3, 3], t_cam [T, 3]) -> world, for world_to_cam E [4, 4]."""
    R_wc, t_wc = E[:3, :3].T, -E[:3, :3].T @ E[:3, 3]
    return np.einsum("ij,tjk->tik", R_wc, R_cam), t_cam @ R_wc.T + t_wc
