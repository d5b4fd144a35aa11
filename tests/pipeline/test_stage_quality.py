"""Matting, landmarks and crops on the synthetic capture, against its ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from datasets.cameras import SquareCrop, crop_resize_image, project
from datasets.non_face import non_face_image
from datasets.store import Store
from datasets.synthetic import load_ground_truth
from pipeline.backends.face_align import apply
from pipeline.inspect_sheet import write_sheets
from pipeline.runner import preprocess
from tests.helpers import ingest_config

CLIPS = ("001/EXP-1-jawopen", "002/EXP-1-jawopen")


@pytest.fixture(scope="module")
def processed(tmp_path_factory, synthetic_capture):
    base = tmp_path_factory.mktemp("stages")
    stores = {}
    for name, matting in (("plate", "auto"), ("mediapipe", "mediapipe")):
        cfg = ingest_config(str(base / f"{name}.zarr"), synthetic_capture, block_frames=3)
        cfg.stages = ["ingest", "matting", "landmarks", "crops"] if name == "plate" else ["ingest", "matting"]
        cfg.stage_config("matting").backend = matting
        summary = preprocess(cfg)
        assert all(s.failed == 0 and s.done == s.blocks for s in summary.stages.values())
        stores[name] = Store(cfg.store, mode="r")
    return stores


def _angle(world_from_head: np.ndarray, E: np.ndarray) -> float:
    cam = -E[:3, :3].T @ E[:3, 3]
    to = cam - world_from_head[:3, 3]
    return float(np.degrees(np.arccos(np.clip(world_from_head[:3, 2] @ to / np.linalg.norm(to), -1, 1))))


def _matte_ious(store: Store, capture: str) -> np.ndarray:
    ious = []
    for clip in CLIPS:
        gt = load_ground_truth(capture, *clip.split("/"))
        g = store.clip(clip)
        alpha = g["alpha"][...] > 127
        crops = g["framing/crop"][...]  # the square the framing stage chose for each frame and view
        for t in range(alpha.shape[0]):
            for v in range(16):
                crop = SquareCrop(*(int(x) for x in crops[t, v]))
                truth = crop_resize_image(gt["masks"][t, v].astype(np.float32), crop, 512) > 0.5
                ious.append((alpha[t, v] & truth).sum() / (alpha[t, v] | truth).sum())
    return np.array(ious)


def test_plate_matting_matches_the_true_masks(processed, synthetic_capture):
    ious = _matte_ious(processed["plate"], synthetic_capture)
    print(f"plate matting IoU: mean {ious.mean():.4f}, min {ious.min():.4f} over {len(ious)} views")
    assert ious.mean() >= 0.95 and np.median(ious) >= 0.95


def test_mediapipe_matting_matches_the_true_masks(processed, synthetic_capture):
    ious = _matte_ious(processed["mediapipe"], synthetic_capture)
    print(f"mediapipe matting IoU: mean {ious.mean():.4f}, min {ious.min():.4f} over {len(ious)} views")
    assert ious.mean() >= 0.85 and np.median(ious) >= 0.85


def _truth_2d(store: Store, capture: str, clip: str):
    g = store.clip(clip)
    gt = load_ground_truth(capture, *clip.split("/"))
    K, E = g["cameras/K"][...], g["cameras/world_to_cam"][...]
    for t in range(g["rgb"].shape[0]):
        for v in range(16):
            yield t, v, project(gt["landmarks68"][t], K[v], E[v]), _angle(gt["world_from_head"][t], E[v])


def test_mediapipe_landmarks_are_within_5_percent_of_the_eye_distance(processed, synthetic_capture):
    errors = []
    for clip in CLIPS:
        lmk = processed["plate"].clip(clip)["lmk2d"][...]
        for t, v, uv, angle in _truth_2d(processed["plate"], synthetic_capture, clip):
            if angle <= 30:
                assert lmk[t, v, :, 2].min() > 0, "a face within 30 degrees of frontal was not found"
                iod = np.linalg.norm(uv[36:42].mean(0) - uv[42:48].mean(0))
                errors.append(np.linalg.norm(lmk[t, v, :, :2] - uv, axis=1) / iod)
    errors = np.array(errors)
    print(f"landmark error / IOD on {len(errors)} views within 30 deg: median {np.median(errors):.4f}")
    assert len(errors) >= 20 and np.median(errors) <= 0.05


def test_face_crops_contain_the_whole_face_and_masks_cover_it(processed, synthetic_capture):
    checked = 0
    for clip in CLIPS:
        g = processed["plate"].clip(clip)
        transforms, ok, masks = g["crop_transform"][...], g["crop_ok"][...], g["face_mask"][...]
        for t, v, uv, angle in _truth_2d(processed["plate"], synthetic_capture, clip):
            if angle > 30:  # beyond, mediapipe's landmarks (and so the crops) can be far off
                continue
            assert ok[t, v]
            q = apply(transforms[t, v].astype(np.float64), uv)
            assert (q >= 0).all() and (q <= 255).all(), (clip, t, v)
            inner = np.round(uv[[30, 36, 45, 48, 54, 51, 57]]).astype(int)  # nose, eye and mouth corners, lips
            assert (masks[t, v][inner[:, 1], inner[:, 0]] == 255).all()
            checked += 1
    assert checked >= 20
    g = processed["plate"].clip(CLIPS[0])
    nonface = non_face_image(g["rgb"][0], g["face_mask"][0])
    assert (nonface[g["face_mask"][0] == 255] == 0).all()


def test_inspect_writes_a_contact_sheet_per_clip(processed, tmp_path):
    import cv2

    paths = write_sheets(processed["plate"], str(tmp_path), frames=2, views=4, cell=96)
    assert len(paths) == 2
    sheet = cv2.imread(paths[0])
    assert sheet.shape == (24 + 2 * (96 + 48), 4 * 96, 3)
