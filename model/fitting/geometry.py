"""Small rigid-geometry helpers of the fitting: weighted similarity (Umeyama) fits, robust versions,
rotation conversions and angle errors. numpy, batched over leading axes.
"""

from __future__ import annotations

import warnings

import numpy as np


def similarity(src: np.ndarray, dst: np.ndarray, w: np.ndarray | None = None, scale: bool = True
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted least-squares similarity dst ~ s R src + t (Umeyama).

    src, dst: [..., N, 3]; w: [..., N] (>= 0) or None -> (s [...], R [..., 3, 3], t [..., 3]).
    With scale=False s is 1 (a rigid fit)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    w = np.ones(src.shape[:-1]) if w is None else np.asarray(w, np.float64)
    wsum = np.maximum(w.sum(-1, keepdims=True), 1e-12)  # [..., 1]
    wn = (w / wsum)[..., None]  # [..., N, 1]
    mu_s = (wn * src).sum(-2)  # [..., 3]
    mu_d = (wn * dst).sum(-2)
    xs = src - mu_s[..., None, :]
    xd = dst - mu_d[..., None, :]
    cov = np.einsum("...ni,...nj->...ij", wn * xd, xs)  # [..., 3, 3]
    U, S, Vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(U @ Vt))
    D = np.ones(S.shape)
    D[..., 2] = d
    R = U @ (D[..., :, None] * Vt)
    if scale:
        var_s = (wn[..., 0] * (xs ** 2).sum(-1)).sum(-1)  # [...]
        s = (S * D).sum(-1) / np.maximum(var_s, 1e-18)
    else:
        s = np.ones(src.shape[:-2])
    t = mu_d - s[..., None] * np.einsum("...ij,...j->...i", R, mu_s)
    return s, R, t


def robust_similarity(src: np.ndarray, dst: np.ndarray, w: np.ndarray | None = None, scale: bool = True,
                      iters: int = 10, c: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Similarity fit with Cauchy re-weighting (iteratively reweighted least squares), so a few points
    that moved (an open mouth, a wrong detection) do not tilt the pose.

    c: residual scale of the Cauchy weights, in dst units; default 2.5 x the median residual of each set,
    re-estimated every iteration (a scale taken once from the first, outlier-tilted fit would grow with
    the outliers). Returns (s, R, t, final weights [..., N])."""
    w0 = np.ones(np.asarray(src).shape[:-1]) if w is None else np.asarray(w, np.float64)

    def weights(s, R, t):
        r = np.linalg.norm(apply_similarity(s, R, t, src) - dst, axis=-1)  # [..., N]
        if c is not None:
            scale_c = np.full(r.shape[:-1], c)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a set with no weighted point
                scale_c = 2.5 * np.nanmedian(np.where(w0 > 0, r, np.nan), -1)
            scale_c = np.maximum(np.nan_to_num(scale_c, nan=1.0), 1e-9)
        return w0 / (1.0 + (r / scale_c[..., None]) ** 2)

    s, R, t = similarity(src, dst, w0, scale)
    for _ in range(iters):
        s, R, t = similarity(src, dst, weights(s, R, t), scale)
    return s, R, t, weights(s, R, t)


def apply_similarity(s: np.ndarray, R: np.ndarray, t: np.ndarray, points: np.ndarray) -> np.ndarray:
    """s [...], R [..., 3, 3], t [..., 3], points [..., N, 3] -> s R p + t [..., N, 3]."""
    return np.asarray(s)[..., None, None] * np.einsum("...ij,...nj->...ni", R, points) + np.asarray(t)[..., None, :]


def to_head_frame(points: np.ndarray, pose: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """World points [T, L, 3] -> the head frame [T, L, 3], removing each frame's fitted pose [T, 4, 4] and
    scale [T] (world = scale R x + t)."""
    R, t = np.asarray(pose, np.float64)[:, :3, :3], np.asarray(pose, np.float64)[:, :3, 3]
    return np.einsum("tji,tlj->tli", R, np.asarray(points, np.float64) - t[:, None]) / \
        np.asarray(scale, np.float64)[:, None, None]


def to_matrix(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """R [..., 3, 3], t [..., 3] -> [..., 4, 4]."""
    M = np.zeros(R.shape[:-2] + (4, 4))
    M[..., :3, :3] = R
    M[..., :3, 3] = t
    M[..., 3, 3] = 1.0
    return M


def rotation_angle_deg(Ra: np.ndarray, Rb: np.ndarray) -> np.ndarray:
    """Geodesic angle between rotations [..., 3, 3] -> [...] degrees."""
    rel = np.einsum("...ji,...jk->...ik", Ra, Rb)
    cos = np.clip((np.trace(rel, axis1=-2, axis2=-1) - 1.0) / 2.0, -1.0, 1.0)
    return np.degrees(np.arccos(cos))


def project_to_rotation(M: np.ndarray) -> np.ndarray:
    """The nearest rotation to M [..., 3, 3]."""
    U, _, Vt = np.linalg.svd(M)
    d = np.sign(np.linalg.det(U @ Vt))
    D = np.ones(M.shape[:-1])
    D[..., 2] = d
    return U @ (D[..., :, None] * Vt)


def pose_errors_deg(R_est: np.ndarray, R_true: np.ndarray) -> np.ndarray:
    """Per-frame rotation error [T] between estimated and true head rotations [T, 3, 3] after removing
    the one constant rotation between the two head frames (each method defines its own head axes).
    With the same head frame the constant is the identity and this is the plain angle."""
    offset = project_to_rotation(np.einsum("tji,tjk->ik", R_true, R_est))  # chordal mean of R_true^T R_est
    return rotation_angle_deg(R_true @ offset, R_est)


def axis_angle_to_matrix(aa: np.ndarray) -> np.ndarray:
    """Rodrigues: [..., 3] -> [..., 3, 3]."""
    aa = np.asarray(aa, np.float64)
    theta = np.linalg.norm(aa, axis=-1, keepdims=True)
    k = aa / np.maximum(theta, 1e-12)
    Kx = np.zeros(aa.shape[:-1] + (3, 3))
    Kx[..., 0, 1], Kx[..., 0, 2] = -k[..., 2], k[..., 1]
    Kx[..., 1, 0], Kx[..., 1, 2] = k[..., 2], -k[..., 0]
    Kx[..., 2, 0], Kx[..., 2, 1] = -k[..., 1], k[..., 0]
    th = theta[..., None]
    return np.eye(3) + np.sin(th) * Kx + (1 - np.cos(th)) * (Kx @ Kx)

