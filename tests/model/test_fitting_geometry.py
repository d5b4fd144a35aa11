"""The numpy geometry of the fitting (similarity fits, triangulation, landmark poses, the template)
against ground truth built here: known transforms, the posed template projected into the rig."""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from datasets.capture.rig import make_rig
from datasets.landmarks68 import IBUG68_MIRROR
from model.fitting.geometry import (
    apply_similarity,
    axis_angle_to_matrix,
    pose_errors_deg,
    robust_similarity,
    rotation_angle_deg,
    similarity,
)
from model.fitting.landmark_pose import reference_poses, reference_shape, template_poses
from model.fitting.template import IBUG68_TEMPLATE, build_template, head_size
from model.fitting.triangulate import dlt, reproject, triangulate

FRONTAL = 8  # the rig camera facing the head


def _random_rotations(rng, n, max_deg=180.0):
    axis = rng.normal(size=(n, 3))
    axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
    return axis_angle_to_matrix(axis * np.radians(rng.uniform(0, max_deg, (n, 1))))


def _random_similarity(rng, n):
    return rng.uniform(0.5, 2.0, n), _random_rotations(rng, n), rng.normal(size=(n, 3))


def _rig():
    cams = make_rig(560, 800, target=(0.0, 0.0, 0.03))
    return np.stack([c.K for c in cams]), np.stack([c.world_to_cam for c in cams])


def _posed_template(rng, T, scale=1.0, max_deg=15.0, max_shift=0.02):
    R = _random_rotations(rng, T, max_deg)
    t = rng.uniform(-max_shift, max_shift, (T, 3))
    return apply_similarity(np.full(T, scale), R, t, IBUG68_TEMPLATE[None]), R, t


# --- geometry.py -----------------------------------------------------------------------------------

def test_similarity_recovers_known_batched_transform():
    rng = np.random.default_rng(0)
    s, R, t = _random_similarity(rng, 5)
    src = rng.normal(size=(5, 30, 3))
    dst = apply_similarity(s, R, t, src)
    s_e, R_e, t_e = similarity(src, dst)
    np.testing.assert_allclose(s_e, s, rtol=1e-9)
    np.testing.assert_allclose(R_e, R, atol=1e-9)
    np.testing.assert_allclose(t_e, t, atol=1e-9)


def test_similarity_weights_ignore_zero_weight_points():
    rng = np.random.default_rng(1)
    s, R, t = _random_similarity(rng, 4)
    src = rng.normal(size=(4, 30, 3))
    dst = apply_similarity(s, R, t, src)
    dst[:, :10] += rng.normal(scale=5.0, size=(4, 10, 3))  # garbage where the weight is 0
    w = np.ones((4, 30))
    w[:, :10] = 0.0
    s_e, R_e, t_e = similarity(src, dst, w)
    np.testing.assert_allclose(s_e, s, rtol=1e-9)
    np.testing.assert_allclose(R_e, R, atol=1e-9)
    np.testing.assert_allclose(t_e, t, atol=1e-9)
    s_u, _, _ = similarity(src, dst)  # unweighted: the garbage matters
    assert np.abs(s_u / s - 1).max() > 0.05


def test_similarity_without_scale_is_the_best_rigid_fit():
    rng = np.random.default_rng(2)
    s, R, t = _random_similarity(rng, 3)
    src = rng.normal(size=(3, 25, 3))
    dst = apply_similarity(s, R, t, src) + rng.normal(scale=0.05, size=(3, 25, 3))
    s_e, R_e, t_e = similarity(src, dst, scale=False)
    np.testing.assert_array_equal(s_e, 1.0)
    # scale does not change the optimal rotation (Umeyama), and t = mean(dst) - R mean(src)
    _, R_s, _ = similarity(src, dst)
    np.testing.assert_allclose(R_e, R_s, atol=1e-9)
    np.testing.assert_allclose(t_e, dst.mean(1) - np.einsum("bij,bj->bi", R_e, src.mean(1)), atol=1e-9)
    # and nothing near it does better
    def cost(b, Rm, tv):
        return ((apply_similarity(1.0, Rm, tv, src[b]) - dst[b]) ** 2).sum()

    for b in range(3):
        best = cost(b, R_e[b], t_e[b])
        for _ in range(20):
            dR = axis_angle_to_matrix(rng.normal(scale=0.01, size=3))
            assert cost(b, dR @ R_e[b], t_e[b] + rng.normal(scale=0.01, size=3)) > best


def _displaced_sets(seed, displacement, n=6, N=50):
    """n random similarities of N unit-normal points, 20% of dst moved by displacement x s (random
    directions), the rest with 1e-3 noise -> s, R, t, src, dst, indices of the moved points."""
    rng = np.random.default_rng(seed)
    s, R, t = _random_similarity(rng, n)
    src = rng.normal(size=(n, N, 3))
    dst = apply_similarity(s, R, t, src) + rng.normal(scale=1e-3, size=(n, N, 3))
    moved = np.argsort(rng.random((n, N)), -1)[:, :N // 5, None]
    d = rng.normal(size=(n, N // 5, 3))
    d *= displacement * s[:, None, None] / np.linalg.norm(d, axis=-1, keepdims=True)
    np.put_along_axis(dst, moved, np.take_along_axis(dst, moved, 1) + d, 1)
    return s, R, t, src, dst, moved[..., 0]


def test_robust_similarity_beats_plain_fit_on_displaced_points():
    _, R, _, src, dst, _ = _displaced_sets(3, displacement=0.5)  # half the point spread
    _, R_p, _ = similarity(src, dst)
    _, R_r, _, _ = robust_similarity(src, dst)
    plain_deg, robust_deg = rotation_angle_deg(R_p, R), rotation_angle_deg(R_r, R)
    assert plain_deg.min() > 0.3
    assert robust_deg.max() < 0.5
    assert (robust_deg < 0.3 * plain_deg).all()


def test_robust_similarity_with_residual_scale_ignores_gross_outliers():
    s, R, t, src, dst, moved = _displaced_sets(3, displacement=10.0)
    _, R_p, _ = similarity(src, dst)
    s_r, R_r, t_r, w_r = robust_similarity(src, dst, c=0.05)
    plain_deg, robust_deg = rotation_angle_deg(R_p, R), rotation_angle_deg(R_r, R)
    assert plain_deg.min() > 5.0
    assert robust_deg.max() < 0.05
    np.testing.assert_allclose(s_r, s, rtol=1e-3)
    np.testing.assert_allclose(t_r, t, atol=2e-3)
    w_moved = np.take_along_axis(w_r, moved, 1)
    assert w_moved.max() < 1e-3 and np.sort(w_r, -1)[:, moved.shape[1]:].min() > 0.9


def test_robust_similarity_default_scale_ignores_gross_outliers():
    _, R, _, src, dst, _ = _displaced_sets(3, displacement=10.0)
    _, R_r, _, _ = robust_similarity(src, dst)
    robust_deg = rotation_angle_deg(R_r, R)
    assert robust_deg.max() < 0.1


def test_rotation_angle_deg_of_known_axis_angles():
    rng = np.random.default_rng(4)
    axis = rng.normal(size=(6, 3))
    axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
    deg = np.array([0.5, 10.0, 45.0, 90.0, 135.0, 179.0])
    Ra = _random_rotations(rng, 6)
    Rb = axis_angle_to_matrix(axis * np.radians(deg)[:, None]) @ Ra
    np.testing.assert_allclose(rotation_angle_deg(Ra, Rb), deg, atol=1e-5)
    np.testing.assert_allclose(rotation_angle_deg(Rb, Ra), deg, atol=1e-5)
    np.testing.assert_allclose(rotation_angle_deg(Ra, Ra), 0.0, atol=1e-5)


def test_pose_errors_deg_removes_constant_offset_only():
    rng = np.random.default_rng(5)
    R_true = _random_rotations(rng, 10, 30.0)
    C = _random_rotations(rng, 1, 40.0)[0]
    np.testing.assert_allclose(pose_errors_deg(R_true @ C, R_true), 0.0, atol=1e-5)
    # a per-frame error of 5 degrees (random axes) stays: the constant absorbs only its mean
    axis = rng.normal(size=(10, 3))
    axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
    noisy = R_true @ C @ axis_angle_to_matrix(axis * np.radians(5.0))
    err = pose_errors_deg(noisy, R_true)
    assert err.min() > 2.0 and err.mean() > 3.5


def test_axis_angle_to_matrix_is_a_rotation_matching_scipy():
    rng = np.random.default_rng(6)
    aa = rng.normal(size=(4, 5, 3))
    aa[0, 0] = 0.0
    M = axis_angle_to_matrix(aa)
    assert M.shape == (4, 5, 3, 3)
    np.testing.assert_allclose(M @ np.swapaxes(M, -1, -2), np.broadcast_to(np.eye(3), M.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(M), 1.0, atol=1e-12)
    np.testing.assert_allclose(M.reshape(-1, 3, 3), Rotation.from_rotvec(aa.reshape(-1, 3)).as_matrix(), atol=1e-12)


# --- triangulate.py --------------------------------------------------------------------------------

def _rig_observations(seed, T=4, noise_px=0.5):
    rng = np.random.default_rng(seed)
    K, E = _rig()
    points, _, _ = _posed_template(rng, T)
    uv, _ = reproject(points, K, E)
    return rng, K, E, points, uv + rng.normal(scale=noise_px, size=uv.shape)


def test_triangulate_recovers_points_within_1mm():
    _, K, E, points, uv = _rig_observations(10)
    tri = triangulate(uv, np.ones(uv.shape[:-1]), K, E)
    err = np.linalg.norm(tri.points - points, axis=-1)
    assert tri.valid.all() and (tri.n_views == 16).all() and not tri.outlier_views.any()
    assert err.max() < 1e-3


def test_triangulate_single_view_points_are_invalid():
    _, K, E, points, uv = _rig_observations(11)
    conf = np.ones(uv.shape[:-1])
    lone = [8, 30, 57]
    conf[:, 1:, lone] = 0.0  # only view 0 sees them
    tri = triangulate(uv, conf, K, E)
    assert np.isnan(tri.points[:, lone]).all()
    assert not tri.valid[:, lone].any()
    assert (tri.n_views[:, lone] == 1).all()
    others = np.setdiff1d(np.arange(68), lone)
    assert tri.valid[:, others].all()
    assert np.linalg.norm(tri.points[:, others] - points[:, others], axis=-1).max() < 1e-3


def test_triangulate_drops_a_view_with_wrong_landmarks():
    _, K, E, points, uv = _rig_observations(12)
    wrong = 5
    uv[:, wrong] = uv[:, wrong, ::-1] + 40.0
    tri = triangulate(uv, np.ones(uv.shape[:-1]), K, E)
    err = np.linalg.norm(tri.points - points, axis=-1)
    assert tri.outlier_views[:, wrong].all()
    assert tri.outlier_views.sum() == len(uv)  # no other view dropped
    assert (tri.n_views == 15).all()
    assert err.max() < 1.5e-3


def test_dlt_is_exact_on_exact_projections():
    rng = np.random.default_rng(13)
    K, E = _rig()
    points, _, _ = _posed_template(rng, 3)
    uv, _ = reproject(points, K, E)
    w = rng.uniform(0.2, 1.0, uv.shape[:-1])
    X = dlt(uv, w, K, E)
    assert np.abs(X - points).max() < 1e-6


def test_view_residual_is_nan_for_a_view_without_detections():
    _, K, E, _, uv = _rig_observations(14, T=2)
    conf = np.ones(uv.shape[:-1])
    conf[:, 3] = 0.0
    tri = triangulate(uv, conf, K, E)
    assert np.isnan(tri.view_residual[:, 3]).all()
    assert np.isnan(tri.residual[:, 3]).all()
    assert not tri.outlier_views[:, 3].any()
    others = np.delete(tri.view_residual, 3, axis=1)
    assert np.isfinite(others).all() and others.max() < 2.0


# --- landmark_pose.py ------------------------------------------------------------------------------

def test_reference_shape_and_poses_recover_rotation_and_scale():
    rng = np.random.default_rng(20)
    T, scale = 8, 1.05
    R = _random_rotations(rng, T, 25.0)
    t = rng.uniform(-0.03, 0.03, (T, 3))
    local = np.broadcast_to(IBUG68_TEMPLATE, (T, 68, 3)).copy()
    mouth = slice(48, 68)
    local[:, mouth] += rng.normal(scale=0.006, size=(T, 20, 3))  # expressions
    local[:, 57:68, 1] -= rng.uniform(0.0, 0.015, (T, 1))  # a jaw drop of up to 15 mm
    points = apply_similarity(np.full(T, scale), R, t, local) + rng.normal(scale=1e-3, size=(T, 68, 3))
    valid = np.ones((T, 68), bool)
    reference = reference_shape(points, valid, IBUG68_TEMPLATE)
    poses = reference_poses(points, valid, reference)
    rot_err = pose_errors_deg(poses.rotation, R)
    scale_err = np.abs(poses.scale / scale - 1)
    assert poses.ok.all()
    assert rot_err.max() < 0.5
    assert scale_err.max() < 0.02


def test_template_poses_one_camera():
    rng = np.random.default_rng(21)
    K, E = _rig()
    T = 5
    points, R, t = _posed_template(rng, T)
    uv, _ = reproject(points, K[FRONTAL:FRONTAL + 1], E[FRONTAL:FRONTAL + 1])
    uv = uv[:, 0] + rng.normal(scale=0.5, size=(T, 68, 2))
    conf = np.ones((T, 68))
    conf[-1] = 0.0  # no face in the last frame
    poses = template_poses(uv, conf, K[FRONTAL], E[FRONTAL], IBUG68_TEMPLATE)
    rot_err = rotation_angle_deg(poses.rotation[:-1], R[:-1])
    t_err = np.linalg.norm(poses.translation[:-1] - t[:-1], axis=-1)
    np.testing.assert_array_equal(poses.ok, [True] * (T - 1) + [False])
    np.testing.assert_array_equal(poses.scale, 1.0)
    assert rot_err.max() < 1.0
    assert t_err.max() < 5e-3


# --- template.py -----------------------------------------------------------------------------------

def test_build_template_reproduces_the_table():
    built = build_template()
    np.testing.assert_allclose(built, IBUG68_TEMPLATE, atol=1e-4)


def test_template_is_left_right_symmetric():
    mirrored = IBUG68_TEMPLATE[IBUG68_MIRROR] * np.array([-1.0, 1.0, 1.0])
    np.testing.assert_allclose(mirrored, IBUG68_TEMPLATE, atol=1e-4)


def test_template_head_size_is_an_adults():
    assert 0.2 < head_size(IBUG68_TEMPLATE) < 0.26
