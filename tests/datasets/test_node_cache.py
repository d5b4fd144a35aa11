"""Remote traffic of streaming a shard set from S3 (moto, every request counted): with 2 simulated nodes
each node fetches only its half of the shards (plus at most one boundary shard), the same half the next
epoch; 4 loader processes on one machine download each object once."""

from __future__ import annotations

from collections import Counter

import pytest

from datasets.capture.coloured_store import make_store
from datasets.local_s3 import RequestLog, local_s3
from datasets.shards.build import BuildOptions, build_shards
from datasets.streaming import ShardDataset, StreamingLoader

BUCKET = "headforge-nodes"


@pytest.fixture(scope="module")
def remote(tmp_path_factory):
    """(url, storage options, request log, {object path on the server: shard index})."""
    root = tmp_path_factory.mktemp("nodes")
    make_store(str(root / "store.zarr"), subjects=3, frames=8, views=4)
    log = RequestLog()
    with local_s3(BUCKET, log) as options:
        url = f"s3://{BUCKET}/shards"
        build_shards(BuildOptions([str(root / "store.zarr")], url, shard_rows=2, val_subjects="0",
                                  storage_options=options))
        manifest = ShardDataset(url, storage_options=options, cache_dir=str(root / "probe")).manifest
        shard_of = {f"/{BUCKET}/shards/{key}": sh["index"] for sh in manifest.shards("train")
                    for key in _keys(sh)}
        yield url, options, log, shard_of


def _keys(entry) -> list[str]:
    if isinstance(entry, dict):
        own = [entry["key"]] if isinstance(entry.get("key"), str) else []
        return own + [k for v in entry.values() for k in _keys(v)]
    if isinstance(entry, list):
        return [k for v in entry for k in _keys(v)]
    return []


def _fetched(log: RequestLog, shard_of: dict) -> Counter:
    """GETs of shard objects since the last reset: {object path: count}."""
    return Counter({p: n for (m, p), n in log.requests.items() if m == "GET" and p in shard_of})


def _node_epoch(url, options, cache, node, epoch, nodes=2):
    ds = ShardDataset(url, storage_options=options, cache_dir=cache, rank=node, world_size=nodes, nodes=nodes,
                      batch_size=2, seed=3, block_shards=2, decode_threads=1)
    ds.set_epoch(epoch)
    for _ in ds:
        pass
    return ds


def test_two_nodes_each_fetch_their_half_and_the_same_half_next_epoch(remote, tmp_path):
    url, options, log, shard_of = remote
    n_shards = len(set(shard_of.values()))
    halves = []
    for node in range(2):
        per_epoch = []
        for epoch in range(2):
            log.reset()  # a fresh cache every epoch: what the node fetches is what it reads
            ds = _node_epoch(url, options, str(tmp_path / f"cache-{node}-{epoch}"), node, epoch)
            shards = {shard_of[p] for p in _fetched(log, shard_of)}
            assert shards == set(ds.order(epoch).node_shards(node))
            assert len(shards) <= n_shards // 2 + 1
            per_epoch.append(shards)
        assert per_epoch[0] == per_epoch[1]
        halves.append(per_epoch[0])
    assert halves[0] | halves[1] == set(range(n_shards)) and len(halves[0] & halves[1]) <= 1


def test_four_loader_processes_download_each_object_once(remote, tmp_path):
    url, options, log, shard_of = remote
    log.reset()
    ds = ShardDataset(url, storage_options=options, cache_dir=str(tmp_path / "cache"), batch_size=2, seed=1,
                      block_shards=8, decode_threads=2)
    batches = sum(1 for _ in StreamingLoader(ds, num_workers=4))
    assert batches == len(ds)
    fetched = _fetched(log, shard_of)
    assert {shard_of[p] for p in fetched} == set(shard_of.values())  # every shard was read
    assert max(fetched.values()) == 1, {p: n for p, n in fetched.items() if n > 1}
