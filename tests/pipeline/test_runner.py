"""The runner: skip finished blocks, refuse stale configs, order stages, invalidate downstream work,
record task failures. Test-only stages (registered here) read the ingested frames."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from datasets.store import Store
from pipeline.runner import PlanError, RefusedError, preprocess
from pipeline.stage import REGISTRY, BlockOutput, Stage, dependency_order, register
from tests.helpers import ingest_config


@dataclass
class BrightnessConfig:
    scale: float = 1.0


@register
class BrightnessStage(Stage):
    """Test stage: mean intensity of each ingested image, times `scale`."""

    name = "test_brightness"
    config_class = BrightnessConfig
    requires = ("ingest",)
    products = ("brightness",)

    def prepare(self, store, layout, work):
        group = store.clip(layout.key)
        if "brightness" not in group:
            store.create_frame_array(group, "brightness", (layout.n_frames, len(layout.views)), "float32",
                                     layout.block_frames)

    def run(self, ctx):
        group = ctx.group
        for block in ctx.blocks:
            t0, t1 = ctx.layout.frames(block)
            rgb = group["rgb"][t0:t1]
            yield BlockOutput(block, {"brightness": rgb.mean(axis=(2, 3, 4)).astype(np.float32) * self.config.scale})


@dataclass
class FlakyConfig:
    fail_block: int = 1


@register
class FlakyStage(Stage):
    """Test stage that crashes on one block (a bug, not an item failure)."""

    name = "test_flaky"
    config_class = FlakyConfig
    requires = ("ingest",)
    products = ()

    def prepare(self, store, layout, work):
        pass

    def run(self, ctx):
        for block in ctx.blocks:
            if block == self.config.fail_block:
                raise RuntimeError("boom on purpose")
            yield BlockOutput(block, {})


@dataclass
class AfterFlakyConfig:
    pass


@register
class AfterFlakyStage(Stage):
    name = "test_after_flaky"
    config_class = AfterFlakyConfig
    requires = ("test_flaky",)

    def prepare(self, store, layout, work):
        pass

    def run(self, ctx):
        for block in ctx.blocks:
            yield BlockOutput(block, {})


def _cfg(tmp_path, root, stages=("ingest",), **ingest):
    cfg = ingest_config(str(tmp_path / "s.zarr"), root, resolution=32, block_frames=2, **ingest)
    cfg.stages = list(stages)
    return cfg


def test_dependency_order():
    # framing is implicit: it comes with ingest, which requires it
    assert dependency_order(["test_brightness", "ingest"]) == ["framing", "ingest", "test_brightness"]
    assert dependency_order(["test_after_flaky", "test_flaky", "ingest"]) == ["framing", "ingest", "test_flaky",
                                                                            "test_after_flaky"]
    assert dependency_order(["test_brightness"]) == ["test_brightness"]
    with pytest.raises(ValueError, match="unknown stage"):
        dependency_order(["nope"])
    assert "test_brightness" in REGISTRY


def test_rerun_skips_finished_blocks_and_refuses_a_changed_config(tmp_path, small_capture):
    root, _ = small_capture
    cfg = _cfg(tmp_path, root, ("ingest", "test_brightness"))
    first = preprocess(cfg)
    assert first.stages["ingest"].done == 8 and first.stages["test_brightness"].done == 8
    again = preprocess(cfg)
    assert again.stages["ingest"].done == 0 and again.stages["ingest"].already_done == 8
    assert again.stages["test_brightness"].done == 0
    changed = _cfg(tmp_path, root, ("ingest",))
    changed.stage_config("ingest").resolution = 24
    with pytest.raises(RefusedError, match="resolution: 32 -> 24"):
        preprocess(changed)
    changed.runner.recompute = True
    redo = preprocess(changed)
    assert redo.stages["ingest"].done == 8
    store = Store(cfg.store)
    group = store.clip("001/EXP-1-markers")
    assert group["rgb"].shape[2:] == (24, 24, 3)
    # the downstream stage's results were made from the old frames: their markers are gone
    assert store.markers("test_brightness", "001/EXP-1-markers") == {}
    downstream = _cfg(tmp_path, root, ("test_brightness",))
    downstream.stage_config("ingest").resolution = 24
    after = preprocess(downstream)
    assert after.stages["test_brightness"].done == 8
    np.testing.assert_allclose(group["brightness"][...], group["rgb"][...].mean(axis=(2, 3, 4)), rtol=1e-5)


def test_a_changed_downstream_config_is_refused_without_touching_upstream(tmp_path, small_capture):
    root, _ = small_capture
    cfg = _cfg(tmp_path, root, ("ingest", "test_brightness"))
    preprocess(cfg)
    cfg.stage_config("test_brightness").scale = 2.0
    with pytest.raises(RefusedError, match="scale: 1.0 -> 2.0"):
        preprocess(cfg)
    cfg.runner.recompute = True
    out = preprocess(cfg)
    assert out.stages["ingest"].done == 0 and out.stages["test_brightness"].done == 8


def test_a_downstream_stage_without_its_upstream_is_a_clear_error(tmp_path, small_capture):
    root, _ = small_capture
    cfg = _cfg(tmp_path, root, ("test_brightness",))
    Store(cfg.store)  # empty store
    with pytest.raises(PlanError, match="needs ingest"):
        preprocess(cfg)


def test_a_crashing_task_is_recorded_and_skips_its_dependents(tmp_path, small_capture):
    root, _ = small_capture
    cfg = _cfg(tmp_path, root, ("ingest", "test_flaky", "test_after_flaky"))
    cfg.runner.retries = 1
    summary = preprocess(cfg)
    flaky = summary.stages["test_flaky"]
    assert flaky.failed == 2 and flaky.done == 6  # block 1 of both clips
    assert summary.stages["test_after_flaky"].skipped_upstream == 2
    assert summary.stages["test_after_flaky"].done == 6
    assert summary.exit_code(strict=False) == 1
    failures = [i for i in Store(cfg.store).ledger("test_flaky") if i.kind == "task"]
    assert len(failures) == 2 and all("boom on purpose" in i.reason and i.block == 1 for i in failures)
    # fixed: the rerun does exactly the failed blocks
    cfg.stage_config("test_flaky").fail_block = 99
    cfg.runner.recompute = True
    rerun = preprocess(cfg)
    assert rerun.stages["test_flaky"].done == 8 and rerun.exit_code(strict=False) == 0


def test_local_dask_cluster_gives_the_same_store_as_inline(tmp_path, small_capture):
    root, _ = small_capture
    inline = ingest_config(str(tmp_path / "a.zarr"), root, resolution=32, block_frames=2, workers=0)
    dask = ingest_config(str(tmp_path / "b.zarr"), root, resolution=32, block_frames=2, workers=2)
    preprocess(inline)
    summary = preprocess(dask)
    assert summary.stages["ingest"].done == 8 and summary.exit_code(False) == 0
    for clip in ("001/EXP-1-markers", "001/EXP-2-markers"):
        a, b = Store(inline.store).clip(clip), Store(dask.store).clip(clip)
        for name in ("rgb", "rgb_ok", "background", "cameras/K"):
            np.testing.assert_array_equal(a[name][...], b[name][...])


def test_an_existing_dask_scheduler_runs_the_tasks(tmp_path, small_capture):
    from distributed import LocalCluster

    root, _ = small_capture
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        cfg = ingest_config(str(tmp_path / "s.zarr"), root, resolution=32, block_frames=2)
        cfg.runner.scheduler = cluster.scheduler_address
        summary = preprocess(cfg)
        assert summary.stages["ingest"].done == 8 and summary.exit_code(False) == 0
        # the tasks went through this scheduler (a new local cluster would have had its own)
        assert cluster.scheduler.transition_counter > 0
    reference = ingest_config(str(tmp_path / "r.zarr"), root, resolution=32, block_frames=2)
    preprocess(reference)
    a, b = Store(reference.store).clip("001/EXP-1-markers"), Store(cfg.store).clip("001/EXP-1-markers")
    np.testing.assert_array_equal(a["rgb"][...], b["rgb"][...])


def test_changed_calibration_redoes_ingest_and_the_stages_after_it_in_the_same_run(tmp_path):
    import json
    import os

    from tests.helpers import marker_capture

    root = str(tmp_path / "raw")
    marker_capture(root, n_frames=4)
    cfg = ingest_config(str(tmp_path / "s.zarr"), root, resolution=32, block_frames=2)
    cfg.stages = ["ingest", "test_brightness"]
    preprocess(cfg)
    path = os.path.join(root, "001", "calibration", "camera_params.json")
    with open(path) as f:
        calib = json.load(f)
    calib["intrinsics"][0][0] *= 1.1
    with open(path, "w") as f:
        json.dump(calib, f)
    with pytest.raises(RefusedError, match="other raw data"):
        preprocess(cfg)
    cfg.runner.recompute = True
    summary = preprocess(cfg)
    assert summary.stages["ingest"].done == 2 and summary.stages["test_brightness"].done == 2
    assert summary.stages["test_brightness"].already_done == 0
