"""The one-view fit (model/fitting/monocular.py) on faces made here: the template with an expression,
turned and placed in front of a camera, seen as mediapipe sees a face (2D points and a relative depth in
pixels); and its temporal filter against steady motion, noise and a wrong frame."""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from model.fitting.geometry import pose_errors_deg, rotation_angle_deg
from model.fitting.monocular import _weighted_smooth, fit_monocular, rotation_outliers, smooth_rotations
from model.fitting.template import IBUG68_TEMPLATE

HEAD_TO_CAM = np.diag([1.0, -1.0, -1.0])  # a face looking at the camera


def _scene(T: int = 30, noise_px: float = 0.0, seed: int = 0):
    """T frames of the template turning (yaw and pitch) 0.6 m in front of a 1000 px camera, its jaw
    opening and closing; returns (uv [T, 68, 2], mesh [T, 68, 3] pixels, K, R_cam [T], jaw [T], local)."""
    rng = np.random.default_rng(seed)
    t = np.arange(T)
    yaw, pitch = 25 * np.sin(t / 9), 10 * np.sin(t / 13)
    jaw = 0.5 + 0.5 * np.sin(t / 5)
    K = np.array([[1000.0, 0, 256], [0, 1000.0, 256], [0, 0, 1]])
    R = Rotation.from_euler("yx", np.stack([yaw, pitch], 1), degrees=True).as_matrix() @ HEAD_TO_CAM
    local = np.repeat(IBUG68_TEMPLATE[None], T, 0).copy()
    lower = np.r_[5:12, 55:60, 65:68]  # chin, lower lip: the jaw opens down
    local[:, lower, 1] -= 0.012 * jaw[:, None]
    cam = np.einsum("tij,tlj->tli", R, local) + np.array([0.02, -0.01, 0.6])
    uv = cam[..., :2] / cam[..., 2:] * 1000 + 256
    # mediapipe's depth: the points' depth relative to the face, in the pixels of the face's scale
    mesh = np.concatenate([uv, (cam[..., 2:] - cam[..., 2:].mean(1, keepdims=True)) * 1000 / 0.6], -1)
    uv = uv + rng.normal(0, noise_px, uv.shape)
    mesh = mesh + rng.normal(0, noise_px, mesh.shape)
    return uv, mesh, K, R, jaw, local


def test_pose_position_and_expression_from_the_mesh():
    uv, mesh, K, R_true, jaw, local = _scene()
    T = len(uv)
    fit = fit_monocular(uv, np.ones((T, 68)), mesh, np.ones(T, bool), K, np.eye(4), IBUG68_TEMPLATE)
    assert fit.ok.all()
    err = pose_errors_deg(fit.rotation, R_true)
    # the mesh is a weak-perspective shape: at 0.6 m the near half of a turned face looks larger, which
    # tilts the fit by up to a degree at 25 degrees of yaw (measured 1.06)
    assert err.max() < 0.5, err.max()
    world = fit.world_landmarks()
    proj = world[..., :2] / world[..., 2:] * 1000 + 256
    assert np.abs(proj - uv).max() < 2.0  # the 3D landmarks reproject onto the 2D ones
    opening = np.linalg.norm(fit.local[:, 57] - fit.local[:, 51], axis=-1)
    assert np.corrcoef(opening, jaw)[0, 1] > 0.99  # the expression stays in the landmarks


def test_frames_without_the_mesh_are_posed_from_2d_and_keep_their_expression():
    uv, mesh, K, R_true, jaw, _ = _scene()
    T = len(uv)
    has = np.ones(T, bool)
    has[::4] = False  # e.g. dlib's points: 2D only
    fit = fit_monocular(uv, np.ones((T, 68)), mesh, has, K, np.eye(4), IBUG68_TEMPLATE)
    assert pose_errors_deg(fit.rotation[~has], R_true[~has]).max() < 2.0
    world = fit.world_landmarks()
    proj = world[..., :2] / world[..., 2:] * 1000 + 256
    assert np.abs(proj[~has] - uv[~has]).max() < 1.0  # lifted onto the rays of the detections


def test_smoothing_removes_jitter_without_lagging_steady_motion():
    T = 90
    t = np.arange(T, dtype=float)
    steady = np.stack([2.0 * t, -0.5 * t + 3], 1)  # constant velocity
    np.testing.assert_allclose(_weighted_smooth(steady, np.ones(T), 3.0), steady, atol=1e-9)  # no lag, ends too
    noisy = steady + np.random.default_rng(1).normal(0, 1.0, steady.shape)
    smoothed = _weighted_smooth(noisy, np.ones(T), 3.0)
    assert np.abs(smoothed - steady).std() < 0.5 * np.abs(noisy - steady).std()
    w = np.ones(T)
    w[40:45] = 0.0  # frames not fitted get their neighbours' line
    filled = _weighted_smooth(np.where(w[:, None] > 0, steady, 999.0), w, 3.0)
    np.testing.assert_allclose(filled[40:45], steady[40:45], atol=1e-6)


def test_rotations_are_smoothed_and_a_wrong_frame_is_found():
    T = 60
    angles = np.linspace(0, 40, T)
    R = Rotation.from_euler("y", angles[:, None], degrees=True).as_matrix()
    jitter = Rotation.from_rotvec(np.random.default_rng(2).normal(0, np.radians(1.0), (T, 3))).as_matrix()
    noisy = jitter @ R
    smooth = smooth_rotations(noisy, np.ones(T), 3.0)
    step_noisy = rotation_angle_deg(noisy[1:], noisy[:-1])
    step_smooth = rotation_angle_deg(smooth[1:], smooth[:-1])
    assert np.percentile(step_smooth, 95) < 0.5 * np.percentile(step_noisy, 95)
    assert rotation_angle_deg(smooth, R).mean() < rotation_angle_deg(noisy, R).mean()
    wrong = R.copy()
    wrong[30] = Rotation.from_euler("x", 40, degrees=True).as_matrix() @ R[30]
    outliers = rotation_outliers(wrong, np.ones(T, bool))
    assert outliers[30] and outliers.sum() == 1
