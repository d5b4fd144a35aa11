"""The framing pass's geometry: face tracks from detections, head squares, the stored square of a clip
(one, or one per frame following the head), the placed square of a calibrated view, and the head's 3D
point from the rays of the cameras that saw it."""

from __future__ import annotations

import numpy as np

from datasets.cameras import SquareCrop
from pipeline.backends.face_detect import Detection
from pipeline.backends.head_track import (
    follow_squares,
    head_squares,
    nearest_point,
    place_square,
    subject_track,
    to_crop,
    union_square,
)


def _face(cx: float, cy: float, size: float, score: float = 0.95) -> Detection:
    """A frontal face of box side `size` centred at (cx, cy), keypoints where BlazeFace puts them."""
    s = size
    kps = np.array([[cx - 0.2 * s, cy - 0.15 * s], [cx + 0.2 * s, cy - 0.15 * s], [cx, cy + 0.05 * s],
                    [cx, cy + 0.25 * s], [cx - 0.45 * s, cy - 0.05 * s], [cx + 0.45 * s, cy - 0.05 * s]])
    return Detection(np.array([cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2]), score, kps)


def test_the_subject_track_is_interpolated_and_a_stray_detection_is_not_the_subject():
    """Detections every 3rd frame of a face moving right; a weak stray box elsewhere on two frames, and a
    strong second face for a moment: the subject's track covers every frame between its first and last
    detection, interpolated linearly, and the others stay out."""
    T = 31
    dets: list = [None] * T
    for t in range(0, T, 3):
        dets[t] = [_face(100 + 2 * t, 120, 80)]
    dets[9] = dets[9] + [_face(400, 300, 30, score=0.6)]  # below min_score
    dets[12] = dets[12] + [_face(400, 300, 30, score=0.62)]
    dets[15] = dets[15] + [_face(600, 100, 90, score=0.97)]  # a passer-by, one frame only
    track = subject_track(dets, min_score=0.75, max_gap=15)
    assert track.found.all()
    assert (track.score[::3] > 0.9).all() and (np.delete(track.score, np.arange(0, T, 3)) == -1).all()
    centre_x = (track.boxes[:, 0] + track.boxes[:, 2]) / 2
    np.testing.assert_allclose(centre_x, 100 + 2 * np.arange(T), atol=1e-9)
    np.testing.assert_allclose((track.boxes[:, 1] + track.boxes[:, 3]) / 2, 120, atol=1e-9)


def test_a_cut_keeps_both_shots_and_a_long_gap_is_not_bridged():
    """The face in one place, then after 40 frames without it somewhere else: both stretches are the
    subject's (they do not overlap in time), the frames between have no face."""
    dets: list = [[] for _ in range(100)]
    for t in range(0, 30):
        dets[t] = [_face(100, 100, 60)]
    for t in range(70, 100):
        dets[t] = [_face(300, 200, 70)]
    track = subject_track(dets, min_score=0.75, max_gap=10)
    assert track.found[:30].all() and track.found[70:].all() and not track.found[30:70].any()


def test_head_square_holds_the_face_with_room_for_hair_and_neck():
    face = _face(200, 200, 100)
    cx, cy, side = head_squares(face.keypoints[None], face.box[None], 1.3)[0]
    lo, hi = np.array([cx, cy]) - side / 2, np.array([cx, cy]) + side / 2
    assert (lo < face.box[:2] - 30).all() and (hi > face.box[2:] + 30).all()
    assert 2.0 < side / 100 < 4.0
    # a rolled face: the axis-aligned square grows to hold the rolled head square
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    R = np.array([[c, -s], [s, c]])
    rolled = (face.keypoints - 200) @ R.T + 200
    assert head_squares(rolled[None], face.box[None], 1.3)[0, 2] > side * 1.2


def test_one_crop_per_clip_covers_every_frame_and_follow_crops_are_smooth():
    T = 60
    t = np.arange(T)
    squares = np.stack([300 + 100 * np.sin(t / 10), 200 + 0 * t, 150 + 10 * np.cos(t / 7)], 1)
    found = np.ones(T, bool)
    union = union_square(squares)
    crop = to_crop(union)
    assert (crop.x0 <= squares[:, 0] - squares[:, 2] / 2).all()
    assert (crop.x0 + crop.size >= squares[:, 0] + squares[:, 2] / 2).all()
    noisy = squares + np.random.default_rng(0).normal(0, 4, squares.shape)
    follow = follow_squares(noisy, found, sigma=3.0)
    assert np.abs(np.diff(follow[:, 0])).max() < np.abs(np.diff(noisy[:, 0])).max() / 2  # steadier
    assert np.abs(follow[:, 0] - squares[:, 0]).mean() < 3.0  # and still on the head
    found[20:30] = False  # no face: the nearest face frame's square, then smoothed
    held = follow_squares(squares, found, sigma=0.0)
    np.testing.assert_allclose(held[20:25], squares[[19] * 5])


def test_placed_square_moves_only_as_far_as_the_head_needs():
    # portrait frame 2200 x 3208: a head near the top is kept whole by a square of the short side
    top = place_square(np.array([1100, 700, 1000]), np.array([1100, 750, 500]), 2200, 3208)
    assert top == SquareCrop(0, 200, 2200)
    # a head that fits the centred square leaves it centred
    centred = place_square(np.array([1100, 1600, 1000]), np.array([1100, 1600, 500]), 2200, 3208)
    assert centred == SquareCrop.centred(2200, 3208)
    # a face larger than the short side: a larger square, padded
    crop = place_square(np.array([300, 400, 900]), np.array([300, 400, 700]), 560, 800)
    assert crop.size == 840 and crop.x0 < 0


def test_the_head_point_is_where_the_rays_meet():
    point = np.array([0.1, -0.2, 1.5])
    centres = np.array([[0.0, 0, 0], [1.0, 0, 0.5], [-1.0, 0.3, 0.4]])
    directions = point - centres
    np.testing.assert_allclose(nearest_point(centres, directions), point, atol=1e-9)
