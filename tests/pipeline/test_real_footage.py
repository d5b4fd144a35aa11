"""The monocular path on real footage: the clips of ../shared/realdata and harder variants made from
them (the person off-centre, a hand over the mouth, a small video, a cut from a cartoon to the face).
Checked against what mediapipe finds on the raw frames: the stored square holds the whole face, the
landmarks are found wherever a face can be seen, the pose is smooth, the 3D landmarks carry the
expression, the synthesis carries real expressions, frames without a face are in the ledger."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from datasets.cameras import SquareCrop, crop_resize_image, crop_resize_intrinsics, padding_mask, source_to_stored
from datasets.capture import variants
from datasets.raw.monocular import default_camera
from datasets.raw.sources import VideoSource, iter_frames
from datasets.store import Store
from model.fitting.geometry import rotation_angle_deg
from pipeline.config import PreprocessConfig
from pipeline.runner import preprocess
from tests.realdata import CUT, FRONTAL, needs_realdata, raw_landmarks, write_variants

pytestmark = needs_realdata
REPO = str(Path(__file__).resolve().parents[2])
CLIPS = ("right", "occluded", "small", "phone", "frontal_man", "cartoon_then_face")


def _config(store: str, root: str, stages: list[str], **framing) -> PreprocessConfig:
    cfg = PreprocessConfig(store=store, stages=stages)
    cfg.source.dataset, cfg.source.root = "video", root
    cfg.runner.workers = 2
    for k, v in framing.items():
        setattr(cfg.stage_config("framing"), k, v)
    return cfg


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """(variant paths, raw frames and raw mediapipe landmarks per clip, the preprocessed store)."""
    base = tmp_path_factory.mktemp("real")
    paths = write_variants(str(base / "clips"))
    raw = {}
    for name, path in paths.items():
        frames, _ = variants.read_video(path)
        raw[name] = (frames, raw_landmarks(frames))
    store = str(base / "real.zarr")
    summary = preprocess(_config(store, str(base / "clips"), ["ingest", "landmarks", "fitting", "crops", "synthesis"]))
    assert summary.exit_code(strict=False) == 0 and not summary.task_errors
    return paths, raw, Store(store, mode="r")


def _group(real, name):
    return real[2].clip(f"{name}/video")


def test_the_whole_face_is_inside_the_stored_frames(real):
    """Every landmark mediapipe finds on a raw frame, mapped through the stored square, lies inside the
    stored image, for each clip (the issue's case: the person right of centre, where the centred square
    of the old default cut the face)."""
    _, raw, _ = real
    for name in CLIPS:
        g = _group(real, name)
        R = g["rgb"].shape[2]
        crops = g["framing/crop"][:, 0]
        inside = []
        for t, lm in enumerate(raw[name][1]):
            if lm is not None:
                pts = source_to_stored(lm[:, :2], SquareCrop(*(int(x) for x in crops[t])), R)
                inside.append(((pts >= 0) & (pts <= R - 1)).all())
        assert inside and all(inside), (name, sum(inside), len(inside))
        # and not lost in a huge frame: the face fills a good part of the square
        size = crops[0, 2]
        face = np.ptp(next(lm for lm in raw[name][1] if lm is not None)[:, :2], 0).max()
        assert 0.25 < face / size < 0.7, (name, face / size)


def test_landmarks_wherever_mediapipe_sees_a_face_in_the_raw_frame(real):
    _, raw, _ = real
    for name in CLIPS:
        g = _group(real, name)
        lmk = g["lmk2d"][:, 0]
        have = lmk[..., 2].mean(-1) > 0.1
        truth = np.array([lm is not None for lm in raw[name][1]])
        coverage = (have & truth).sum() / truth.sum()
        print(f"{name}: landmarks on {(have & truth).sum()}/{truth.sum()} frames with a face in the raw frame; "
              f"on {(have & ~truth).sum()} others; sources {np.bincount(g['lmk_source'][:, 0], minlength=4)}")
        assert coverage >= 0.98, name
        R = g["rgb"].shape[2]
        seen = lmk[..., 2] > 0
        assert ((lmk[..., :2][seen] >= 0) & (lmk[..., :2][seen] <= R - 1)).all()  # nothing outside the image


def test_a_cut_to_frames_without_a_face_puts_those_in_the_ledger_and_processes_the_rest(real):
    _, raw, store = real
    g = _group(real, "cartoon_then_face")
    truth = np.array([lm is not None for lm in raw["cartoon_then_face"][1]])
    assert truth[96:168].all() and not truth[:96].any() and not truth[168]
    ids = g.attrs["frame_ids"]
    missing = {i.frame for i in store.ledger("landmarks", "cartoon_then_face/video")
               if "no face" in i.reason or "no landmarks" in i.reason}
    assert missing == {ids[t] for t in np.flatnonzero(~truth)}
    assert g["fit/ok"][:][truth].all() and not g["fit/ok"][:][~truth].any()
    assert g["crop_ok"][:, 0][truth].all()


def test_head_pose_is_smooth_and_the_3d_landmarks_carry_the_expression(real):
    for name in CLIPS:
        g = _group(real, name)
        ok = g["fit/ok"][:]
        R = g["fit/pose"][:, :3, :3].astype(np.float64)
        pairs = ok[1:] & ok[:-1]
        step = rotation_angle_deg(R[1:], R[:-1])[pairs]
        lmk3d, lmk2d = g["fit/lmk3d"][:][ok].astype(np.float64), g["lmk2d"][:, 0, :, :2][ok].astype(np.float64)

        def opening(p):  # inner-lip gap over eye distance
            return np.linalg.norm(p[:, [61, 62, 63]] - p[:, [67, 66, 65]], axis=-1).mean(1) / \
                np.linalg.norm(p[:, 36:42].mean(1) - p[:, 42:48].mean(1), axis=-1)

        corr = np.corrcoef(opening(lmk3d), opening(lmk2d))[0, 1]
        print(f"{name}: head rotation between frames p95 {np.percentile(step, 95):.2f} max {step.max():.2f} deg; "
              f"3D against 2D mouth opening: correlation {corr:.3f}")
        assert np.percentile(step, 95) <= 3.0, name
        if name != "occluded":  # (behind the hand the mouth is mediapipe's guess)
            assert corr >= 0.8, name


def test_synthesis_carries_real_expressions(real):
    """Every strongly expressive frame of one clip (a smile with teeth, a blink) drives sources the stage
    took from the least expressive frames of another clip; on landmarks re-detected in the images, the
    result's change from its source is closer to the driver's change from its neutral face than to none
    (the source's own), for the mouth opening, the smile (corner lift) and the eyes."""
    from pipeline.backends.expression_geometry import least_expressive, neutral_shape
    from pipeline.backends.expression_warp import WarpExpression
    from pipeline.backends.face_align import face_transform, warp
    from pipeline.backends.mediapipe_landmarks import MediapipeFaceLandmarks
    from pipeline.synthesis import ClipFacts, SynthesisConfig, SynthesisStage, _SourcePool

    store = real[2]
    stage = SynthesisStage(SynthesisConfig())
    driver = ClipFacts.read(store.clip("frontal_man/video"))
    sources = _SourcePool([["", "right/video"]], store, stage.config)
    sources.facts(0)
    neutral_sources = [(0, t, v) for t, v in sources._frontal[0]]
    detector = MediapipeFaceLandmarks(tracking=False)

    def measures(image):
        pts = detector(cv2.copyMakeBorder(image, 128, 128, 128, 128, cv2.BORDER_REPLICATE)).landmarks68
        assert pts is not None
        p = pts[:, :2]
        iod = np.linalg.norm(p[36:42].mean(0) - p[42:48].mean(0))
        gap = np.linalg.norm(p[[61, 62, 63]] - p[[67, 66, 65]], axis=-1).mean() / np.linalg.norm(p[54] - p[48])
        lift = (p[[51, 57]].mean(0)[1] - p[[48, 54]].mean(0)[1]) / iod
        eyes = np.linalg.norm(p[[37, 38, 43, 44]] - p[[41, 40, 47, 46]], axis=-1).mean() / iod
        return np.array([gap, lift, eyes])

    def crop(facts, t, v):
        return warp(facts.group["rgb"][t, v], face_transform(facts.lmk2d[t, v], 256), 256)

    # the sources the stage draws from are neutral: mouths closed
    source_facts = sources.facts(0)
    assert max(measures(crop(source_facts, t, v))[0] for _, t, v in neutral_sources) < 0.05
    ok = np.flatnonzero(driver.ok)
    driven = {t: measures(crop(driver, t, 0)) for t in ok}
    own = np.median([driven[t] for t in ok[least_expressive(driver.local[ok])]], 0)
    neutral = neutral_shape(driver.local[driver.ok])
    rng = np.random.default_rng(0)
    results = {0: [], 1: [], 2: []}
    for t in ok:
        change_d = driven[t] - own
        strong = [k for k, threshold in enumerate((0.1, 0.06, 0.04)) if abs(change_d[k]) >= threshold]
        if not strong:
            continue
        src = neutral_sources[rng.integers(len(neutral_sources))]
        image = stage._synthesise(WarpExpression(), driver, neutral, sources, [(0, 0, t, 0, src)])[0]
        change_r = measures(image) - measures(crop(source_facts, src[1], src[2]))
        for k in strong:
            results[k].append(abs(change_r[k] - change_d[k]) < abs(change_r[k]))
    detector.close()
    for k, name in enumerate(("mouth opening", "smile", "eyes")):
        print(f"{name}: closer to the driver's expression in {sum(results[k])}/{len(results[k])} pairs")
    assert len(results[0]) >= 20 and len(results[1]) >= 20 and len(results[2]) >= 2  # (one blink)
    assert all(sum(r) >= 0.8 * len(r) for r in results.values())


def test_monocular_sheet_is_a_readable_grid(real, tmp_path):
    from pipeline.inspect_sheet import write_sheets

    path = write_sheets(real[2], str(tmp_path), "right/video")[0]
    sheet = cv2.imread(path)
    h, w = sheet.shape[:2]
    assert w >= 1000 and h <= 1.5 * w  # a grid, not a 192-pixel strip


def test_a_phone_video_stored_sideways_is_read_upright(real):
    """A portrait phone video is stored sideways with a display rotation: the reader reports its shown
    size (portrait), the stored frames are upright (the face found on every frame, eyes above the mouth)."""
    g = _group(real, "phone")
    assert g.attrs["source_sizes"] == [[270, 360]]
    lmk = g["lmk2d"][:, 0]
    assert (lmk[..., 2].mean(-1) > 0.1).all()
    assert (lmk[:, 36:48, 1].mean(1) < lmk[:, 48:68, 1].mean(1)).all()


def test_video_with_a_variable_frame_rate_decodes_the_same_from_the_middle():
    """The .mov mixes 24 and 30 fps: timestamps do not number its frames, so decoding from frame 100
    must count from the start, not seek (a seek landed a frame early, the store showed the wrong frame)."""
    source = VideoSource(str(CUT))
    everything = [img for _, img in iter_frames(source, list(range(169)))]
    middle = [img for _, img in iter_frames(source, list(range(100, 112)))]
    for a, b in zip(everything[100:112], middle):
        np.testing.assert_array_equal(a, b)


def test_framing_that_follows_the_head_stores_each_frame_with_its_own_camera(real, tmp_path):
    paths = real[0]
    cfg = _config(str(tmp_path / "follow.zarr"), paths["right"], ["ingest"], follow=True)
    cfg.runner.workers = 0
    preprocess(cfg)
    g = Store(cfg.store, mode="r").clip("right/video")
    crops = g["framing/crop"][:, 0]
    assert len({tuple(c) for c in crops}) > 3  # the square moves with the head ...
    centres = crops[:, :2] + crops[:, 2:] / 2
    assert np.abs(np.diff(centres, axis=0)).max() <= 4  # ... smoothly
    frames, _ = variants.read_video(paths["right"])
    K_source, _ = default_camera(640, 360)
    R = g["rgb"].shape[2]
    for t in (0, 35, 71):
        crop = SquareCrop(*(int(x) for x in crops[t]))
        np.testing.assert_allclose(g["cameras/K_frames"][t, 0], crop_resize_intrinsics(K_source, crop, R), rtol=1e-5)
        diff = np.abs(g["rgb"][t, 0].astype(int) - crop_resize_image(frames[t], crop, R).astype(int))
        assert diff.mean() < 2.0  # the stored frame is that square of the source (JPEG apart)


def test_one_video_runs_the_default_stages_and_skips_synthesis(tmp_path):
    """A single video (one person, no pool): every stage but synthesis is done, synthesis is reported
    as skipped with how to add a pool, exit 0; --strict makes the skip an error."""
    store = str(tmp_path / "me.zarr")
    stages = "ingest,matting,landmarks,fitting,crops,synthesis"
    run = subprocess.run([sys.executable, "cli.py", "preprocess", "video", "--root", str(FRONTAL), "--store", store,
                          "--stages", stages, "--workers", "2"], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "--synth-source" in run.stderr
    s = Store(store, mode="r")
    g = s.clip("frontal_man/video")
    for stage in ("framing", "ingest", "matting", "landmarks", "fitting", "crops"):
        assert len(s.markers(stage, "frontal_man/video")) == 9, stage
    assert s.markers("synthesis", "frontal_man/video") == {}
    assert any("skipped" in i.reason for i in s.ledger("synthesis"))
    assert g["alpha"][0, 0].max() == 255 and g["fit/ok"][:].all()
    # the square reaches past the top and bottom of the 640x360 frame: that padding is black, alpha 0
    crop = SquareCrop(*(int(x) for x in g["framing/crop"][0, 0]))
    padding = padding_mask(crop, 640, 360, g["rgb"].shape[2])
    assert padding.mean() > 0.05
    assert (g["alpha"][:, 0][:, padding] == 0).all()
    assert g["rgb"][:, 0][:, padding].mean() < 2.0  # black (JPEG rings a little at the frame's edge)
    strict = subprocess.run([sys.executable, "cli.py", "preprocess", "video", "--root", str(FRONTAL), "--store", store,
                             "--stages", stages, "--workers", "0", "--strict"], cwd=REPO, capture_output=True,
                            text=True)
    assert strict.returncode == 2


def test_a_real_clip_packaged_as_vfhq_keeps_its_source_frame_ids_and_fps(tmp_path):
    """The real clip as VFHQ distributes clips (a Clip+... frame folder, meta info in VFHQ_meta_info/ beside
    the split): the stored frame ids are the source video's, the fps is the meta file's, and the stages
    find the face on every frame."""
    frames, _ = variants.read_video(str(FRONTAL))
    name = "Clip+fRnT4l_M4n+P0+C0+F1500-1525"
    split = tmp_path / "VFHQ" / "VFHQ-Test"
    (split / name).mkdir(parents=True)
    for i, frame in enumerate(frames[:24]):
        cv2.imwrite(str(split / name / f"{i + 1:08d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    meta = tmp_path / "VFHQ" / "VFHQ_meta_info" / "VFHQ-Test"
    meta.mkdir(parents=True)
    rows = "\n".join(f"{1501 + i:08d} 00000000 200 50 240 240 1 2 3 4 5 6 7 8 9 10" for i in range(24))
    (meta / f"{name}.txt").write_text(f"Video: fRnT4l_M4n\nH: 360\nW: 640\nFPS: 29.97\n\n"
                                      f"FRAME INDEX X0 Y0 W H [Landmarks (5 Points)]\n\n{rows}\nCROP: 0 0 640 360\n")
    store = str(tmp_path / "vfhq.zarr")
    cfg = PreprocessConfig(store=store, stages=["ingest", "landmarks", "fitting"])
    cfg.source.dataset, cfg.source.root = "vfhq", str(tmp_path / "VFHQ")
    cfg.runner.workers = 0
    summary = preprocess(cfg)
    assert summary.exit_code(strict=True) == 0
    g = Store(store, mode="r").clip("fRnT4l_M4n_P0/C0_F1500-1525")
    assert g.attrs["frame_ids"] == list(range(1501, 1525)) and g.attrs["fps"] == pytest.approx(29.97)
    assert g.attrs["raw"]["meta"]["crop"] == [0, 0, 640, 360] and g.attrs["raw"]["meta"]["split"] == "VFHQ-Test"
    assert (g["lmk2d"][..., 2].mean(-1) > 0.5).all() and g["fit/ok"][:].all()
