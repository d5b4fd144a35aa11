"""Bad frames for matting, landmarks and crops: each recorded, none stops the run."""

from __future__ import annotations

import cv2
import numpy as np

from datasets.capture.writer import NersembleV2Writer
from datasets.store import Store
from datasets.synthhead.face_model import portrait
from pipeline.runner import preprocess
from tests.helpers import ingest_config, tiny_rig


def _face_tile(name: str, size: int) -> np.ndarray:
    img = portrait(name)
    top = {"astronaut": (20, 120, 300), "grace_hopper": (80, 120, 330)}[name]  # a square around the face
    y0, x0, side = top
    return cv2.resize(img[y0:y0 + side, x0:x0 + side], (size, size), interpolation=cv2.INTER_AREA)


def test_black_two_face_no_face_frames_and_a_missing_plate(tmp_path):
    rig = tiny_rig(512, 512)[:3]
    root = str(tmp_path / "raw")
    wall = np.full((512, 512, 3), (150, 160, 170), np.uint8)
    one = wall.copy()
    one[96:416, 96:416] = _face_tile("astronaut", 320)
    two = wall.copy()
    two[160:352, 70:262] = _face_tile("astronaut", 192)  # nearer the centre than the other
    two[150:350, 300:500] = _face_tile("grace_hopper", 200)
    frames = [one, np.zeros_like(wall), two, wall]
    writer = NersembleV2Writer(root)
    writer.calibration("001", rig[0].K, {c.serial: c.world_to_cam for c in rig})
    for c in rig[:2]:  # the third camera has no background plate
        writer.background("001", c.serial, wall)
    for c in rig:
        writer.video("001", "EXP-1", c.serial, frames, crf=12)
    cfg = ingest_config(str(tmp_path / "s.zarr"), root, block_frames=2)
    cfg.stages = ["ingest", "matting", "landmarks", "crops"]
    summary = preprocess(cfg)
    assert all(s.done == s.blocks == 2 and s.failed == 0 for s in summary.stages.values())
    assert summary.exit_code(strict=False) == 0
    store = Store(cfg.store)
    ledger = store.ledger()
    by = lambda stage: [(i.frame, i.view, i.reason) for i in ledger if i.stage == stage]  # noqa: E731
    missing = rig[2].serial
    assert any(v == missing and "no background plate" in r for _, v, r in by("ingest"))
    assert any(v == missing and "matted with mediapipe" in r for _, v, r in by("matting"))
    lm = by("landmarks")
    assert sorted({(f, r) for f, _, r in lm}) == [(1, "no face detected"), (2, "2 faces detected; kept one"),
                                                 (3, "no face detected")]
    assert len(lm) == 9  # three bad frames x three views
    g = store.clip("001/EXP-1")
    faces, lmk, ok = g["faces"][...], g["lmk2d"][...], g["crop_ok"][...]
    assert (faces[0] == 1).all() and (faces[1] == 0).all() and (faces[2] == 2).all() and (faces[3] == 0).all()
    assert (lmk[1, :, :, 2] == 0).all() and (lmk[3, :, :, 2] == 0).all()
    assert (lmk[2, :, :, 0].mean(-1) < 262).all()  # the kept face is the one nearer the centre (left tile)
    assert ok[0].all() and ok[2].all() and not ok[1].any() and not ok[3].any()
    alpha = g["alpha"][...]
    assert alpha[0, 2].mean() > 30  # the view without a plate still got a matte (mediapipe)
    assert (g["rgb_ok"][...]).all()  # the black frame is still a frame
