"""Multi-view triangulation of 2D landmarks: a confidence-weighted DLT per point, then robust
Gauss-Newton refinement of the reprojection error in pixels (Cauchy weights), with views whose
landmarks disagree with the others as a whole dropped. numpy, batched over frames and landmarks.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np


@dataclass
class Triangulation:
    points: np.ndarray  # [T, L, 3] world; NaN where fewer than 2 views saw the point
    valid: np.ndarray  # [T, L] bool: triangulated from >= 2 views
    n_views: np.ndarray  # [T, L] int: views that carried the point (after outlier removal)
    residual: np.ndarray  # [T, V, L] pixels, reprojection error of every detection (NaN where none)
    view_residual: np.ndarray  # [T, V] pixels, median residual of a view's landmarks (NaN: no face)
    outlier_views: np.ndarray  # [T, V] bool: dropped as a whole (residual above the threshold)


def face_size_px(uv: np.ndarray, conf: np.ndarray, min_conf: float) -> np.ndarray:
    """Diagonal of the detected landmarks' bounding box per view: uv [..., L, 2] -> [...] pixels."""
    ok = conf >= min_conf
    big = np.where(ok[..., None], uv, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN views: no face
        size = np.linalg.norm(np.nanmax(big, -2) - np.nanmin(big, -2), axis=-1)
    return np.nan_to_num(size, nan=0.0)


def view_residuals(points: np.ndarray, uv: np.ndarray, detected: np.ndarray, K: np.ndarray, E: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Residual of every detection [T, V, L] and each view's median [T, V], pixels (NaN: none)."""
    proj, _ = reproject(points, K, E)
    residual = np.where(detected, np.linalg.norm(proj - uv, axis=-1), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return residual, np.nanmedian(residual, -1)


def dlt(uv: np.ndarray, w: np.ndarray, K: np.ndarray, E: np.ndarray) -> np.ndarray:
    """Weighted direct linear triangulation.

    uv: [T, V, L, 2] pixels; w: [T, V, L] weights (0 = unused); K: [V, 3, 3]; E: [V, 4, 4] world_to_cam
    -> [T, L, 3] (NaN where fewer than 2 views have weight)."""
    T, V, L, _ = uv.shape
    Kinv = np.linalg.inv(K)  # [V, 3, 3]
    hom = np.concatenate([uv, np.ones(uv.shape[:-1] + (1,))], -1)  # [T, V, L, 3]
    xn = np.einsum("vij,tvlj->tvli", Kinv, hom)  # normalised camera coordinates
    P = E[:, :3, :]  # [V, 3, 4]
    rows_x = xn[..., 0:1] * P[None, :, None, 2] - P[None, :, None, 0]  # [T, V, L, 4]
    rows_y = xn[..., 1:2] * P[None, :, None, 2] - P[None, :, None, 1]
    A = np.stack([rows_x, rows_y], 2) * w[:, :, None, :, None]  # [T, V, 2, L, 4]
    A = A.transpose(0, 3, 1, 2, 4).reshape(T, L, 2 * V, 4)
    _, _, Vt = np.linalg.svd(A)
    X = Vt[..., -1, :]  # [T, L, 4]
    with np.errstate(all="ignore"):
        pts = X[..., :3] / X[..., 3:4]
    enough = (w > 0).sum(1) >= 2  # [T, L]
    return np.where(enough[..., None], pts, np.nan)


def reproject(points: np.ndarray, K: np.ndarray, E: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """points [T, L, 3], K [V, 3, 3] (or [T, V, 3, 3] per frame), E [V, 4, 4] -> (uv [T, V, L, 2],
    depth [T, V, L])."""
    cam = np.einsum("vij,tlj->tvli", E[:, :3, :3], points) + E[None, :, None, :3, 3]
    z = cam[..., 2]
    with np.errstate(all="ignore"):
        xy = cam[..., :2] / z[..., None]
    K = K if K.ndim == 4 else K[None]
    uv = xy * np.stack([K[..., 0, 0], K[..., 1, 1]], -1)[:, :, None] + K[:, :, None, :2, 2]
    return uv, z


def refine(points: np.ndarray, uv: np.ndarray, w: np.ndarray, K: np.ndarray, E: np.ndarray,
           c_px: np.ndarray, iters: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Robust Gauss-Newton on the reprojection error.

    points [T, L, 3] start; uv [T, V, L, 2]; w [T, V, L] prior weights (confidence, 0 = unused);
    c_px [T, V] Cauchy scale per view, pixels -> (points, robust weights [T, V, L])."""
    f = np.stack([K[:, 0, 0], K[:, 1, 1]], -1)  # [V, 2]
    R = E[:, :3, :3]
    ok = np.isfinite(points).all(-1)  # [T, L]
    X = np.where(ok[..., None], points, 0.0)
    wr = w.copy()
    for _ in range(iters):
        cam = np.einsum("vij,tlj->tvli", R, X) + E[None, :, None, :3, 3]  # [T, V, L, 3]
        z = np.where(np.abs(cam[..., 2]) < 1e-9, 1e-9, cam[..., 2])
        proj = cam[..., :2] / z[..., None] * f[None, :, None] + K[None, :, None, :2, 2]
        r = proj - uv  # [T, V, L, 2]
        dist = np.linalg.norm(r, axis=-1)
        wr = w / (1.0 + (dist / c_px[:, :, None]) ** 2) * (z > 0)
        # d proj / d cam, then through R: J [T, V, L, 2, 3]
        J = np.zeros(cam.shape[:-1] + (2, 3))
        J[..., 0, 0] = f[None, :, None, 0] / z
        J[..., 0, 2] = -f[None, :, None, 0] * cam[..., 0] / z ** 2
        J[..., 1, 1] = f[None, :, None, 1] / z
        J[..., 1, 2] = -f[None, :, None, 1] * cam[..., 1] / z ** 2
        J = np.einsum("tvlab,vbc->tvlac", J, R)
        H = np.einsum("tvl,tvlai,tvlaj->tlij", wr, J, J) + 1e-9 * np.eye(3)
        g = np.einsum("tvl,tvlai,tvla->tli", wr, J, r)
        step = np.linalg.solve(H, g[..., None])[..., 0]
        X = X - np.where(ok[..., None], step, 0.0)
    return np.where(ok[..., None], X, np.nan), wr


def triangulate(uv: np.ndarray, conf: np.ndarray, K: np.ndarray, E: np.ndarray, *, min_conf: float = 0.1,
                robust: float = 0.02, outlier_view: float = 0.06, iters: int = 8) -> Triangulation:
    """Triangulate landmarks seen in several calibrated views.

    uv [T, V, L, 2] pixels, conf [T, V, L] in [0, 1]; K [V, 3, 3]; E [V, 4, 4] world_to_cam.
    robust: Cauchy scale of the refinement as a fraction of each view's face size (bounding-box
    diagonal of its landmarks); outlier_view: a view whose median residual exceeds this fraction of its
    face size is dropped (a wrong face, a mirrored detection) and the points are refined again."""
    uv = np.asarray(uv, np.float64)
    K = np.asarray(K, np.float64)
    E = np.asarray(E, np.float64)
    detected = conf >= min_conf
    w = np.where(detected, conf, 0.0).astype(np.float64)
    size = face_size_px(uv, conf, min_conf)  # [T, V]
    c_px = np.maximum(robust * size, 1.0)
    outliers = np.zeros(w.shape[:2], bool)
    points = dlt(uv, w, K, E)
    for attempt in range(2):
        points, _ = refine(points, uv, w, K, E, c_px, iters)
        _, view_res = view_residuals(points, uv, w > 0, K, E)
        bad = (view_res > outlier_view * np.maximum(size, 1.0)) & ~outliers
        if attempt == 1 or not bad.any():
            break
        outliers |= bad
        w = np.where(outliers[..., None], 0.0, w)
        # restart from a DLT without the dropped views: their pull on the first estimate is gone
        points = dlt(uv, w, K, E)
    n_views = (w > 0).sum(1)
    valid = (n_views >= 2) & np.isfinite(points).all(-1)
    points = np.where(valid[..., None], points, np.nan)
    residual, view_res = view_residuals(points, uv, detected, K, E)
    return Triangulation(points, valid, n_views, residual, view_res, outliers)
