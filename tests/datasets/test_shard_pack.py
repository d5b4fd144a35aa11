"""The pack of a shard's raw arrays (one object instead of one per array), the shard's objects fetched in
parallel, and the manifest's clip index: same samples with or without the pack, few requests to open a
remote shard (counted on moto S3), verify checking the pack, and an index that matches every row."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import zarr

from datasets.capture.coloured_store import make_store
from datasets.local_s3 import RequestLog, local_s3
from datasets.shards.build import BuildOptions, build_shards
from datasets.shards.manifest import ClipRow, Manifest, digest
from datasets.shards.pack import pack_key
from datasets.shards.reader import PACK, ShardCorruptError, ShardReader
from datasets.shards.verify import verify_shards
from datasets.streaming import ShardDataset

OPTIONS = {"shard_rows": 3, "val_subjects": "1", "holdout_views": "cam03"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    url = str(tmp_path_factory.mktemp("pack") / "store.zarr")
    make_store(url, subjects=3, frames=8, views=4)
    return url


@pytest.fixture(scope="module")
def shards(store):
    out = os.path.join(os.path.dirname(store), "shards")
    build_shards(BuildOptions([store], out, **OPTIONS))
    return out


def _without(shards: str, out: str, *keys: str) -> str:
    """A copy of the shard set whose manifest lacks `keys` ("pack" per shard, "clip_index"): as built before."""
    shutil.copytree(shards, out)
    path = os.path.join(out, "manifest.json")
    with open(path) as f:
        doc = json.load(f)
    for key in keys:
        doc.pop(key, None)
        for split in doc["splits"].values():
            for shard in split["shards"]:
                shard.pop(key, None)
    with open(path, "wb") as f:
        f.write(Manifest(doc).dumps())
    return out


def _raw_names(m: Manifest) -> list[str]:
    return [n for n, spec in m.arrays.items() if spec["kind"] == "raw"]


def _samples(url: str, sample: str) -> list[dict]:
    ds = ShardDataset(url, split="train", sample=sample, use="all", views=2, seed=3, block_shards=2,
                      decode_threads=1, prefetch=0)
    return [{k: v.numpy() for k, v in s.items()} for s in ds]


def test_pack_holds_the_raw_chunks_byte_for_byte(shards):
    reader = ShardReader(shards)
    m = reader.manifest
    names = _raw_names(m)
    for split in m.splits:
        group = zarr.open_group(f"{shards}/{split}", mode="r")
        S = m.shard_rows
        for entry in m.shards(split):
            k, pack = entry["index"], entry["pack"]
            assert pack["key"] == pack_key(split, k) and list(pack["arrays"]) == names
            with open(os.path.join(shards, pack["key"]), "rb") as f:
                data = f.read()
            assert digest(data) == pack["sha256"] and len(data) == pack["bytes"]
            for name in names:
                offset, nbytes = pack["arrays"][name]
                assert digest(data[offset:offset + nbytes]) == entry["objects"][name]["sha256"]
            rows = slice(k * S, k * S + entry["rows"])
            opened = reader.shard(split, k)
            packed = reader.raw_arrays(split, k, names)
            for name in names:  # the reader's arrays are plain zarr's per-array chunks
                np.testing.assert_array_equal(opened.raw[name], group[name][rows])
                np.testing.assert_array_equal(packed[name], group[name][rows])
                assert opened.raw[name].dtype == group[name].dtype


def test_same_samples_with_and_without_the_pack(shards, tmp_path):
    old = _without(shards, str(tmp_path / "old"), "pack", "clip_index")
    assert "pack" not in ShardReader(old).manifest.shards("train")[0]
    for sample in ("stage1", "stage2"):
        new, before = _samples(shards, sample), _samples(old, sample)
        assert len(new) == len(before) > 0
        for a, b in zip(new, before, strict=True):
            assert a.keys() == b.keys()
            for key in a:
                np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert verify_shards(old).ok
    # with the pack, the raw arrays' own objects are not read at all
    packed_only = str(tmp_path / "packed_only")
    shutil.copytree(shards, packed_only)
    m = ShardReader(shards).manifest
    for entry in m.shards("train"):
        for name in _raw_names(m):
            os.remove(os.path.join(packed_only, entry["objects"][name]["key"]))
    assert len(_samples(packed_only, "stage1")) == len(_samples(shards, "stage1"))


def test_verify_checks_the_pack(shards, tmp_path):
    out = str(tmp_path / "s")
    shutil.copytree(shards, out)
    assert verify_shards(out).ok
    m = ShardReader(out).manifest
    report = verify_shards(out)
    assert report.objects == sum(len(s["objects"]) + 1 for sp in m.splits for s in m.shards(sp))
    pack = m.shards("train")[1]["pack"]
    path = os.path.join(out, pack["key"])
    with open(path, "r+b") as f:
        f.seek(5)
        byte = f.read(1)
        f.seek(5)
        f.write(bytes([byte[0] ^ 4]))
    problems = verify_shards(out).problems
    assert [(p.shard, p.array, p.kind) for p in problems] == [(1, PACK, "corrupt")]
    with pytest.raises(ShardCorruptError, match=r"sha256 .* differs"):
        ShardReader(out, validate=True).shard("train", 1)
    # a pack that matches its own digest but not the arrays it copies (a manifest edited to fit it)
    with open(path, "rb") as f:
        pack["sha256"] = digest(f.read())
    with open(os.path.join(out, "manifest.json"), "wb") as f:
        f.write(m.dumps())
    problems = verify_shards(out).problems
    assert len(problems) == 1 and "differs from the array object" in problems[0].detail
    os.remove(path)
    assert [(p.shard, p.kind) for p in verify_shards(out).problems] == [(1, "missing")]


def test_a_pack_entry_that_does_not_fit_is_refused(shards, tmp_path):
    out = str(tmp_path / "s")
    shutil.copytree(shards, out)
    reader = ShardReader(out)
    reader.manifest.shards("train")[0]["pack"]["arrays"]["pose"][1] += 4
    with pytest.raises(ShardCorruptError, match=r"pose at .* expected 192 bytes"):
        reader.shard("train", 0)


def test_clip_index_matches_every_row(shards, tmp_path):
    m = ShardReader(shards).manifest
    S = m.shard_rows
    seen = {}
    for split in m.splits:
        group = zarr.open_group(f"{shards}/{split}", mode="r")
        clip, frame, view_ok = group["clip"][:], group["frame"][:], group["view_ok"][:]
        for c, entry in m.doc["clip_index"][split].items():
            assert m.doc["clips"][int(c)]["split"] == split
            assert entry["frames"] == sorted(entry["frames"])
            for t, k, r in zip(entry["frames"], entry["shards"], entry["rows"], strict=True):
                assert r < m.shards(split)[k]["rows"]
                g = k * S + r
                assert (int(clip[g]), int(frame[g])) == (int(c), t) and view_ok[g].any()
                assert (split, g) not in seen
                seen[(split, g)] = (int(c), t)
        assert sum(1 for s, _ in seen if s == split) == m.split(split)["rows"]  # every row once
    for c in range(len(m.doc["clips"])):
        rows = m.clip_rows(c)
        assert rows and all(isinstance(r, ClipRow) for r in rows)
        assert {(r.split, r.shard * S + r.row) for r in rows} == {key for key, v in seen.items() if v[0] == c}
    assert m.clip_rows(len(m.doc["clips"])) == []
    old = ShardReader(_without(shards, str(tmp_path / "old"), "clip_index")).manifest
    assert old.clip_rows(0) is None and not old.has_clip_index


def _open_remote(url: str, opts: dict, log: RequestLog, cache: str, pack: bool, threads: int) -> dict:
    """{(method, path): n} of the S3 requests made to open shard 0 of the training split, cold cache."""
    reader = ShardReader(url, storage_options=opts, cache_dir=cache, fetch_threads=threads)
    if not pack:  # as a manifest built before packs
        for entry in reader.manifest.shards("train"):
            entry.pop("pack")
    log.reset()
    shard = reader.shard("train", 0)
    assert shard.raw["pose"].shape[0] == shard.rows
    return dict(log.requests)


@pytest.fixture(scope="module")
def remote(store):
    """The shard set on a moto S3 server of its own, with a request log: (url, storage options, log)."""
    log = RequestLog()
    with local_s3("headforge-pack", log) as opts:
        url = "s3://headforge-pack/shards"
        build_shards(BuildOptions([store], url, storage_options=opts, **OPTIONS))
        yield url, opts, log


def test_opening_a_remote_shard_costs_a_few_requests(remote, tmp_path):
    url, opts, log = remote
    m = ShardReader(url, storage_options=opts).manifest
    entry = m.shards("train")[0]
    images = [n for n in entry["objects"] if m.arrays[n]["kind"] != "raw"]
    before = _open_remote(url, opts, log, str(tmp_path / "c1"), pack=False, threads=1)
    after = _open_remote(url, opts, log, str(tmp_path / "c2"), pack=True, threads=8)
    print(f"requests to open one remote shard: per-array objects {sum(before.values())}, "
          f"pack + parallel {sum(after.values())}")
    assert sum(before.values()) == len(entry["objects"]) >= 15
    assert len(after) <= len(images) + 1 + 1
    expected = {("GET", f"/headforge-pack/shards/{entry['objects'][n]['key']}") for n in images}
    assert after == dict.fromkeys(expected | {("GET", f"/headforge-pack/shards/{entry['pack']['key']}")}, 1)
    # raw_arrays: one request, the pack
    reader = ShardReader(url, storage_options=opts, cache_dir=str(tmp_path / "c3"))
    log.reset()
    reader.raw_arrays("train", 1, ["pose", "view_ok"])
    assert dict(log.requests) == {("GET", f"/headforge-pack/shards/{m.shards('train')[1]['pack']['key']}"): 1}


def test_remote_samples_match_local(remote, shards, tmp_path):
    url, opts, _ = remote
    ds = ShardDataset(url, split="train", sample="stage1", use="all", views=2, seed=3, block_shards=2,
                      decode_threads=1, prefetch=0, storage_options=opts, cache_dir=str(tmp_path / "cache"),
                      validate=True)
    local = _samples(shards, "stage1")
    got = [{k: v.numpy() for k, v in s.items()} for s in ds]
    assert len(got) == len(local)
    for a, b in zip(got, local, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
