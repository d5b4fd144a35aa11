import numpy as np

from pipeline.backends.face_align import (
    FACE_TEMPLATE,
    apply,
    face_mask,
    face_transform,
    five_points,
    head_transform,
    similarity,
)


def _face_landmarks() -> np.ndarray:
    """A plausible frontal 68-point layout (pixels) built from the crop template and a jaw arc."""
    lm = np.zeros((68, 2))
    t = np.linspace(-1.2, 1.2, 17)
    lm[0:17] = np.stack([250 + 110 * np.sin(t), 230 + 120 * np.cos(t) * 0.95], 1)  # jaw around the chin
    lm[17:27] = np.stack([np.linspace(160, 340, 10), np.full(10, 170.0)], 1)
    lm[27:31] = np.stack([np.full(4, 250.0), np.linspace(195, 258, 4)], 1)  # bridge down to the tip
    lm[31:36] = np.stack([np.linspace(230, 270, 5), np.full(5, 268.0)], 1)  # nostrils
    eye = lambda cx: np.stack([cx + 18 * np.cos(a), 200 + 8 * np.sin(a)], 1)  # noqa: E731
    a = np.linspace(np.pi, -np.pi, 6, endpoint=False)
    lm[36:42], lm[42:48] = eye(205.0), eye(295.0)
    lm[48:60] = np.stack([250 + 45 * np.cos(np.linspace(np.pi, -np.pi, 12, endpoint=False)),
                          305 + 14 * np.sin(np.linspace(np.pi, -np.pi, 12, endpoint=False))], 1)
    lm[60:68] = np.stack([250 + 35 * np.cos(np.linspace(np.pi, -np.pi, 8, endpoint=False)),
                          305 + 5 * np.sin(np.linspace(np.pi, -np.pi, 8, endpoint=False))], 1)
    return lm


def test_similarity_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    src = rng.normal(0, 50, (7, 2))
    angle, scale, shift = 0.4, 1.7, np.array([12.0, -30.0])
    R = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    M = similarity(src, src @ (scale * R).T + shift)
    np.testing.assert_allclose(M, np.hstack([scale * R, shift[:, None]]), atol=1e-9)


def test_face_and_head_crops_frame_the_landmarks():
    lm = _face_landmarks()
    rotated = (lm - 250) @ np.array([[np.cos(0.3), -np.sin(0.3)], [np.sin(0.3), np.cos(0.3)]]).T + 250
    for points in (lm, rotated):
        face = face_transform(points, 256)
        np.testing.assert_allclose(apply(face, five_points(points)), FACE_TEMPLATE * 256 - 0.5, atol=12)
        q = apply(face, points)
        assert (q > 0).all() and (q < 255).all()
        head = head_transform(points, 256, head_scale=1.3)
        h = apply(head, points)
        assert (h > 0).all() and (h < 255).all()
        # the head crop shows more around the face than the tight crop: a smaller scale
        assert np.linalg.norm(head[:, :2], axis=0)[0] < np.linalg.norm(face[:, :2], axis=0)[0]
        # upright: the eyes sit level in both crops whatever the head roll
        for M in (face, head):
            eyes = apply(M, five_points(points)[:2])
            assert abs(eyes[0, 1] - eyes[1, 1]) < 1e-6 * 256 + 1.0


def test_face_mask_covers_the_landmark_hull_with_a_margin():
    lm = _face_landmarks()
    mask = face_mask(lm, 512, 512, margin=0.2)
    pts = np.round(lm).astype(int)
    assert (mask[pts[:, 1], pts[:, 0]] == 255).all()
    eye_distance = 90.0
    below_chin = np.round(lm[8] + [0, 0.15 * eye_distance]).astype(int)
    far_below = np.round(lm[8] + [0, 0.3 * eye_distance]).astype(int)
    assert mask[below_chin[1], below_chin[0]] == 255 and mask[far_below[1], far_below[0]] == 0
