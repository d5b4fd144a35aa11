import numpy as np
import pytest

from datasets.names import InvalidNameError, clip_key, sanitize_name, validate_name
from datasets.store import SCHEMA_VERSION, LedgerItem, Marker, Store, StoreError


def test_names_are_validated_before_becoming_paths():
    for bad in ["../x", "..", ".", "a/b", "", "x y", ".hidden", "a\\b", "x" * 200]:
        with pytest.raises(InvalidNameError):
            validate_name(bad)
    for good in ["017", "EMO-1-shout+laugh", "-Xy_9", "C0_F10-20"]:
        assert validate_name(good) == good
    with pytest.raises(InvalidNameError):
        clip_key("../x", "seq")
    assert sanitize_name("My Video (1)") == "My_Video__1_"


def test_store_refuses_bad_clip_names(tmp_path):
    store = Store(str(tmp_path / "s.zarr"))
    with pytest.raises(InvalidNameError):
        store.create_clip("..", "x", {})
    with pytest.raises(InvalidNameError):
        store.create_clip("a", "../x", {})
    assert not (tmp_path / "x").exists()


def test_markers_ledger_and_clips_round_trip(tmp_path):
    store = Store(str(tmp_path / "s.zarr"))
    assert store.attrs["schema_version"] == SCHEMA_VERSION
    g = store.create_clip("001", "SEQ", {"n_frames": 10, "block_frames": 4, "views": ["a", "b"]})
    arr = store.create_frame_array(g, "x", (10, 2, 3), "float32", 4)
    arr[...] = np.arange(60, dtype=np.float32).reshape(10, 2, 3)
    store.prepare_meta("ingest", "001/SEQ")
    store.write_marker(Marker("ingest", "001/SEQ", 1, "abc", "def", [4, 8]))
    assert store.markers("ingest", "001/SEQ")[1].fingerprint == "abc"
    store.write_block_ledger("ingest", "001/SEQ", 1, [LedgerItem("ingest", "001/SEQ", "bad frame", 5, "a", 1)])
    store.write_plan_ledger("ingest", {"002/OTHER": [LedgerItem("ingest", "002/OTHER", "no frames")]})
    assert {i.reason for i in store.ledger()} == {"bad frame", "no frames"}
    assert store.clips() == ["001/SEQ"]
    # a block is cleared by deleting its shard: its values return to the fill value
    store.clear_block(arr, 1)
    assert (arr[4:8] == 0).all() and (arr[0:4] != 0).any()
    store.clear_marker("ingest", "001/SEQ", 1)
    assert store.markers("ingest", "001/SEQ") == {}
    store.write_block_ledger("ingest", "001/SEQ", 1, [])
    assert [i.reason for i in store.ledger()] == ["no frames"]
    # a marker cut short by a crash reads as absent
    store.write_marker(Marker("ingest", "001/SEQ", 2, "abc", "def"))
    (tmp_path / "s.zarr/_meta/markers/ingest/001/SEQ/b000002/zarr.json").write_text('{"zarr_for')
    assert 2 not in store.markers("ingest", "001/SEQ")


def test_read_only_open_of_a_missing_store_is_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match="no store"):
        Store(str(tmp_path / "missing.zarr"), mode="r")


def test_store_of_another_schema_version_is_refused(tmp_path):
    store = Store(str(tmp_path / "s.zarr"))
    store.update_attrs(schema_version=99)
    with pytest.raises(StoreError, match="schema version 99"):
        Store(str(tmp_path / "s.zarr"))
