"""The expression-synthesis stage on the synthetic capture (2 subjects x a jaw-open and a smile sequence,
5 frames, 16 views): the offline `warp` backend against the driving and source expressions measured
by re-detecting landmarks, the source's identity kept, sampling rules, determinism and resume."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from datasets.native_output import quiet_native_stderr
from datasets.store import Store
from datasets.synthetic import SynthConfig, load_ground_truth, write_synthetic_capture
from pipeline.backends.expression_warp import WarpExpression, ring_mask
from pipeline.backends.face_align import apply, face_transform, warp
from pipeline.runner import preprocess
from tests.helpers import run_config

CLIPS = ("001/EXP-1-jawopen", "001/EXP-2-smile+brow", "002/EXP-1-jawopen", "002/EXP-2-smile+brow")


def _config(store: str, root: str, stages: list[str], **synthesis):
    return run_config(store, root, stages, 3, "synthesis", **synthesis)


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory):
    """(capture root, store fitted but not synthesized, store synthesized with warp)."""
    base = tmp_path_factory.mktemp("synthesis")
    root = str(base / "capture")
    write_synthetic_capture(root, SynthConfig(participants=2, sequences=2, frames=5))
    fitted = str(base / "fitted.zarr")
    summary = preprocess(_config(fitted, root, ["ingest", "landmarks", "fitting"]))
    assert all(s.failed == 0 for s in summary.stages.values())
    store = str(base / "synth.zarr")
    shutil.copytree(fitted, store)
    summary = preprocess(_config(store, root, ["synthesis"]))
    assert summary.stages["synthesis"].done == summary.stages["synthesis"].blocks == 8
    return root, fitted, store


def _source_crop(store: Store, pool: list, source: np.ndarray):
    p, f, v = (int(x) for x in source)
    g = store.clip(pool[p][1])
    lmk = g["lmk2d"][f, v]
    M = face_transform(lmk, 256)
    return warp(g["rgb"][f, v], M, 256), apply(M, lmk[:, :2])


def _driving_crop(g, t: int):
    v = int(g["synth_view"][t])
    lmk = g["lmk2d"][t, v]
    return warp(g["rgb"][t, v], face_transform(lmk, 256), 256)


def _measures(points: np.ndarray) -> np.ndarray:
    """Mouth opening and smile of iBUG-68 points [68, 2], scale-free: inner-lip gap over mouth width,
    mouth width over eye distance, corner lift (lip centre height minus corner height) over eye distance."""
    iod = np.linalg.norm(points[36:42].mean(0) - points[42:48].mean(0))
    width = np.linalg.norm(points[54] - points[48])
    gap = np.linalg.norm(points[[61, 62, 63]] - points[[67, 66, 65]], axis=-1).mean()
    lift = (points[[51, 57]].mean(0)[1] - points[[48, 54]].mean(0)[1]) / iod
    return np.array([gap / width, width / iod, lift])


@pytest.fixture(scope="module")
def detector():
    from pipeline.backends.mediapipe_landmarks import MediapipeFaceLandmarks

    with quiet_native_stderr():
        d = MediapipeFaceLandmarks(tracking=False)
    yield d
    d.close()


def _detect(detector, image: np.ndarray) -> np.ndarray | None:
    padded = cv2.copyMakeBorder(image, 128, 128, 128, 128, cv2.BORDER_REPLICATE)  # room around the face
    with quiet_native_stderr():
        res = detector(padded)
    return None if res.landmarks68 is None else res.landmarks68[:, :2] - 128


def test_warp_carries_the_driving_expression(synthesized, detector):
    """Every strongly expressive driving frame (true jaw opening or smile >= 0.5) on every neutral
    frontal source frame of the other subject (true expression values <= 0.15), through the stage's
    synthesis path. An expression is measured as the change of a landmark measure from the person's own
    neutral face (mouth opening for the jaw, corner lift for the smile), on landmarks re-detected in the
    images: the result's change from its source is closer to the driving frame's change than to none
    (the source's own)."""
    from pipeline.backends.expression_geometry import neutral_shape
    from pipeline.backends.expression_warp import WarpExpression
    from pipeline.synthesis import ClipFacts, SynthesisConfig, SynthesisStage, _SourcePool

    root, _, path = synthesized
    store = Store(path, mode="r")
    stage = SynthesisStage(SynthesisConfig())
    facts = {k: ClipFacts.read(store.clip(k)) for k in CLIPS}
    truth = {k: load_ground_truth(root, *k.split("/"))["expression"] for k in CLIPS}

    def neutral_frames(subject: str) -> list[tuple[str, int, int]]:
        out = []
        for k in CLIPS:
            if k.startswith(subject):
                for f in np.flatnonzero(truth[k][:, :3].max(1) <= 0.15):
                    v = facts[k].frontal_view(f, [], 25.0, 0.1)
                    if v >= 0:
                        out.append((k, int(f), v))
        return out

    def measure(image: np.ndarray) -> np.ndarray:
        return _measures(_detect(detector, image))

    compared = []
    for clip in CLIPS:
        subject = clip.split("/")[0]
        driving = facts[clip]
        driving_neutral = neutral_shape(np.concatenate([facts[k].local[facts[k].ok] for k in CLIPS
                                                        if k.startswith(subject)]))
        own_neutral = np.median([measure(_driving_crop_at(facts[k], f, v)) for k, f, v in neutral_frames(subject)], 0)
        pool = [["", k] for k in CLIPS if not k.startswith(subject)]
        sources = _SourcePool(pool, store, stage.config)
        other = "002" if subject == "001" else "001"
        neutral_sources = [(next(p for p, (_, key) in enumerate(pool) if key == k), f, v)
                           for k, f, v in neutral_frames(other)]
        for t in range(len(truth[clip])):
            index = 0 if truth[clip][t, 0] >= 0.5 else 2 if truth[clip][t, 1] >= 0.5 else None
            v = driving.frontal_view(t, [], 25.0, 0.1)
            if index is None or v < 0:
                continue
            change_d = (measure(_driving_crop_at(driving, t, v)) - own_neutral)[index]
            jobs = [(0, 0, t, v, src) for src in neutral_sources]
            images = stage._synthesise(WarpExpression(), driving, driving_neutral, sources, jobs)
            for src, image in zip(neutral_sources, images):
                change_r = (measure(image) - measure(_source_crop(store, pool, np.array(src))[0]))[index]
                if abs(change_d) >= 0.05:
                    compared.append((clip, t, src, index, change_d, change_r))
    for clip, t, src, index, change_d, change_r in compared:
        print(f"{clip} t{t} source {src} {('mouth opening', '', 'corner lift')[index]} change from neutral: "
              f"driving {change_d:+.3f}, result {change_r:+.3f} (source 0)")
    jaw = [abs(r - d) < abs(r) for _, _, _, index, d, r in compared if index == 0]
    smile = [abs(r - d) < abs(r) for _, _, _, index, d, r in compared if index == 2]
    print(f"closer to the driving expression than to the source's: mouth opening {sum(jaw)}/{len(jaw)}, "
          f"smile {sum(smile)}/{len(smile)}")
    assert len(jaw) >= 8 and all(jaw)
    # the smile of subject 002 comes out of its fit weaker (0.04 in 3D against 0.07 seen frontally), so
    # its transfers carry about half of it (measured: 4 to 6 of 8 smile results more than halfway, by the
    # frames taken as its neutral face); no smile result goes the other way by more than the re-detection
    # noise (about 0.01; measured: the weakest result -0.009)
    assert len(smile) >= 4 and all(r > -0.02 for _, _, _, index, d, r in compared if index == 2)
    assert sum(smile) >= len(smile) // 2


def _driving_crop_at(facts, t: int, v: int):
    return warp(facts.group["rgb"][t, v], face_transform(facts.lmk2d[t, v], 256), 256)


def test_warp_keeps_the_source_outside_the_face(synthesized):
    """Bare backend: every pixel outside the face ring is the source's own; the stored images (JPEG)
    agree with the source there up to compression."""
    store = Store(synthesized[2], mode="r")
    g = store.clip(CLIPS[0])
    pool = g["synth"].attrs["pool"]
    src, src_pts = _source_crop(store, pool, g["synth_source"][2, 0])
    goal = src_pts.copy()
    goal[48:68] += np.array([0.0, 6.0]) * (np.arange(48, 68) >= 55)[:, None]  # drop the lower lip
    out = WarpExpression()(src, src_pts, goal)
    outside = ~ring_mask(src_pts, 256) & ~ring_mask(goal, 256)
    assert outside.mean() > 0.2 and np.array_equal(out[outside], src[outside])
    assert np.abs(out.astype(int) - src.astype(int))[~outside].max() > 30  # the face did change
    stored = g["synth"][2, 0].astype(int)
    p, f, v = g["synth_source"][2, 0]
    assert store.clip(pool[p][1]).attrs["clip"].split("/")[0] != "001"
    assert np.abs(stored - src.astype(int))[outside].mean() < 3.0


def test_sources_are_other_subjects_drawn_reproducibly(synthesized, tmp_path):
    root, fitted, path = synthesized
    store = Store(path, mode="r")
    for clip in CLIPS:
        g = store.clip(clip)
        pool = g["synth"].attrs["pool"]
        assert g["synth_ok"][:].all() and (g["synth_view"][:] >= 0).all()
        for p in np.unique(g["synth_source"][..., 0]):
            assert pool[p][1].split("/")[0] != clip.split("/")[0]
    again = str(tmp_path / "again.zarr")
    shutil.copytree(fitted, again)
    preprocess(_config(again, root, ["synthesis"]))
    other_seed = str(tmp_path / "seed1.zarr")
    shutil.copytree(fitted, other_seed)
    preprocess(_config(other_seed, root, ["synthesis"], seed=1))
    for clip in CLIPS:
        a, b, c = (Store(s, mode="r").clip(clip) for s in (path, again, other_seed))
        assert np.array_equal(a["synth_source"][:], b["synth_source"][:])
        assert np.array_equal(a["synth"][:], b["synth"][:])
    assert any(not np.array_equal(Store(path, mode="r").clip(c)["synth_source"][:],
                                  Store(other_seed, mode="r").clip(c)["synth_source"][:]) for c in CLIPS)


def test_redone_block_equals_the_first_run(synthesized, tmp_path):
    path = str(tmp_path / "s.zarr")
    shutil.copytree(synthesized[2], path)
    store = Store(path)
    before = {n: store.clip(CLIPS[2])[n][:] for n in ("synth", "synth_source", "synth_view", "synth_ok")}
    store.clear_marker("synthesis", CLIPS[2], 1)
    store.clear_block(store.clip(CLIPS[2])["synth"], 1)
    summary = preprocess(_config(path, synthesized[0], ["synthesis"]))
    assert summary.stages["synthesis"].done == 1
    for name, value in before.items():
        assert np.array_equal(store.clip(CLIPS[2])[name][:], value), name


def test_source_store_pool(synthesized, tmp_path):
    """Sources from another store (here a copy standing in for a VFHQ store): subjects of the same name are
    other people there, so every clip of it may serve."""
    pool_store = str(tmp_path / "pool.zarr")
    shutil.copytree(synthesized[1], pool_store)
    path = str(tmp_path / "s.zarr")
    shutil.copytree(synthesized[1], path)
    preprocess(_config(path, synthesized[0], ["synthesis"], source_store=pool_store, images=1))
    g = Store(path, mode="r").clip(CLIPS[0])
    pool = g["synth"].attrs["pool"]
    assert {url for url, _ in pool} == {pool_store} and len(pool) == 4
    assert g["synth"].shape[1] == 1 and g["synth_ok"][:].all()


def test_inspect_shows_driving_source_and_result(synthesized, tmp_path):
    from pipeline.inspect_sheet import contact_sheet

    store = Store(synthesized[2], mode="r")
    with_synth = contact_sheet(store, CLIPS[0], frames=2, views=4, cell=128)
    without = contact_sheet(Store(synthesized[1], mode="r"), CLIPS[0], frames=2, views=4, cell=128)
    assert with_synth.shape[0] > without.shape[0] and with_synth.shape[1] >= without.shape[1]


def test_liveportrait_backend_through_the_stage_with_a_standin(synthesized, tmp_path):
    """The liveportrait backend run by the stage against tests/liveportrait_standin.py (a STAND-IN with
    LivePortrait's wrapper API and tensor shapes, not LivePortrait): head crops in, batches of
    batch_size, results re-framed like the face crops and stored with their sources."""
    import sys

    from tests.liveportrait_standin import write_standin_checkout

    checkout = write_standin_checkout(str(tmp_path / "LivePortrait"))
    path = str(tmp_path / "s.zarr")
    shutil.copytree(synthesized[1], path)
    summary = preprocess(_config(path, synthesized[0], ["synthesis"], backend="liveportrait",
                                 liveportrait_dir=checkout, batch_size=4))
    assert summary.stages["synthesis"].done == 8 and summary.stages["synthesis"].failed == 0
    calls = sys.modules["src.live_portrait_wrapper"].CALLS
    assert calls and max(b for name, b in calls if name == "warp_decode") <= 4
    store = Store(path, mode="r")
    g = store.clip(CLIPS[0])
    assert g["synth"].attrs["backend"] == "liveportrait" and g["synth_ok"][:].all()
    # the stand-in returns the source image (plus a uniform colour shift): re-framed, the face crop of the
    # source up to the shift
    pool = g["synth"].attrs["pool"]
    src, _ = _source_crop(store, pool, g["synth_source"][1, 0])
    diff = g["synth"][1, 0].astype(float) - src.astype(float)
    centre = diff[64:192, 64:192].reshape(-1, 3)
    assert np.abs(centre - np.median(centre, 0)).mean() < 6.0


def test_liveportrait_without_a_checkout_fails_before_any_work(synthesized, tmp_path, monkeypatch):
    from datasets.weights import MissingWeightsError

    monkeypatch.delenv("LIVEPORTRAIT_DIR", raising=False)
    path = str(tmp_path / "s.zarr")
    shutil.copytree(synthesized[1], path)
    with pytest.raises(MissingWeightsError, match="LIVEPORTRAIT_DIR"):
        preprocess(_config(path, synthesized[0], ["synthesis"], backend="liveportrait"))
    assert Store(path, mode="r").markers("synthesis", CLIPS[0]) == {}


def test_frontal_views_from_a_camera_list(synthesized, tmp_path):
    """With a camera list the first listed camera that sees a face drives, whatever the head pose."""
    path = str(tmp_path / "s.zarr")
    shutil.copytree(synthesized[1], path)
    g = Store(path, mode="r").clip(CLIPS[0])
    serials = list(g.attrs["views"])
    preprocess(_config(path, synthesized[0], ["synthesis"], frontal_views=[serials[5], serials[8]], images=1))
    seen = g["lmk2d"][..., 2].mean(-1) >= 0.1  # [T, V]
    expected = np.where(seen[:, 5], 5, np.where(seen[:, 8], 8, -1))
    assert np.array_equal(g["synth_view"][:], expected)


def test_a_one_participant_capture_runs_every_stage_but_synthesis(tmp_path):
    """One person and no pool: the default stages run, synthesis is skipped (ledger: why, and how to add a
    pool), the run exits 0; with --strict the skip counts as a failure."""
    root = str(tmp_path / "capture")
    write_synthetic_capture(root, SynthConfig(participants=1, sequences=1, frames=4))
    stages = ["ingest", "matting", "landmarks", "fitting", "crops", "synthesis"]
    cfg = run_config(str(tmp_path / "one.zarr"), root, stages, 4)
    summary = preprocess(cfg)
    assert summary.exit_code(strict=False) == 0 and summary.exit_code(strict=True) == 2
    s = summary.stages["synthesis"]
    assert s.skipped == s.blocks == 1 and s.done == 0
    assert all(summary.stages[name].done == 1 for name in stages[:-1])
    store = Store(cfg.store, mode="r")
    (item,) = store.ledger("synthesis")
    assert "skipped" in item.reason and "--synth-source" in item.reason
