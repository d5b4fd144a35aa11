"""build-shards and verify on a store whose every value encodes its (subject, frame, view)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import zarr

import datasets.image_codec  # noqa: F401  (registers the codec for plain zarr)
from datasets.capture.coloured_store import BAD_FIT_FRAME, decode_colour, make_store, usable_items
from datasets.shards.build import BuildOptions, ShardBuildError, build_shards
from datasets.shards.manifest import digest
from datasets.shards.select import SelectionError
from datasets.shards.verify import verify_shards
from datasets.store import Store


@pytest.fixture(scope="module")
def store_url(tmp_path_factory):
    url = str(tmp_path_factory.mktemp("src") / "store.zarr")
    make_store(url)
    return url


def _build(store_url, out, **kw):
    kw.setdefault("shard_rows", 4)
    kw.setdefault("val_subjects", "0")
    return build_shards(BuildOptions([store_url], str(out), **kw))


def _rows(out: str, split: str = "train"):
    """(subject, frame, view) of every usable view of every row, read back with plain zarr."""
    g = zarr.open_group(f"{out}/{split}", mode="r")
    items = []
    for r in range(g["rgb"].shape[0]):
        for v in np.flatnonzero(g["view_ok"][r]):
            s, t, slot, kind = decode_colour(g["rgb"][r, v])
            assert (slot, kind) == (v, 0)
            assert g["frame"][r] == t and g["lmk2d"][r, v, 0, 2] == v and g["pose"][r, 0, 3] == s
            items.append((s, t, int(v)))
    return items, g


def test_rows_hold_exactly_the_usable_items_byte_for_byte(store_url, tmp_path):
    result = _build(store_url, tmp_path / "s", holdout_views="cam03")
    items, g = _rows(str(tmp_path / "s"))
    assert sorted(items) == sorted(usable_items()) and len(items) == len(set(items))
    assert (BAD_FIT_FRAME[0], BAD_FIT_FRAME[1], 0) not in items
    # the images are the store's encoded bytes, not re-encoded: identical pixels, PNG kept
    src = Store(store_url, mode="r")
    clip = result.manifest.doc["clips"][int(g["clip"][0])]["clip"]
    t = int(g["frame"][0])
    ok = g["view_ok"][0][:, None, None, None]
    np.testing.assert_array_equal(g["face_crop"][0], src.clip(clip)["face_crop"][t] * ok)
    np.testing.assert_array_equal(g["synth"][0], src.clip(clip)["synth"][t])
    for name in ("alpha", "face_mask"):  # mattes are re-encoded losslessly (zstd): same values
        np.testing.assert_array_equal(g[name][0], src.clip(clip)[name][t] * g["view_ok"][0][:, None, None])
    np.testing.assert_array_equal(g["K"][0], src.clip(clip)["cameras/K"][:])
    # held-out camera flagged, counts agree with the rows
    assert g["heldout"][:, 3].all() and not g["heldout"][:, :3].any()
    counts = result.manifest.split("train")["counts"]
    assert counts["all"]["views"] == len(items)
    assert counts["heldout"]["views"] == sum(1 for i in items if i[2] == 3)
    assert counts["train"]["rows"] == len({(s, t) for s, t, _ in items})
    # rows are shuffled across subjects: the first shard is not one subject
    assert len(set(g["identity"][:4].tolist())) > 1
    # every object is where the manifest says, with its digest
    for shard in result.manifest.shards("train"):
        for obj in shard["objects"].values():
            with open(tmp_path / "s" / obj["key"], "rb") as f:
                assert digest(f.read()) == obj["sha256"]
    doc = result.manifest.doc
    assert doc["schema_version"] == 1 and doc["sources"][0]["url"] == store_url
    assert doc["sources"][0]["sources"][0]["licence"] == "test data"


def test_split_by_subject_and_identity_index(store_url, tmp_path):
    result = _build(store_url, tmp_path / "s", val_subjects="001")
    m = result.manifest
    assert m.split("val")["subjects"] == ["nersemble/001"]
    assert m.split("train")["subjects"] == ["nersemble/000", "nersemble/002"]
    train, g = _rows(str(tmp_path / "s"), "train")
    val, _ = _rows(str(tmp_path / "s"), "val")
    assert {s for s, _, _ in train} == {0, 2} and {s for s, _, _ in val} == {1}
    assert sorted(train + val) == sorted(usable_items())
    for r in range(g["identity"].shape[0]):  # identity indexes the split's subject list
        assert m.split("train")["subjects"][g["identity"][r]] == f"nersemble/{int(g['pose'][r, 0, 3]):03d}"
    with pytest.raises(SelectionError, match="not in the stores"):
        _build(store_url, tmp_path / "x", val_subjects="001,nobody")


def test_interrupted_build_resumes_to_the_same_shard_set(store_url, tmp_path):
    whole = _build(store_url, tmp_path / "whole").manifest
    first = build_shards(BuildOptions([store_url], str(tmp_path / "part"), shard_rows=4, val_subjects="0",
                                      threads=1), stop_after=2)
    assert first.written == 2 and not os.path.exists(tmp_path / "part" / "manifest.json")
    with pytest.raises(Exception, match="no shard set"):
        verify_shards(str(tmp_path / "part"))
    second = _build(store_url, tmp_path / "part")
    assert second.skipped == 2 and second.written == len(whole.shards("train")) - 2
    objects = lambda m: [s["objects"] for s in m.shards("train")]  # noqa: E731
    assert objects(second.manifest) == objects(whole)
    again = _build(store_url, tmp_path / "part")
    assert again.written == 0


def test_other_options_are_refused_unless_overwrite(store_url, tmp_path):
    _build(store_url, tmp_path / "s", val_subjects="001")
    with pytest.raises(ShardBuildError, match="--overwrite"):
        _build(store_url, tmp_path / "s", seed=5)
    result = _build(store_url, tmp_path / "s", seed=5, overwrite=True)
    assert result.manifest.doc["options"]["seed"] == 5 and verify_shards(str(tmp_path / "s")).ok
    assert result.manifest.splits == ["train"] and not os.path.exists(tmp_path / "s" / "val")  # old split gone


def test_store_without_fitting_gives_one_clear_error(tmp_path):
    url = str(tmp_path / "unfitted.zarr")
    make_store(url, subjects=1, fitted=False)
    with pytest.raises(SelectionError, match=r"(?s)no usable frames.*missing.*fit/pose.*stage fitting"):
        _build(url, tmp_path / "s")


def test_verify_reports_flipped_byte_and_missing_shard(store_url, tmp_path):
    out = tmp_path / "s"
    m = _build(store_url, out).manifest
    assert verify_shards(str(out)).ok
    rgb = m.shards("train")[1]["objects"]["rgb"]
    with open(out / rgb["key"], "r+b") as f:
        f.seek(rgb["bytes"] // 2)
        byte = f.read(1)
        f.seek(rgb["bytes"] // 2)
        f.write(bytes([byte[0] ^ 0x10]))
    os.remove(out / m.shards("train")[2]["objects"]["lmk3d"]["key"])
    report = verify_shards(str(out))
    assert report.bad_shards() == [("train", 1), ("train", 2)]
    kinds = {(p.shard, p.array): p.kind for p in report.problems}
    assert kinds == {(1, "rgb"): "corrupt", (2, "lmk3d"): "missing"}


def test_cli_build_and_verify(store_url, tmp_path):
    from typer.testing import CliRunner

    from cli import app

    out = str(tmp_path / "s")
    res = CliRunner().invoke(app, ["build-shards", store_url, "--out", out, "--shard-rows", "4",
                                   "--val-subjects", "1", "--holdout-views", "1"])
    assert res.exit_code == 0, res.output
    assert "train:" in res.output and "val:" in res.output
    assert CliRunner().invoke(app, ["verify", out]).exit_code == 0
    with open(os.path.join(out, "manifest.json")) as f:
        manifest = json.load(f)
    key = manifest["splits"]["train"]["shards"][0]["objects"]["alpha"]["key"]
    os.remove(os.path.join(out, key))
    res = CliRunner().invoke(app, ["verify", out])
    assert res.exit_code == 1 and "missing" in res.output and "train/0" in res.output


def test_a_store_changed_since_the_build_is_not_mixed_into_it(tmp_path):
    from datasets.store import Marker

    url = str(tmp_path / "store.zarr")
    store = make_store(url, subjects=2, frames=4)
    first = _build(url, tmp_path / "s")
    assert _build(url, tmp_path / "s").written == 0  # unchanged store: nothing to redo
    store.write_marker(Marker("crops", "000/SEQ-0", 0, "test", "test", [0, 4], finished="redone"))
    with pytest.raises(ShardBuildError, match="other stores or options"):
        _build(url, tmp_path / "s")
    again = _build(url, tmp_path / "s", overwrite=True)
    assert again.skipped == 0 and again.written == len(first.manifest.shards("train"))


def test_dask_workers_finish_a_build_to_the_same_shard_set_as_threads(store_url, tmp_path):
    """`build-shards --workers 2`: one Dask task per shard, resuming a threaded build's done records; the
    shard objects are byte for byte the threaded build's (same digests in the manifest)."""
    from typer.testing import CliRunner

    from cli import app

    threaded = _build(store_url, tmp_path / "threads").manifest
    out = tmp_path / "dask"
    first = build_shards(BuildOptions([store_url], str(out), shard_rows=4, val_subjects="0", threads=1),
                         stop_after=2)
    assert first.written == 2
    res = CliRunner().invoke(app, ["build-shards", store_url, "--out", str(out), "--shard-rows", "4",
                                   "--val-subjects", "0", "--workers", "2"])
    assert res.exit_code == 0, res.output
    n = len(threaded.shards("train"))
    assert f"({n - 2} shards now, 2 from before)" in res.output
    with open(out / "manifest.json") as f:
        manifest = json.load(f)
    assert manifest["splits"]["train"]["shards"] == threaded.shards("train")  # digests, counts, rows
    assert verify_shards(str(out)).ok
    with pytest.raises(SelectionError, match="not both"):
        BuildOptions([store_url], str(out), workers=2, scheduler="tcp://127.0.0.1:1")
