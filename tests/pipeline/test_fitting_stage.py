"""The fitting stage on the synthetic capture (one subject, two sequences, 8 frames, 16 views): the
offline `triangulate` fit against the true head poses and 3D landmarks, a morphable model through
the stage, what the subject shares, resume, and the errors a user sees."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from datasets.store import Store
from datasets.synthetic import SynthConfig, load_ground_truth, write_synthetic_capture
from datasets.weights import MissingWeightsError
from model.fitting.geometry import pose_errors_deg, rotation_angle_deg
from model.fitting.landmark_pose import reference_poses, reference_shape
from model.fitting.template import IBUG68_TEMPLATE, head_size
from model.morphable.example_files import make_model_files
from pipeline.runner import RefusedError, plan_run, preprocess
from tests.helpers import ingest_config, run_config

CLIPS = ("001/EXP-1-jawopen", "001/EXP-2-smile+brow")


def _config(store: str, root: str, stages: list[str], **fitting):
    return run_config(store, root, stages, 4, "fitting", **fitting)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """(capture root, store with landmarks only, store fitted with triangulate)."""
    base = tmp_path_factory.mktemp("fitting")
    root = str(base / "capture")
    write_synthetic_capture(root, SynthConfig(participants=1, sequences=2, frames=8))
    landmarks_only = str(base / "landmarks.zarr")
    summary = preprocess(_config(landmarks_only, root, ["ingest", "landmarks"]))
    assert all(s.failed == 0 for s in summary.stages.values())
    store = str(base / "fitted.zarr")
    shutil.copytree(landmarks_only, store)
    summary = preprocess(_config(store, root, ["fitting"]))
    assert summary.stages["fitting"].done == 4 and summary.stages["fitting"].failed == 0
    return root, landmarks_only, store


def test_triangulate_recovers_head_pose_and_landmarks(fitted):
    root, _, path = fitted
    store = Store(path, mode="r")
    for clip in CLIPS:
        g = store.clip(clip)
        gt = load_ground_truth(root, *clip.split("/"))
        seen = (g["lmk2d"][..., 2].mean(-1) > 0.1).sum(1)
        frames = seen >= 3
        assert frames.all() and g["fit/ok"][:].all()
        R = g["fit/pose"][:, :3, :3].astype(np.float64)[frames]
        R_true = gt["world_from_head"][frames, :3, :3]
        relative = pose_errors_deg(R, R_true)  # up to the one rotation between the two head frames
        absolute = rotation_angle_deg(R, R_true)
        size = head_size(gt["landmarks68"][0])
        err = np.linalg.norm(g["fit/lmk3d"][:][frames] - gt["landmarks68"][frames], axis=-1) / size
        print(f"{clip}: pose error max {relative.max():.2f} mean {relative.mean():.2f} deg (head-frame offset "
              f"included: max {absolute.max():.2f}); landmarks: inner 51 mean {100 * err[:, 17:].mean():.2f}% "
              f"(worst frame {100 * err[:, 17:].mean(1).max():.2f}%), all 68 mean {100 * err.mean():.2f}% of head size")
        # the 2D detector's own bias limits these (mediapipe moves the nose 3 mm down and the face
        # contour 10 mm back per unit of jaw opening on these renders; from the true 3D landmarks the same
        # pose fit is within 0.5 degree, next test)
        assert relative.mean() < 1.5 and relative.max() < 2.5
        assert absolute.max() < 3.5
        # inner landmarks, every frame (the worst frame's figure moves with the crop: 1.99% to 2.20% for
        # squares shifted 20 px either way, so the bound leaves that spread)
        assert err[:, 17:].mean(1).max() < 0.023
        assert err.mean() < 0.03  # contour points included
        assert np.allclose(g["fit/scale"][:], 1.0, atol=0.1)


def test_pose_fit_from_true_landmarks_is_within_half_a_degree(fitted):
    root = fitted[0]
    for clip in CLIPS:
        gt = load_ground_truth(root, *clip.split("/"))
        points = gt["landmarks68"].astype(np.float64)
        valid = np.ones(points.shape[:2], bool)
        poses = reference_poses(points, valid, reference_shape(points, valid, IBUG68_TEMPLATE))
        assert pose_errors_deg(poses.rotation, gt["world_from_head"][:, :3, :3]).max() < 0.5


def test_subject_reference_is_shared_and_stored(fitted):
    store = Store(fitted[2], mode="r")
    refs = [store.clip(c)["fit/reference"][:] for c in CLIPS]
    assert np.array_equal(refs[0], refs[1]) and np.isfinite(refs[0]).all()
    g = store.clip(CLIPS[0])
    assert g["fit/pose"].shape == (8, 4, 4) and g["fit/residual"].shape == (8, 16)
    assert g["fit"].attrs["backend"] == "triangulate"


def test_redone_block_equals_the_first_run(fitted, tmp_path):
    path = str(tmp_path / "s.zarr")
    shutil.copytree(fitted[2], path)
    store = Store(path)
    before = {c: {n: store.clip(c)[n][:] for n in ("fit/pose", "fit/lmk3d", "fit/residual")} for c in CLIPS}
    store.clear_marker("fitting", CLIPS[1], 1)  # as if the task died after block 0
    store.clear_block(store.clip(CLIPS[1])["fit/pose"], 1)
    summary = preprocess(_config(path, fitted[0], ["fitting"]))
    assert summary.stages["fitting"].done == 1 and summary.stages["fitting"].already_done == 3
    for c in CLIPS:
        for name, value in before[c].items():
            assert np.array_equal(store.clip(c)[name][:], value, equal_nan=True), (c, name)


def test_fitting_waits_for_every_clip_of_the_subject(fitted, tmp_path):
    """Landmarks redone for one block of the second clip: the first clip's fit depends on it too and is
    redone whole."""
    path = str(tmp_path / "s.zarr")
    shutil.copytree(fitted[2], path)
    store = Store(path)
    store.clear_marker("landmarks", CLIPS[1], 0)
    plan = plan_run(_config(path, fitted[0], ["landmarks", "fitting"]))
    tasks = {t.task_id: t for t in plan.tasks}
    lmk_task = next(t for t in tasks if t.startswith("landmarks:"))
    fit_tasks = [t for t in tasks.values() if t.stage == "fitting"]
    assert {t.layout.key for t in fit_tasks} == set(CLIPS)
    for t in fit_tasks:
        assert t.blocks == (0, 1) and lmk_task in plan.deps[t.task_id]


def test_adding_a_clip_to_the_subject_is_refused_without_recompute(fitted, tmp_path):
    path = str(tmp_path / "s.zarr")
    shutil.copytree(fitted[1], path)
    first = _config(path, fitted[0], ["fitting"])
    first.source.include = ["EXP-1*"]
    assert preprocess(first).stages["fitting"].done == 2
    with pytest.raises(RefusedError, match="fitting"):
        preprocess(_config(path, fitted[0], ["fitting"]))
    again = _config(path, fitted[0], ["fitting"])
    again.runner.recompute = True
    assert preprocess(again).stages["fitting"].done == 4


def test_morphable_model_through_the_stage(fitted, tmp_path):
    """A BFM 2009 file (small, synthetic) fitted to the synthetic heads: identity shared by the subject,
    expression per frame, poses near the truth (the model is not these faces, so loosely)."""
    model_path, _, _ = make_model_files(str(tmp_path / "bfm"), "bfm2009")
    path = str(tmp_path / "s.zarr")
    shutil.copytree(fitted[1], path)
    cfg = _config(path, fitted[0], ["fitting"], backend="bfm2009", model_path=model_path, n_id=20, n_exp=10,
                  rigid_iters=150, full_iters=150)
    summary = preprocess(cfg)
    assert summary.stages["fitting"].done == 4 and summary.stages["fitting"].failed == 0
    store = Store(path, mode="r")
    ids = [store.clip(c)["fit/identity"][:] for c in CLIPS]
    assert ids[0].shape == (20,) and np.array_equal(ids[0], ids[1])
    for clip in CLIPS:
        g = store.clip(clip)
        gt = load_ground_truth(fitted[0], *clip.split("/"))
        assert g["fit/expression"].shape == (8, 10)
        assert np.ptp(g["fit/scale"][:]) == 0  # one scale per subject
        R = g["fit/pose"][:, :3, :3].astype(np.float64)
        assert pose_errors_deg(R, gt["world_from_head"][:, :3, :3]).max() < 5.0
        err = np.linalg.norm(g["fit/lmk3d"][:] - gt["landmarks68"], axis=-1) / head_size(gt["landmarks68"][0])
        assert err[:, 17:].mean() < 0.05
        assert g["fit"].attrs["model"]["kind"] == "bfm2009"
    # a resumed run redoes only the unfinished block; the finished blocks keep their expressions
    writable = Store(path)
    before = writable.clip(CLIPS[0])["fit/expression"][:]
    writable.clear_marker("fitting", CLIPS[0], 1)
    assert preprocess(cfg).stages["fitting"].done == 1
    after = writable.clip(CLIPS[0])["fit/expression"][:]
    assert np.array_equal(after[:4], before[:4]) and np.allclose(after, before, atol=1e-5)
    from pipeline.inspect_sheet import fit_mesh, fit_projections

    g = store.clip(CLIPS[0])
    fitted_2d, edges = fit_projections(g, 0, fit_mesh(g))
    assert fitted_2d.shape == (16, 68, 2) and edges.shape[0] == 16 and edges.shape[2:] == (2, 2)


def test_missing_model_file_fails_before_any_work(fitted, tmp_path, monkeypatch):
    monkeypatch.delenv("HEADFORGE_FLAME", raising=False)
    path = str(tmp_path / "s.zarr")
    shutil.copytree(fitted[1], path)
    cfg = _config(path, fitted[0], ["fitting"], backend="flame")
    with pytest.raises(MissingWeightsError, match="HEADFORGE_FLAME"):
        preprocess(cfg)
    assert Store(path, mode="r").markers("fitting", CLIPS[0]) == {}


def test_wrong_landmarks_in_one_view_go_to_the_ledger_and_do_not_move_the_fit(fitted, tmp_path):
    path = str(tmp_path / "s.zarr")
    shutil.copytree(fitted[1], path)
    store = Store(path)
    g = store.clip(CLIPS[0])
    lmk = g["lmk2d"][:]
    wrong = lmk.copy()
    wrong[:, 3, :, :2] = lmk[:, 3, ::-1, :2] + np.array([60.0, -40.0])  # another face, mirrored and shifted
    wrong[:, 3, :, 2] = 1.0
    g["lmk2d"][:] = wrong
    preprocess(_config(path, fitted[0], ["fitting"]))
    serial = g.attrs["views"][3]
    flagged = {i.frame for i in store.ledger("fitting", CLIPS[0]) if i.view == serial and "view dropped" in i.reason}
    assert flagged == set(g.attrs["frame_ids"])
    clean = Store(fitted[2], mode="r").clip(CLIPS[0])
    assert pose_errors_deg(g["fit/pose"][:, :3, :3].astype(np.float64),
                           clean["fit/pose"][:, :3, :3].astype(np.float64)).max() < 0.5
    # the landmarks stay as accurate as without the wrong view (one correct view fewer moves a few points)
    gt = load_ground_truth(fitted[0], *CLIPS[0].split("/"))
    err = np.linalg.norm(g["fit/lmk3d"][:] - gt["landmarks68"], axis=-1) / head_size(gt["landmarks68"][0])
    assert err[:, 17:].mean(1).max() < 0.023 and err.mean() < 0.03


def test_one_view_clip_follows_the_true_pose_and_expression(fitted, tmp_path):
    """The frontal camera's video as a monocular clip (the default camera with the rig's focal length):
    the fitted head rotation follows the true one seen from that camera, the 3D landmarks reproject onto
    the detections and their mouth opens with the true jaw. No smoothing here: this 8-frame capture turns
    the head by up to 33 degrees in 0.1 s (its 73 fps is nominal), far faster than any head moves."""
    root = fitted[0]
    gt = load_ground_truth(root, *CLIPS[0].split("/"))
    frontal = 8
    serial = str(gt["serials"][frontal])
    video = f"{root}/001/sequences/{CLIPS[0].split('/')[1]}/images/cam_{serial}.mp4"
    cfg = ingest_config(str(tmp_path / "mono.zarr"), video, dataset="video", block_frames=4)
    cfg.source.subject = "mono"
    cfg.source.focal = 2.38  # the rig camera's focal length in units of the longer image side (1905 / 800)
    cfg.stages = ["ingest", "landmarks", "fitting"]
    for name, value in (("smooth_pose", 0.0), ("smooth_expression", 0.0)):
        setattr(cfg.stage_config("fitting"), name, value)
    summary = preprocess(cfg)
    assert summary.stages["fitting"].done == 2
    g = Store(cfg.store, mode="r").clip("mono/video")
    assert g["fit/ok"][:].all() and g["fit/residual"].shape == (8, 1)
    E = Store(fitted[2], mode="r").clip(CLIPS[0])["cameras/world_to_cam"][frontal].astype(np.float64)
    R_true_cam = E[:3, :3] @ gt["world_from_head"][:, :3, :3]  # head -> frontal camera
    err = pose_errors_deg(g["fit/pose"][:, :3, :3].astype(np.float64), R_true_cam)
    residual = np.nanmedian(g["fit/residual"][:])
    lmk3d = g["fit/lmk3d"][:].astype(np.float64)
    opening = np.linalg.norm(lmk3d[:, [61, 62, 63]] - lmk3d[:, [67, 66, 65]], axis=-1).mean(1)
    corr = np.corrcoef(opening, gt["expression"][:, 0])[0, 1]
    print(f"one view: pose error max {err.max():.2f} mean {err.mean():.2f} deg, residual median {residual:.1f} px, "
          f"3D mouth opening vs true jaw: correlation {corr:.3f}")
    # depth from one view is the face mesh's estimate (measured 2.9 degrees mean, 4.9 max; the rigid
    # template posed by PnP gave 3 mean, 5.6 max with a 4x larger residual and no expression)
    assert err.mean() < 4.0 and err.max() < 6.5
    assert residual < 3.0
    assert corr > 0.8  # (measured 0.87: the jaw value maps to the lip gap non-linearly)
