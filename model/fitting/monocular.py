"""One view: head pose and 3D landmarks that carry the expression, from the face mesh's relative depth.

mediapipe's face mesh gives per frame 478 points with x, y in pixels and a relative depth z in the same
units. Its 68 iBUG points, put on their pixels' rays at the depth their size against the subject's
reference shape gives, are a camera-frame shape of the face; the reference (head frame, template metres)
is aligned to it by a robust similarity weighted towards the rigid points (nose, eye corners, upper face
contour): the rotation and position are the head's, and what the similarity does not explain is the
expression, kept in the head frame. The position is then refined on the 2D landmarks through the
perspective camera (a translation-only Gauss-Newton fit).

Frames without the mesh (another backend's 68 points, e.g. a dlib fallback): the reference is posed by
perspective-n-point and the expression is the 2D residual lifted onto the reference's depth.

Rotation, expression and position are smoothed over time (Gaussian-weighted local lines: zero-phase,
no lag on steady motion; frames weighted by whether they were fitted, and a frame whose rotation is far
from its neighbours' median counts as an outlier and is filled from them). One view cannot tell size
from distance: the reference keeps the template's (an adult's) size and the scale is 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import median_filter

from datasets.landmarks68 import MEDIAPIPE_TO_IBUG68
from model.fitting.geometry import apply_similarity, robust_similarity, rotation_angle_deg
from model.fitting.landmark_pose import RIGID_WEIGHTS, camera_to_world, reference_shape, template_poses

OUTLIER_DEG = 12.0  # a frame rotated this far from the median of its neighbours is not trusted


@dataclass
class MonocularFit:
    rotation: np.ndarray  # [T, 3, 3] head -> world
    translation: np.ndarray  # [T, 3] world position of the head-frame origin
    local: np.ndarray  # [T, 68, 3] landmarks in the head frame (reference + expression), template metres
    ok: np.ndarray  # [T] fitted
    reference: np.ndarray  # [68, 3] the subject's reference shape

    @property
    def scale(self) -> np.ndarray:
        return np.ones(len(self.ok))

    def world_landmarks(self) -> np.ndarray:
        """[T, 68, 3] (zeros where not fitted)."""
        pts = np.einsum("tij,tlj->tli", self.rotation, self.local) + self.translation[:, None]
        return np.where(self.ok[:, None, None], pts, 0.0)


def mesh_landmarks(full: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 68 iBUG points of mediapipe's 478 (x, y, z pixels): full [T, 478, 3] -> ([T, 68, 3], has [T])
    (frames whose mesh is all zeros, e.g. filled by another backend, have none)."""
    has = np.abs(full).reshape(len(full), -1).max(1) > 0
    return full[:, MEDIAPIPE_TO_IBUG68].astype(np.float64), has


def subject_reference(mesh: np.ndarray, valid: np.ndarray, template: np.ndarray) -> np.ndarray:
    """The subject's reference shape [68, 3] from mesh points [N, 68, 3] (valid [N, 68]) of its frames:
    their generalised Procrustes median, sized and oriented like the template."""
    return reference_shape(mesh, valid, template)


def back_project(mesh: np.ndarray, K: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """The face mesh's points [T, L, 3] (x, y pixels and relative depth in pixels at the face's scale) as
    camera-frame points [T, L, 3], with the points' centroid at `depth` [T] along the optical axis: each
    point on its pixel's ray, at its depth (relative depth times depth / focal: pixels to metres)."""
    fx, fy = K[:, 0, 0, None], K[:, 1, 1, None]
    cx, cy = K[:, 0, 2, None], K[:, 1, 2, None]
    z = depth[:, None] + (mesh[..., 2] - mesh[..., 2].mean(1, keepdims=True)) * depth[:, None] / fx
    return np.stack([(mesh[..., 0] - cx) * z / fx, (mesh[..., 1] - cy) * z / fy, z], -1)


def solve_translation(R: np.ndarray, local: np.ndarray, uv: np.ndarray, w: np.ndarray, K: np.ndarray,
                      t0: np.ndarray, iters: int = 8, robust_px: np.ndarray | None = None) -> np.ndarray:
    """Camera-frame positions t [T, 3] placing R local + t (R [T, 3, 3], local [T, L, 3]) on the 2D points
    uv [T, L, 2] (weights w [T, L]) through K [T, 3, 3]: Gauss-Newton from t0 [T, 3], Cauchy-weighted
    with scale robust_px [T] pixels when given."""
    t = np.array(t0, np.float64)
    arm = np.einsum("tij,tlj->tli", R, local)
    fx, fy, cx, cy = K[:, 0, 0, None], K[:, 1, 1, None], K[:, 0, 2, None], K[:, 1, 2, None]
    for _ in range(iters):
        cam = arm + t[:, None]
        z = np.maximum(cam[..., 2], 1e-6)
        r = np.stack([fx * cam[..., 0] / z + cx, fy * cam[..., 1] / z + cy], -1) - uv  # [T, L, 2]
        wr = w if robust_px is None else w / (1 + (np.linalg.norm(r, axis=-1) / robust_px[:, None]) ** 2)
        J = np.zeros(cam.shape[:2] + (2, 3))
        J[..., 0, 0], J[..., 0, 2] = fx / z, -fx * cam[..., 0] / z ** 2
        J[..., 1, 1], J[..., 1, 2] = fy / z, -fy * cam[..., 1] / z ** 2
        H = np.einsum("tl,tlai,tlaj->tij", wr, J, J) + 1e-9 * np.eye(3)
        g = np.einsum("tl,tlai,tla->ti", wr, J, r)
        t = t - np.linalg.solve(H, g[..., None])[..., 0]
    return t


def _weighted_smooth(x: np.ndarray, w: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-weighted local-linear smoothing over axis 0 of x [T, ...] with per-frame weights w [T]
    (0: ignored; such frames get the value their neighbours' line gives). A local line, not a local mean,
    so steady motion is not lagged and the clip's ends are not pulled inwards. sigma in frames; 0 returns x."""
    if sigma <= 0 or len(x) < 2:
        return x.copy()
    radius = int(np.ceil(3 * sigma))
    T = len(x)
    flat = x.reshape(T, -1)
    s0, s1, s2 = np.zeros(T), np.zeros(T), np.zeros(T)
    m0, m1 = np.zeros_like(flat), np.zeros_like(flat)
    for k in range(-radius, radius + 1):
        lo, hi = max(0, -k), min(T, T - k)  # frames t in [lo, hi) have a neighbour t + k
        if hi <= lo:
            continue
        g = np.exp(-0.5 * (k / sigma) ** 2) * w[lo + k:hi + k]
        s0[lo:hi] += g
        s1[lo:hi] += g * k
        s2[lo:hi] += g * k * k
        m0[lo:hi] += g[:, None] * flat[lo + k:hi + k]
        m1[lo:hi] += (g * k)[:, None] * flat[lo + k:hi + k]
    det = s0 * s2 - s1 ** 2
    line = det > 1e-6 * np.maximum(s0 * s2, 1e-12)
    mean = m0 / np.maximum(s0, 1e-12)[:, None]
    fit = (s2[:, None] * m0 - s1[:, None] * m1) / np.where(line, det, 1.0)[:, None]
    out = np.where(line[:, None], fit, np.where(s0[:, None] > 1e-12, mean, flat))
    return out.reshape(x.shape)


def smooth_rotations(R: np.ndarray, w: np.ndarray, sigma: float) -> np.ndarray:
    """[T, 3, 3] rotations smoothed over time: quaternions made sign-continuous, averaged with the
    weighted Gaussian, renormalised."""
    from scipy.spatial.transform import Rotation

    q = Rotation.from_matrix(R).as_quat()  # [T, 4]
    for t in range(1, len(q)):
        if q[t] @ q[t - 1] < 0:
            q[t] = -q[t]
    q = _weighted_smooth(q, w, sigma)
    q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    return Rotation.from_quat(q).as_matrix()


def rotation_outliers(R: np.ndarray, ok: np.ndarray, window: int = 5, limit: float = OUTLIER_DEG) -> np.ndarray:
    """[T] bool: fitted frames whose rotation is more than `limit` degrees from the rotation whose
    rotation-vector components are the median of the fitted frames around them."""
    from scipy.spatial.transform import Rotation

    idx = np.flatnonzero(ok)
    out = np.zeros(len(ok), bool)
    if len(idx) < 3:
        return out
    rv = Rotation.from_matrix(R[idx]).as_rotvec()
    med = median_filter(rv, size=(window, 1), mode="nearest")
    out[idx] = rotation_angle_deg(Rotation.from_rotvec(med).as_matrix(), R[idx]) > limit
    return out


def fit_monocular(uv: np.ndarray, conf: np.ndarray, mesh: np.ndarray | None, has_mesh: np.ndarray, K: np.ndarray,
                  E: np.ndarray, reference: np.ndarray, *, min_conf: float = 0.1, smooth_pose: float = 0.0,
                  smooth_expression: float = 0.0, robust: float = 0.02) -> MonocularFit:
    """uv [T, 68, 2], conf [T, 68]; mesh [T, 68, 3] (x, y, z pixels) or None, has_mesh [T]; K [T, 3, 3]
    (per frame) or [3, 3]; E [4, 4] world_to_cam; reference [68, 3]. smooth_*: Gaussian sigma in frames."""
    uv = np.asarray(uv, np.float64)
    T = len(uv)
    K = np.broadcast_to(np.asarray(K, np.float64), (T, 3, 3)).copy()
    seen = conf >= min_conf
    ok = seen.sum(1) >= 20
    w = np.where(seen, conf, 0.0)
    use_mesh = ok & (has_mesh if mesh is not None else np.zeros(T, bool))
    R_cam, local = np.tile(np.eye(3), (T, 1, 1)), np.repeat(reference[None], T, 0).astype(np.float64)
    t_cam = np.zeros((T, 3))
    size = np.array([np.linalg.norm(np.ptp(uv[t][seen[t]], 0)) if seen[t].any() else 1.0 for t in range(T)])
    # frames with the mesh: its scale against the reference gives the face's depth (pixels per metre =
    # focal / depth); on the pixels' rays at that depth it is a camera-frame shape the reference is
    # aligned to (perspective kept: a turned face's near half is not mistaken for an expression)
    if use_mesh.any():
        P, Km = mesh[use_mesh], K[use_mesh]
        wr = (w * RIGID_WEIGHTS)[use_mesh]
        s_px, _, _, _ = robust_similarity(np.broadcast_to(reference, P.shape), P, wr)
        cam = back_project(P, Km, Km[:, 0, 0] / s_px)
        s, Rc, tc, _ = robust_similarity(np.broadcast_to(reference, cam.shape), cam, wr)
        cam, tc = cam / s[:, None, None], tc / s[:, None]  # sized like the reference (same projections)
        local[use_mesh] = np.einsum("tji,tlj->tli", Rc, cam - tc[:, None])
        R_cam[use_mesh], t_cam[use_mesh] = Rc, tc
    # other frames: perspective-n-point of the reference, the 2D residual lifted at its depth
    rest = ok & ~use_mesh
    if rest.any():
        p = template_poses(uv[rest], conf[rest], K[rest], np.eye(4), reference, min_conf=min_conf, robust=robust)
        R_cam[rest], t_cam[rest] = p.rotation, p.translation
        local[rest] = _lift_residual(uv[rest], p.rotation, p.translation, reference, K[rest])
    # temporal filtering: rotation first (outliers out), expression, then the position that fits them
    weight = ok.astype(np.float64)
    weight[rotation_outliers(R_cam, ok)] = 0.0
    R_s = smooth_rotations(R_cam, weight, smooth_pose)
    local_s = _weighted_smooth(local, weight, smooth_expression)
    t_s = solve_translation(R_s, local_s, uv, w * RIGID_WEIGHTS, K, np.where(ok[:, None], t_cam, [0, 0, 1.0]),
                            robust_px=np.maximum(robust * size, 1.0))
    t_s = _weighted_smooth(t_s, weight, smooth_pose)
    R, t = camera_to_world(R_s, t_s, np.asarray(E, np.float64))
    return MonocularFit(R, t, np.where(ok[:, None, None], local_s, 0.0), ok, np.asarray(reference, np.float64))


def _lift_residual(uv: np.ndarray, R: np.ndarray, t: np.ndarray, reference: np.ndarray, K: np.ndarray
                   ) -> np.ndarray:
    """Head-frame landmarks [T, 68, 3] that project onto uv [T, 68, 2]: each reference point moved within
    its depth plane (camera frame) onto its detection's ray, expressed back in the head frame."""
    cam = apply_similarity(np.ones(len(uv)), R, t, np.broadcast_to(reference, (len(uv),) + reference.shape))
    hom = np.concatenate([uv, np.ones(uv.shape[:-1] + (1,))], -1)
    rays = np.einsum("tij,tlj->tli", np.linalg.inv(K), hom)  # z = 1
    moved = rays * cam[..., 2:3]
    return np.einsum("tji,tlj->tli", R, moved - t[:, None])
