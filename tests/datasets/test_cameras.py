import numpy as np
import pytest

from datasets.cameras import SquareCrop, check_calibration, crop_resize_image, crop_resize_intrinsics, project
from datasets.capture.rig import look_at, make_rig


def test_centred_square_of_a_portrait_frame():
    assert SquareCrop.centred(2200, 3208) == SquareCrop(0, 504, 2200)
    assert SquareCrop.parse("-200,304,2600", 2200, 3208) == SquareCrop(-200, 304, 2600)
    with pytest.raises(ValueError):
        SquareCrop.parse("10,20", 100, 100)


def test_intrinsics_follow_the_pixel_centre_mapping_of_crop_and_resize():
    K = np.array([[900.0, 0, 270.3], [0, 905.0, 410.7], [0, 0, 1]])
    E = look_at(np.array([0.2, 0.1, 1.0]), np.zeros(3))
    pts = np.random.default_rng(0).normal(0, 0.05, (20, 3))
    uv = project(pts, K, E)
    crop = SquareCrop(-13, 101, 557)
    K2 = crop_resize_intrinsics(K, crop, 512)
    s = 512 / 557
    expected = (uv - [crop.x0, crop.y0] + 0.5) * s - 0.5
    np.testing.assert_allclose(project(pts, K2, E), expected, atol=1e-9)


def test_crop_resize_image_pads_outside_the_source_with_black():
    img = np.full((40, 30, 3), 200, np.uint8)
    out = crop_resize_image(img, SquareCrop(-10, 0, 40), 40)  # 10 columns left of the image
    assert out.shape == (40, 40, 3)
    assert (out[:, :10] == 0).all() and (out[:, 10:] == 200).all()


def test_calibration_checks():
    cam = make_rig(56, 80)[0]
    assert check_calibration(cam.K, cam.world_to_cam) is None
    bad = cam.K.copy()
    bad[0, 2] = np.nan
    assert "non-finite" in check_calibration(bad, cam.world_to_cam)
    E = cam.world_to_cam.copy()
    E[0, 0] = np.inf
    assert "non-finite" in check_calibration(cam.K, E)
    E = cam.world_to_cam.copy()
    E[:3, :3] *= 2
    assert "orthonormal" in check_calibration(cam.K, E)
