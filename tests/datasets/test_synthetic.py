"""The embedded default data: synthetic heads from real portraits, against their own ground truth."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest
import torch

from datasets.cameras import project
from datasets.native_output import quiet_native_stderr
from datasets.raw import Selection, read_raw
from datasets.synthetic import SynthConfig, load_ground_truth, write_synthetic_capture
from datasets.synthhead.expression import EYES, LOWER_LIP, UPPER_LIP, Expression, deform
from datasets.synthhead.face_model import face_mesh_triangles, fit_face_model, portrait
from datasets.synthhead.head import Head, IdentitySpec
from model.render.mesh import interpolate, rasterize
from tests.helpers import decode_all


@pytest.fixture(scope="module")
def face():
    return fit_face_model(portrait("astronaut"))


@pytest.fixture(scope="module")
def capture(synthetic_capture):
    return synthetic_capture


def test_face_model_is_a_metric_frontal_surface(face):
    assert face_mesh_triangles().shape == (852, 3)
    v = face.verts
    assert 0.14 < np.linalg.norm(v[454] - v[234]) < 0.15  # ear to ear, metres
    assert v[1, 2] > v[234, 2] + 0.05  # the nose tip is in front
    assert v[10, 1] > v[1, 1] > v[152, 1]  # forehead above nose above chin
    a, b, c = (v[face.faces[:, i]] for i in range(3))
    assert (np.cross(b - a, c - a)[:, 2] > 0).all()  # every triangle faces the front


def test_expressions_move_their_regions(face):
    v = face.verts
    jaw = deform(v, Expression(jaw_open=1.0))
    assert (jaw[LOWER_LIP, 1] - v[LOWER_LIP, 1]).max() < -0.01  # the lower lip drops by > 1 cm
    np.testing.assert_allclose(jaw[UPPER_LIP], v[UPPER_LIP])
    np.testing.assert_allclose(jaw[[33, 263, 1]], v[[33, 263, 1]])  # eyes and nose stay
    smile = deform(v, Expression(smile=1.0))
    assert smile[61, 1] > v[61, 1] + 0.004 and smile[291, 1] > v[291, 1] + 0.004
    assert smile[61, 0] < v[61, 0] and smile[291, 0] > v[291, 0]  # corners move outwards
    blink = deform(v, Expression(blink=1.0))
    for upper, lower, _ in EYES:
        before = v[upper[4], 1] - v[lower[4], 1]
        after = blink[upper[4], 1] - blink[lower[4], 1]
        assert after < 0.15 * before
    brow = deform(v, Expression(brow=1.0))
    assert brow[105, 1] > v[105, 1] + 0.005 and abs(brow[159, 1] - v[159, 1]) < 0.002


def test_capture_is_read_as_nersemble_v2(capture):
    plan = read_raw("nersemble", capture, Selection())
    assert not plan.issues
    assert [c.key for c in plan.clips] == ["001/EXP-1-jawopen", "002/EXP-1-jawopen"]
    clip = plan.clips[0]
    assert len(clip.views) == 16 and clip.frame_ids == (0, 1, 2) and all(v.background for v in clip.views)
    assert (clip.views[0].width, clip.views[0].height) == (560, 800)


def _calibration(root: str, participant: str):
    with open(os.path.join(root, participant, "calibration", "camera_params.json")) as f:
        data = json.load(f)
    serials = list(data["world_2_cam"])
    return serials, np.array(data["intrinsics"]), np.array([data["world_2_cam"][s] for s in serials])


def _angle_to_camera(world_from_head: np.ndarray, E: np.ndarray) -> float:
    cam_center = -E[:3, :3].T @ E[:3, 3]
    to_cam = cam_center - world_from_head[:3, 3]
    return float(np.degrees(np.arccos(np.clip(world_from_head[:3, 2] @ to_cam / np.linalg.norm(to_cam), -1, 1))))


def test_mediapipe_finds_one_face_in_views_near_frontal(capture):
    import mediapipe as mp

    counts = []
    with quiet_native_stderr(), mp.solutions.face_detection.FaceDetection(model_selection=0) as detector:
        for p in ("001", "002"):
            serials, _, E = _calibration(capture, p)
            gt = load_ground_truth(capture, p, "EXP-1-jawopen")
            for v, serial in enumerate(serials):
                path = os.path.join(capture, p, "sequences", "EXP-1-jawopen", "images", f"cam_{serial}.mp4")
                for t, frame in enumerate(decode_all(path)):
                    if _angle_to_camera(gt["world_from_head"][t], E[v]) <= 40:
                        result = detector.process(frame)
                        counts.append(len(result.detections or []))
    counts = np.array(counts)
    assert len(counts) > 40
    assert (counts == 1).mean() >= 0.9, np.bincount(counts)


def test_ground_truth_landmarks_project_where_the_renderer_drew_them(capture):
    """GT 3D landmarks projected with the written calibration vs the pixel where the rendered surface
    shows that point (found by rendering world positions), for every landmark visible in a view."""
    errors = []
    for p in ("001", "002"):
        serials, K, E = _calibration(capture, p)
        with open(os.path.join(capture, "ground_truth", p, "identity.json")) as f:
            spec = IdentitySpec(**{k: tuple(v) if isinstance(v, list) else v
                                   for k, v in json.load(f)["identity"].items()})
        head = Head(spec)
        gt = load_ground_truth(capture, p, "EXP-1-jawopen")
        t = 2
        posed = head.pose(gt["world_from_head"][t].astype(np.float64), Expression(*gt["expression"][t]))
        np.testing.assert_allclose(head.landmarks68(posed), gt["landmarks68"][t], atol=1e-5)
        verts = torch.tensor(posed.verts, dtype=torch.float32)
        faces = torch.from_numpy(head.faces)
        rast = rasterize(verts, faces, torch.tensor(np.repeat(K[None], 16, 0)).float(), torch.tensor(E).float(),
                         800, 560)
        world = interpolate(verts, faces, rast).numpy()  # [16, H, W, 3] surface point at each pixel
        covered = rast.mask.numpy()
        for v in range(16):
            for lm, (u, w) in zip(gt["landmarks68"][t], project(gt["landmarks68"][t], K, E[v])):
                x0, y0 = int(round(u)) - 8, int(round(w)) - 8  # search a 17x17 window around it
                patch, seen = world[v, y0:y0 + 17, x0:x0 + 17], covered[v, y0:y0 + 17, x0:x0 + 17]
                d = np.where(seen, np.linalg.norm(patch - lm, axis=-1), np.inf)
                if d.min() < 0.0006:  # a pixel centre shows the landmark's surface point (within 0.6 mm)
                    y, x = np.unravel_index(d.argmin(), d.shape)
                    errors.append(np.hypot(x0 + x - u, y0 + y - w))
    errors = np.array(errors)
    assert len(errors) > 700
    assert errors.max() <= 2.0, errors.max()


def test_ground_truth_masks_agree_with_the_frames_and_plates(capture):
    """Outside the true mask a frame equals its camera's plate (up to compression); inside it differs."""
    from datasets.raw.sources import read_image

    serials, _, _ = _calibration(capture, "001")
    gt = load_ground_truth(capture, "001", "EXP-1-jawopen")
    for v in (0, 7, 15):
        plate = read_image(os.path.join(capture, "001", "sequences", "BACKGROUND", f"image_{serials[v]}.jpg"))
        frame = decode_all(os.path.join(capture, "001", "sequences", "EXP-1-jawopen", "images",
                                        f"cam_{serials[v]}.mp4"))[1]
        diff = np.abs(frame.astype(int) - plate.astype(int)).max(-1)
        mask = gt["masks"][1, v]
        ring = np.zeros_like(mask)  # skip the 2-pixel band around the edge (video and JPEG blur it)
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                ring |= np.roll(mask, (dy, dx), (0, 1)) != mask
        assert (diff[~mask & ~ring] < 14).mean() > 0.995
        assert 0.05 < mask.mean() < 0.6 and (diff[mask & ~ring] > 14).mean() > 0.8


def _digests(root: str) -> dict[str, str]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def test_same_seed_gives_byte_identical_files(tmp_path):
    cfg = SynthConfig(participants=1, sequences=1, frames=2, width=280, height=400, seed=3)
    write_synthetic_capture(str(tmp_path / "a"), cfg)
    write_synthetic_capture(str(tmp_path / "b"), cfg)
    a, b = _digests(str(tmp_path / "a")), _digests(str(tmp_path / "b"))
    assert len(a) == 16 + 16 + 1 + 3 and a == b  # videos, plates, calibration, ground truth (+ README)
    cfg.seed = 4
    write_synthetic_capture(str(tmp_path / "c"), cfg)
    c = _digests(str(tmp_path / "c"))
    assert c.keys() == a.keys() and c != a
