"""Full-quality backends load offline from files in the exact names and formats their libraries expect.

The files are made here with RANDOM weights: these tests check loading, plumbing, shapes and batching,
not accuracy. Missing files give one clear error before any work starts, and nothing is downloaded.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from datasets.weights import MissingWeightsError
from pipeline.runner import preprocess
from tests.helpers import ingest_config, marker_capture


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a backend tried to download a file")

    import face_alignment.utils
    import pooch

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(face_alignment.utils, "download_url_to_file", refuse)
    monkeypatch.setattr(pooch, "retrieve", refuse)


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    base = tmp_path_factory.mktemp("offline")
    marker_capture(str(base / "raw"), n_frames=2)
    cfg = ingest_config(str(base / "s.zarr"), str(base / "raw"), resolution=64, block_frames=2)
    preprocess(cfg)
    return cfg.store


def _stage_cfg(store: str, stage: str, **settings):
    """A run of one stage on the ingested tiny store, with these settings of that stage."""
    cfg = ingest_config(store, "", resolution=64, block_frames=2)
    cfg.stages = [stage]
    for key, value in settings.items():
        setattr(cfg.stage_config(stage), key, value)
    return cfg


def _random_u2net(path: str) -> None:
    """A random-weight stand-in in u2net.onnx's format: input [1, 3, 320, 320], first output [1, 1, 320, 320]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.normal(0, 1, (1, 3, 1, 1)).astype(np.float32), "W"),
               numpy_helper.from_array(np.zeros(1, np.float32), "B")]
    nodes = [helper.make_node("Conv", ["input.1", "W", "B"], ["d"], kernel_shape=[1, 1]),
             helper.make_node("Sigmoid", ["d"], ["d0"])]
    graph = helper.make_graph(nodes, "u2net_random_standin",
                              [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 320, 320])],
                              [helper.make_tensor_value_info("d0", TensorProto.FLOAT, [1, 1, 320, 320])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 8
    os.makedirs(os.path.dirname(path), exist_ok=True)
    onnx.save(model, path)


def test_rembg_runs_from_rembg_home_and_through_the_matting_stage(tmp_path, monkeypatch, tiny_store):
    from pipeline.backends.segmentation import RembgSegmenter

    _random_u2net(str(tmp_path / "models" / "u2net.onnx"))
    monkeypatch.setenv("REMBG_HOME", str(tmp_path / "models"))
    matte = RembgSegmenter("u2net")(np.random.default_rng(1).integers(0, 255, (90, 70, 3), dtype=np.uint8))
    assert matte.shape == (90, 70) and matte.dtype == np.float32 and 0 <= matte.min() <= matte.max() <= 1
    summary = preprocess(_stage_cfg(tiny_store, "matting", backend="rembg"))
    assert summary.stages["matting"].done == 1 and summary.exit_code(False) == 0
    from datasets.store import Store

    alpha = Store(tiny_store).clip("001/EXP-1-markers")["alpha"][...]
    assert alpha.shape == (2, 16, 64, 64) and alpha.max() > 0


def test_missing_rembg_model_is_one_clear_error_before_any_work(tmp_path, monkeypatch, tiny_store):
    monkeypatch.setenv("REMBG_HOME", str(tmp_path / "empty"))
    with pytest.raises(MissingWeightsError) as err:
        preprocess(_stage_cfg(tiny_store, "matting", backend="rembg"))
    text = str(err.value)
    for part in ("u2net.onnx", str(tmp_path / "empty"), "REMBG_HOME", "github.com/danielgatis/rembg"):
        assert part in text


def _face_alignment_files(tmp_path) -> str:
    """Random FAN weights at $TORCH_HOME/hub/checkpoints/2DFAN4-11f355bf06.pth.tar (a state dict, as
    face-alignment 1.5.0 loads it) and an all-zero S3FD state dict at a path of its own."""
    from face_alignment.detection.sfd.net_s3fd import s3fd
    from face_alignment.models.fan import FAN

    from pipeline.backends.fan_landmarks import FAN_FILE

    torch.manual_seed(0)
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(FAN(4).state_dict(), checkpoints / FAN_FILE)
    detector = s3fd()
    for p in detector.parameters():
        torch.nn.init.zeros_(p)  # every score is exactly 0.5: below S3FD's threshold, so no faces
    torch.save(detector.state_dict(), tmp_path / "s3fd.pth")
    return str(tmp_path / "s3fd.pth")


def test_face_alignment_loads_from_torch_home_and_runs_batched(tmp_path, monkeypatch, tiny_store):
    detector = _face_alignment_files(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    from pipeline.backends.fan_landmarks import FanFaceLandmarks

    fan = FanFaceLandmarks(device="cpu", detector_path=detector, batch_size=2)
    images = np.random.default_rng(2).integers(0, 255, (3, 128, 128, 3), dtype=np.uint8)
    results = fan.batch(images)
    assert len(results) == 3 and all(r.count == 0 and r.landmarks68 is None for r in results)
    # FAN itself on given face boxes (a stand-in for detections): 68 points in the region FAN crops
    # around each box (within 1.5 box sizes of its centre)
    box = np.array([[30.0, 30.0, 100.0, 100.0, 0.9]])
    monkeypatch.setattr(fan.fa.face_detector, "detect_from_batch", lambda tensor: [box] * tensor.shape[0])
    results = fan.batch(images[:2])
    assert [r.count for r in results] == [1, 1]
    for r in results:
        assert r.landmarks68.shape == (68, 3) and r.box.shape == (5,)
        assert np.isfinite(r.landmarks68).all() and (np.abs(r.landmarks68[:, :2] - 65.0) < 1.5 * 70).all()
    # through the landmarks stage: the zero detector finds no face; every frame is recorded, none lost
    monkeypatch.undo()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    summary = preprocess(_stage_cfg(tiny_store, "landmarks", backend="face-alignment", detector_path=detector))
    assert summary.stages["landmarks"].done == 1 and summary.stages["landmarks"].items == 32
    from datasets.store import Store

    g = Store(tiny_store).clip("001/EXP-1-markers")
    assert g["lmk_full"].shape == (2, 16, 68, 3) and (g["faces"][...] == 0).all()


def test_missing_face_alignment_weights_are_one_clear_error(tmp_path, monkeypatch, tiny_store):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "nothing"))
    cfg = _stage_cfg(tiny_store, "landmarks", backend="face-alignment")
    with pytest.raises(MissingWeightsError) as err:
        preprocess(cfg)
    text = str(err.value)
    for part in ("2DFAN4-11f355bf06.pth.tar", "TORCH_HOME", "adrianbulat.com"):
        assert part in text
    detector = _face_alignment_files(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cfg.stage_config("landmarks").detector_path = detector + ".missing"
    with pytest.raises(MissingWeightsError, match="s3fd.pth.missing"):
        preprocess(cfg)
