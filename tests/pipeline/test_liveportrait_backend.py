"""The `liveportrait` synthesis backend against the STAND-IN LivePortrait checkout of tests/liveportrait_standin.py
(NOT LivePortrait: same module paths, classes, methods and tensor shapes, simple deterministic torch ops), and
`find_checkout`'s errors. The stand-in derives head pose from the top half of an image and expression from its
bottom half, and its decoder shifts the source image's colours by the mean keypoint motion, so the tests can
tell which image's pose and which image's expression the backend composed."""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from datasets.weights import MissingWeightsError
from pipeline.backends.liveportrait import (
    LIVEPORTRAIT_VARIABLE,
    WEIGHT_FILES,
    LivePortraitExpression,
    expression_mask,
    find_checkout,
    half_precision_default,
)
from tests.liveportrait_standin import write_standin_checkout


@pytest.fixture(scope="module")
def standin_checkout(tmp_path_factory) -> str:
    return write_standin_checkout(str(tmp_path_factory.mktemp("standin_liveportrait")))


def standin(backend: LivePortraitExpression) -> SimpleNamespace:
    """The stand-in wrapper module this backend runs (its CALLS record, motion_of, constants)."""
    return SimpleNamespace(**type(backend.wrapper).__init__.__globals__)


def crops(top: np.ndarray, bottom: np.ndarray, seed: int) -> np.ndarray:
    """top, bottom: [B, 3] colours in [0, 1] -> [B, 256, 256, 3] uint8 crops: each half that colour plus texture."""
    rng = np.random.default_rng(seed)
    image = np.empty((len(top), 256, 256, 3))
    image[:, :128] = top[:, None, None]
    image[:, 128:] = bottom[:, None, None]
    image += rng.uniform(-0.05, 0.05, image.shape)
    return np.round(image * 255).astype(np.uint8)


def pairs(n: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(driving, source) crops whose poses differ a lot (driving tops ~0.6, source tops ~0.4)."""
    rng = np.random.default_rng(seed)
    driving = crops(rng.uniform(0.55, 0.65, (n, 3)), rng.uniform(0.4, 0.6, (n, 3)), seed + 1)
    source = crops(rng.uniform(0.35, 0.45, (n, 3)), rng.uniform(0.4, 0.6, (n, 3)), seed + 2)
    return driving, source


def as_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255  # [B, 3, 256, 256]


def expected_offset(lp: SimpleNamespace, driving: np.ndarray, source: np.ndarray, pose_from: str) -> torch.Tensor:
    """[B, 3] colour shift the stand-in decoder applies when the driving keypoints are composed from the source's
    canonical keypoints, the `pose_from` image's rotation/scale/translation, and the expression of
    LivePortrait's "exp" region (driving entries where expression_mask is set, source entries elsewhere)."""
    s, d = lp.motion_of(as_tensor(source)), lp.motion_of(as_tensor(driving))
    pose = s if pose_from == "source" else d
    exp = torch.where(expression_mask(), d["exp"], s["exp"])

    def place(rotation_from: dict, scale, t, e):  # s (x_c R + exp) + [tx, ty, 0]
        rot = lp.get_rotation_matrix(rotation_from["pitch"], rotation_from["yaw"], rotation_from["roll"])
        out = scale[:, :, None] * (s["kp"] @ rot + e)
        out[:, :, :2] += t[:, None, :2]
        return out

    kp_source = place(s, s["scale"], s["t"], s["exp"])
    kp_driving = place(pose, pose["scale"], pose["t"], exp)
    kp_driving = kp_driving + lp.STITCH_PULL * (kp_source - kp_driving)
    return lp.OFFSET_GAIN * (kp_driving - kp_source).mean(dim=1)


def shifted(source: np.ndarray, offset: torch.Tensor) -> np.ndarray:
    """The source crops with a per-image colour shift [B, 3], as the stand-in decodes them."""
    image = (as_tensor(source) + offset[:, :, None, None]).clamp(0, 1)
    return (image.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)


def test_standin_output_is_uint8_crops_of_the_input_size(standin_checkout):
    driving, source = pairs()
    out = LivePortraitExpression(standin_checkout, "cpu", batch_size=8)(driving, source)
    assert out.shape == (5, 256, 256, 3) and out.dtype == np.uint8
    # the stand-in generator, like the real one, decodes at 512: the backend brought it back to 256
    empty = LivePortraitExpression(standin_checkout, "cpu")(driving[:0], source[:0])
    assert empty.shape == (0, 256, 256, 3)


def test_standin_batches_of_two_give_the_same_images_as_one_batch(standin_checkout):
    driving, source = pairs()
    small = LivePortraitExpression(standin_checkout, "cpu", batch_size=2)
    lp = standin(small)
    lp.CALLS.clear()
    out_small = small(driving, source)
    seen = {}
    for name, size in lp.CALLS:
        seen.setdefault(name, []).append(size)
    assert seen["extract_feature_3d"] == [2, 2, 1]
    assert seen["warp_decode"] == [2, 2, 1] and seen["parse_output"] == [2, 2, 1]
    assert seen["get_kp_info"] == [2, 2, 2, 2, 1, 1]  # source and driving of each batch
    assert seen["stitching"] == [2, 2, 1] and max(seen["transform_keypoint"]) == 2
    assert seen["prepare_source"] == [1] * 10  # the real prepare_source cannot take a 4-D batch
    lp.CALLS.clear()
    out_large = LivePortraitExpression(standin_checkout, "cpu", batch_size=8)(driving, source)
    assert [size for name, size in lp.CALLS if name == "warp_decode"] == [5]
    np.testing.assert_array_equal(out_small, out_large)


def test_standin_output_is_the_source_shifted_by_the_driving_expression(standin_checkout):
    driving, source = pairs(seed=3)
    backend = LivePortraitExpression(standin_checkout, "cpu", batch_size=2)
    out = backend(driving, source)
    lp = standin(backend)
    offset = expected_offset(lp, driving, source, pose_from="source")
    assert offset.abs().max() > 0.03  # the expressions differ enough to show
    diff = out.astype(int) - source.astype(int)  # [B, 256, 256, 3]
    # source appearance: the whole image moves by one colour shift per image (texture kept, up to rounding)
    assert diff.reshape(5, -1, 3).std(axis=1).max() < 0.6
    # driving expression: that shift is the one the driving's expression gives
    np.testing.assert_allclose(diff.reshape(5, -1, 3).mean(axis=1), offset.numpy() * 255, atol=1.0)
    assert np.abs(out.astype(int) - shifted(source, offset).astype(int)).max() <= 1


def test_standin_pose_scale_translation_come_from_the_source_not_the_driving(standin_checkout):
    driving, source = pairs(seed=5)
    backend = LivePortraitExpression(standin_checkout, "cpu", batch_size=4)
    out = backend(driving, source)
    lp = standin(backend)
    with_driving_pose = shifted(source, expected_offset(lp, driving, source, pose_from="driving"))
    with_source_pose = shifted(source, expected_offset(lp, driving, source, pose_from="source"))
    assert np.abs(out.astype(int) - with_source_pose.astype(int)).max() <= 1
    assert np.abs(out.astype(int) - with_driving_pose.astype(int)).mean() > 10
    # the driving's top half (its pose, scale, translation and canonical keypoints) does not matter at all ...
    repose = driving.copy()
    repose[:, :128] = crops(np.full((5, 3), 0.2), np.full((5, 3), 0.5), seed=9)[:, :128]
    np.testing.assert_array_equal(backend(repose, source), out)
    # ... its bottom half (its expression) does
    reexpress = driving.copy()
    reexpress[:, 128:] = crops(np.full((5, 3), 0.5), np.full((5, 3), 0.7), seed=9)[:, 128:]
    assert np.abs(backend(reexpress, source).astype(int) - out.astype(int)).mean() > 5


def test_expression_mask_keeps_the_source_entries_livePortrait_keeps():
    mask = expression_mask()
    assert mask.shape == (21, 3) and mask.dtype == torch.bool
    assert not mask[[0, 7, 10]].any() and mask[[1, 2, 6, 11, 20]].all()
    assert mask[3].tolist() == [False, True, False] and mask[9].tolist() == [False, True, True]


def test_standin_fp16_defaults_false_on_cpu_and_true_on_cuda(standin_checkout):
    backend = LivePortraitExpression(standin_checkout, "cpu")
    assert backend.fp16 is False and backend.framing == "head"
    cfg = backend.wrapper.inference_cfg
    assert cfg.flag_use_half_precision is False and cfg.flag_force_cpu is True and backend.wrapper.device == "cpu"
    assert cfg.animation_region == "exp" and cfg.flag_stitching is True
    for field, name in WEIGHT_FILES.items():
        assert getattr(cfg, field) == os.path.join(standin_checkout, name)
    assert LivePortraitExpression(standin_checkout, "cpu", fp16=True).config.flag_use_half_precision is True
    # the stand-in touches no GPU, so the flags for a CUDA device can be checked anywhere
    gpu = LivePortraitExpression(standin_checkout, "cuda:1")
    assert gpu.fp16 is True and gpu.wrapper.device == "cuda:1" and gpu.config.flag_force_cpu is False
    assert half_precision_default("cuda") and not half_precision_default("cpu")


def test_standin_rejects_bad_crops_and_devices(standin_checkout):
    backend = LivePortraitExpression(standin_checkout, "cpu")
    driving, source = pairs(n=2)
    with pytest.raises(ValueError, match="uint8 RGB crops"):
        backend(driving[:, :128], source)
    with pytest.raises(ValueError, match="uint8 RGB crops"):
        backend(driving.astype(np.float32), source)
    with pytest.raises(ValueError, match="2 driving crops but 1 source"):
        backend(driving, source[:1])
    with pytest.raises(ValueError, match="device must be"):
        LivePortraitExpression(standin_checkout, "not-a-device")


def test_broken_standin_import_is_a_clear_error_and_a_good_checkout_still_loads(tmp_path, standin_checkout):
    broken = write_standin_checkout(str(tmp_path / "broken"))
    with open(os.path.join(broken, "src", "live_portrait_wrapper.py"), "w") as f:
        f.write("import standin_requirement_not_installed\n")
    with pytest.raises(ImportError, match="could not import LivePortrait") as err:
        LivePortraitExpression(broken, "cpu")
    assert "standin_requirement_not_installed" in str(err.value) and broken in str(err.value)
    other = write_standin_checkout(str(tmp_path / "other"))
    for root in (other, standin_checkout):  # each backend runs the code of its own checkout
        backend = LivePortraitExpression(root, "cpu")
        assert os.path.realpath(standin(backend).__file__).startswith(os.path.realpath(root) + os.sep)
        assert backend(*pairs(n=1)).shape == (1, 256, 256, 3)


def test_standin_wrapper_load_failure_names_the_checkout(tmp_path):
    root = write_standin_checkout(str(tmp_path / "lp"), missing=(WEIGHT_FILES["checkpoint_W"],))
    with pytest.raises(RuntimeError, match="could not load its models") as err:
        LivePortraitExpression(root, "cpu")  # find_checkout skipped: the wrapper itself finds the file missing
    assert root in str(err.value) and "warping_module.pth" in str(err.value)


def test_find_checkout_without_path_or_variable_names_the_variable(monkeypatch):
    monkeypatch.delenv(LIVEPORTRAIT_VARIABLE, raising=False)
    with pytest.raises(MissingWeightsError) as err:
        find_checkout("")
    message = str(err.value)
    for part in ("LIVEPORTRAIT_DIR", "--liveportrait-dir", "github.com/KwaiVGI/LivePortrait",
                 "huggingface.co/KwaiVGI/LivePortrait", "Nothing is downloaded"):
        assert part in message
    assert isinstance(err.value, FileNotFoundError)


def test_find_checkout_takes_the_standin_from_path_or_variable(monkeypatch, standin_checkout):
    assert find_checkout(standin_checkout) == os.path.abspath(standin_checkout)
    monkeypatch.setenv(LIVEPORTRAIT_VARIABLE, standin_checkout)
    assert find_checkout() == os.path.abspath(standin_checkout)


@pytest.mark.parametrize("name", sorted(WEIGHT_FILES.values()))
def test_find_checkout_names_the_missing_weight_file_of_a_standin(tmp_path, name):
    root = write_standin_checkout(str(tmp_path / "lp"), missing=(name,))
    with pytest.raises(MissingWeightsError) as err:
        find_checkout(root)
    message = str(err.value)
    assert name in message and root in message and "huggingface.co/KwaiVGI/LivePortrait" in message
    assert [other for other in WEIGHT_FILES.values() if other in message] == [name]


def test_find_checkout_lists_every_missing_or_empty_weight_file_of_a_standin(tmp_path):
    gone = WEIGHT_FILES["checkpoint_W"]
    empty = WEIGHT_FILES["checkpoint_S"]
    root = write_standin_checkout(str(tmp_path / "lp"), missing=(gone,))
    open(os.path.join(root, empty), "w").close()  # an interrupted download
    with pytest.raises(MissingWeightsError) as err:
        find_checkout(root)
    assert gone in str(err.value) and empty in str(err.value)


def test_find_checkout_rejects_a_folder_that_is_not_a_checkout(tmp_path):
    with pytest.raises(MissingWeightsError, match="is not a LivePortrait checkout") as err:
        find_checkout(str(tmp_path))
    assert "src/live_portrait_wrapper.py" in str(err.value) and WEIGHT_FILES["checkpoint_F"] in str(err.value)
    with pytest.raises(MissingWeightsError, match="is not a directory"):
        find_checkout(str(tmp_path / "nowhere"))
