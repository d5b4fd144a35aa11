"""The mouth check of driving (model/avatar/mouth.py): the opening measure against constructed landmarks,
and the re-detection on small renders against full-size detection on a real clip whose mouth opens."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from model.avatar.mouth import (
    correlation,
    mouth_agreement,
    mouth_opening,
    redetected_openings,
)
from tests.realdata import FRONTAL, needs_realdata


def _mouth(gap: float, width: float = 40.0) -> np.ndarray:
    """[68, 2] landmarks with only the mouth points placed: corners `width` apart, inner lips `gap` apart."""
    lm = np.zeros((68, 2))
    lm[48], lm[54] = (-width / 2, 0), (width / 2, 0)
    lm[62], lm[66] = (0, -gap / 2), (0, gap / 2)
    return lm


def test_the_opening_is_the_lip_gap_over_the_mouth_width_whatever_the_scale_and_rotation():
    assert mouth_opening(_mouth(0.0)) == 0.0
    assert mouth_opening(_mouth(10.0)) == pytest.approx(0.25)
    c, s = np.cos(0.7), np.sin(0.7)
    moved = 3.5 * _mouth(10.0) @ np.array([[c, -s], [s, c]]).T + (100, 50)
    assert mouth_opening(moved) == pytest.approx(0.25)
    batch = np.stack([_mouth(g) for g in (0, 4, 8)])[:, None]  # [3, 1, 68, 2]
    assert mouth_opening(batch)[:, 0] == pytest.approx([0.0, 0.1, 0.2])


def test_the_correlation_skips_frames_without_a_face_and_is_undefined_without_variation():
    a = np.array([0.0, 0.1, np.nan, 0.3, 0.4])
    b = np.array([0.0, 0.2, 0.5, np.nan, 0.8])
    assert correlation(a, b) == pytest.approx(1.0)  # frames 0, 1 and 4
    assert np.isnan(correlation(a, np.full(5, 0.2)))  # a still avatar mouth: no correlation to speak of
    assert np.isnan(correlation(a[:2], b[:2]))


class _Detector:
    """Stands in for the landmark detector: a face in every image but the blank ones, mouth open by the
    image's mean brightness."""

    def __call__(self, image):
        class Found:
            landmarks68 = None if image.max() == 0 else _mouth(40.0 * image.mean() / 255.0)
        return Found()


def test_an_avatar_whose_mouth_does_not_follow_fails_the_check():
    driver = np.stack([_mouth(g) for g in (0, 4, 8, 12, 16, 8)])
    follows = [np.full((8, 8, 3), 1 + int(g * 255 / 40), np.uint8) for g in (0, 4, 8, 12, 16, 8)]
    report = mouth_agreement(driver, follows, _Detector())
    assert report.correlation == pytest.approx(1.0, abs=1e-3) and report.detected == 6  # uint8 rounding
    still = [np.full((8, 8, 3), 100, np.uint8)] * 5 + [np.zeros((8, 8, 3), np.uint8)]
    report = mouth_agreement(driver, still, _Detector())
    assert np.isnan(report.correlation) and report.detected == 5 and "correlation nan" in report.describe()
    backwards = mouth_agreement(driver, follows[::-1], _Detector())
    assert backwards.correlation < 0.6
    with pytest.raises(ValueError, match="6 driver frames but 5"):
        mouth_agreement(driver, follows[:5], _Detector())


@needs_realdata
def test_the_opening_re_detected_on_small_head_renders_follows_the_full_size_one():
    """The real clip opens its mouth (frames ~19-70): cut to the head and shrunk to 128 px as the tiny preset
    renders, the re-detected opening still follows the one detected on the full frames."""
    from tests.realdata import raw_landmarks

    cap = cv2.VideoCapture(str(FRONTAL))
    frames = []
    while len(frames) < 72:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    frames = frames[::3]
    full = raw_landmarks(frames)
    assert all(f is not None for f in full)
    heads = []
    for image, lm in zip(frames, full):
        (x0, y0), (x1, y1) = lm[:, :2].min(0), lm[:, :2].max(0)
        cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, 0.8 * max(x1 - x0, y1 - y0)
        M = np.array([[64 / half, 0, 64 - cx * 64 / half], [0, 64 / half, 64 - cy * 64 / half]])
        heads.append(cv2.warpAffine(image, M, (128, 128), flags=cv2.INTER_AREA))
    from pipeline.backends.mediapipe_landmarks import MediapipeFaceLandmarks

    detector = MediapipeFaceLandmarks(tracking=False)
    try:
        small = redetected_openings(heads, detector)
    finally:
        detector.close()
    reference = mouth_opening(np.stack(full))
    assert np.isfinite(small).all()
    assert reference.max() - reference.min() > 0.15  # the clip's mouth does open
    assert correlation(reference, small) > 0.95
