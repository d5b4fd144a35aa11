"""Planning from the per-clip summaries of markers and ledger entries (datasets/store.py): on S3 a resumed
preprocess and build-shards read a few objects per clip, not one per block, and give the same plan as
reading every marker; a summary that is missing, corrupt or older than the markers never gives a wrong
plan."""

from __future__ import annotations

import json

import pytest

from datasets import zarr_keys
from datasets.capture.coloured_store import make_store
from datasets.local_s3 import count_requests
from datasets.shards.build import BuildOptions, plan_build
from datasets.shards.source import SourceStore
from datasets.store import Marker, Store
from pipeline.runner import RefusedError, plan_run, preprocess
from tests.helpers import ingest_config

CLIPS = ("001/EXP-1-markers", "001/EXP-2-markers")


def _summary_key(clip: str) -> str:
    return f"_meta/summary/{clip}/zarr.json"


def _drop_summaries(url: str, options: dict | None = None) -> None:
    zarr_keys.delete_dir(Store(url, options).zstore, "_meta/summary")


def _meta_calls(calls: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(op, key) for op, key in calls if "/_meta/" in key]


def _marker_reads(calls: list[tuple[str, str]]) -> int:
    return sum(1 for op, key in calls if op == "get_object" and "/_meta/markers/" in key)


def _plan_facts(plan) -> tuple:
    return ([t.task_id for t in plan.tasks], {k: (v.blocks, v.already_done) for k, v in plan.summary.stages.items()})


def test_resumed_preprocess_plans_from_a_few_requests_per_clip(tmp_path, small_capture, s3_endpoint):
    root, _ = small_capture
    counts, blocks = {}, {}
    for block_frames in (1, 2):  # 7 and 4 blocks per clip
        cfg = ingest_config(f"s3://headforge-test/plan{block_frames}/store.zarr", root, resolution=32,
                            block_frames=block_frames)
        cfg.storage_options = dict(s3_endpoint)
        assert preprocess(cfg).stages["ingest"].done == 2 * -(-7 // block_frames)
        with count_requests() as calls:
            summarised = plan_run(cfg)
        counts[block_frames], blocks[block_frames] = len(_meta_calls(calls)), -(-7 // block_frames)
        assert _marker_reads(calls) == 0  # every marker came from the summary the run left
        assert summarised.tasks == [] and summarised.summary.stages["ingest"].already_done == 2 * blocks[block_frames]
        store = Store(cfg.store, s3_endpoint, mode="r")
        n_markers = sum(len(store.markers(stage, c)) for stage in store.stages_with_markers() for c in CLIPS)
        assert n_markers >= 2 * blocks[block_frames]  # ingest's, and its framing pass's
        _drop_summaries(cfg.store, s3_endpoint)  # as a store written before summaries
        with count_requests() as calls:
            unsummarised = plan_run(cfg)
        assert _marker_reads(calls) == n_markers
        assert _plan_facts(unsummarised) == _plan_facts(summarised)
        with count_requests() as calls:  # that planning summarised the store again
            again = plan_run(cfg)
        assert _marker_reads(calls) == 0 and _plan_facts(again) == _plan_facts(summarised)
    assert counts[1] == counts[2], f"planning requests grow with the blocks: {counts} for {blocks} blocks per clip"


def test_build_shards_plans_from_a_few_requests_per_clip(s3_endpoint):
    meta, plans = {}, {}
    for block in (2, 4):  # 4 and 2 blocks per clip
        url = f"s3://headforge-test/shards-plan{block}/store.zarr"
        make_store(url, subjects=3, frames=8, block=block, storage_options=s3_endpoint)
        opts = BuildOptions([url], "unused", shard_rows=4, val_subjects="0", storage_options=dict(s3_endpoint))
        with count_requests() as calls:
            unsummarised = plan_build(opts, [SourceStore(url, s3_endpoint)])[0]
        assert _marker_reads(calls) == 3 * 6 * (8 // block)  # every marker of the 6 stages
        assert Store(url, s3_endpoint).summarise() == 3
        with count_requests() as calls:
            summarised = plan_build(opts, [SourceStore(url, s3_endpoint)])[0]
        assert _marker_reads(calls) == 0
        assert not any(op == "get_object" and "/_meta/ledger/" in key and "/_plan/" not in key for op, key in calls)
        assert summarised == unsummarised  # rows, view masks and the clips' marker stamps
        meta[block], plans[block] = len(_meta_calls(calls)), summarised
    assert meta[2] == meta[4], f"build-shards planning requests grow with the blocks: {meta}"


@pytest.fixture(params=["local", "s3"])
def ingested(request, tmp_path, small_capture, s3_endpoint):
    """An ingested store (2 clips x 4 blocks) whose run left its summaries, and its config."""
    root, _ = small_capture
    if request.param == "local":
        cfg = ingest_config(str(tmp_path / "store.zarr"), root, resolution=32, block_frames=2)
    else:
        cfg = ingest_config(f"s3://headforge-test/stale-{tmp_path.name}/store.zarr", root, resolution=32,
                            block_frames=2)
        cfg.storage_options = dict(s3_endpoint)
    preprocess(cfg)
    return cfg


def _get(cfg, key: str) -> bytes | None:
    return zarr_keys.get_bytes(Store(cfg.store, cfg.storage_options).zstore, key)


def _put(cfg, key: str, data: bytes) -> None:
    zarr_keys.set_bytes(Store(cfg.store, cfg.storage_options).zstore, key, data)


def test_a_missing_or_corrupt_summary_gives_the_same_plan(ingested):
    cfg = ingested
    reference = _plan_facts(plan_run(cfg))
    assert reference[0] == [] and reference[1]["ingest"] == (8, 8)
    _put(cfg, _summary_key(CLIPS[0]), b'{"zarr_format": 3, "node_type": "gr')  # cut short
    _put(cfg, _summary_key(CLIPS[1]), b'{"zarr_format": 3, "node_type": "group", "attributes": {"summary": '
                                      b'{"version": 99, "stages": {}}}}')  # another summary version
    assert _plan_facts(plan_run(cfg)) == reference
    _drop_summaries(cfg.store, cfg.storage_options)
    assert _plan_facts(plan_run(cfg)) == reference


def test_markers_changed_after_the_summary_are_read_not_trusted(ingested):
    cfg = ingested
    store = Store(cfg.store, cfg.storage_options)
    old_summary = _get(cfg, _summary_key(CLIPS[0]))
    marker_key = f"_meta/markers/ingest/{CLIPS[0]}/b000003/zarr.json"
    finished = _get(cfg, marker_key)

    store.clear_marker("ingest", CLIPS[0], 3)  # deleted after the summary: redone
    plan = plan_run(cfg)
    assert [t.task_id for t in plan.tasks] == [f"ingest:{CLIPS[0]}:3-3"]
    summarised = json.loads(_get(cfg, _summary_key(CLIPS[0])))["attributes"]["summary"]["stages"]["ingest"]
    assert sorted(summarised["markers"]) == ["b000000", "b000001", "b000002"]  # that planning summarised

    _put(cfg, marker_key, finished)  # written after that summary, which lacks it: read, and finished
    assert plan_run(cfg).tasks == []

    # rewritten in place (another config's result) while the old summary still vouches for the old one: a
    # driver killed before it summarised, or software that writes no summaries
    _put(cfg, _summary_key(CLIPS[0]), old_summary)
    marker = store.marker("ingest", CLIPS[0], 2)
    store.write_marker(Marker(**{**marker.__dict__, "fingerprint": "another-config"}))
    with pytest.raises(RefusedError, match=f"ingest {CLIPS[0]}: 1 finished block"):
        plan_run(cfg)
    cfg.runner.recompute = True
    summary = preprocess(cfg)
    assert summary.stages["ingest"].done == 1 and summary.stages["ingest"].already_done == 7
    cfg.runner.recompute = False
    assert plan_run(cfg).tasks == []
