"""Equal work per rank and node-aware shard partitioning (datasets/shards/order.py, datasets/streaming.py):
over many (shards, nodes, ranks, workers, batch, drop_last) cases every rank gets the same number of
samples and batches, every sample comes once per epoch apart from the flagged padding, a node reads only
its own shards (the same ones every epoch), and a resume yields exactly what was left."""

from __future__ import annotations

import numpy as np
import pytest

from datasets.shards.order import (
    EpochOrder,
    padded_length,
    rank_positions,
    worker_batches,
)
from datasets.streaming import PositionalStream, StreamingLoader


def _rank_stream(order: EpochOrder, world: int, nodes: int, rank: int, workers: int, batch: int,
                 drop_last: bool, start: int = 0) -> list[list[int]]:
    """The batches a rank sees, in the order torch's DataLoader hands them out (round-robin over workers)."""
    total = padded_length(order.node_length, world, nodes)
    positions = rank_positions(total, start, rank, world, nodes)
    per_worker = [worker_batches(positions, batch, w, max(1, workers), drop_last) for w in range(max(1, workers))]
    out, j = [], 0
    while any(j < len(b) for b in per_worker):
        for b in per_worker:
            if j < len(b):
                out.append(list(b[j]))
        j += 1
    return out


def _cases(n_cases: int = 300):
    rng = np.random.default_rng(1234)
    for _ in range(n_cases):
        shards = int(rng.integers(1, 9))
        counts = rng.integers(0, 12, size=shards)
        if counts.sum() == 0:
            counts[0] = 1
        nodes = int(rng.choice([1, 2, 3, 4]))
        per_node = int(rng.choice([1, 2, 3]))
        yield (counts, nodes, nodes * per_node, int(rng.integers(0, 4)), int(rng.choice([1, 2, 3, 8])),
               bool(rng.integers(0, 2)), int(rng.integers(0, 5)))


def test_the_issue_examples_give_equal_batches():
    for n, world, batch in ((1017, 8, 8), (1, 2, 1)):
        order = EpochOrder([n], seed=0, epoch=0)
        counts = {len(_rank_stream(order, world, 1, r, 0, batch, True)) for r in range(world)}
        assert len(counts) == 1 and counts.pop() >= 1


@pytest.mark.parametrize("case", list(_cases()))
def test_equal_work_every_sample_once_and_exact_resume(case):
    counts, nodes, world, workers, batch, drop_last, seed = case
    order = EpochOrder(counts, seed=seed, epoch=3, block_shards=2, nodes=nodes)
    streams = [_rank_stream(order, world, nodes, r, workers, batch, drop_last) for r in range(world)]
    assert len({len(s) for s in streams}) == 1  # equal batch counts on every rank
    assert len({sum(map(len, s)) for s in streams}) == 1  # equal sample counts
    assert all(len(b) == batch for s in streams for b in s[:-1])
    positions = [p for s in streams for b in s for p in b]
    assert len(positions) == len(set(positions))
    real = [order.locate(p) for p in positions if not order.is_padding(p)]
    everything = [(k, i) for k, c in enumerate(counts) for i in range(c)]
    assert len(real) == len(set(real))  # no sample twice, apart from the padding
    if not drop_last:
        assert sorted(real) == everything
    else:  # only the last, short batch of each rank is dropped
        assert len(everything) - len(real) < world * batch
    for p in positions:  # padding repeats a real sample
        shard, item = order.locate(p)
        assert 0 <= item < counts[shard]
    # resume after k lock-step batches: the ranks' rest is exactly what an uninterrupted epoch had left
    k = len(streams[0]) // 2
    start = k * batch * world
    for r in range(world):
        rest = _rank_stream(order, world, nodes, r, workers, batch, drop_last, start=start)
        assert [p for b in rest for p in b] == [p for b in streams[r][k:] for p in b]


@pytest.mark.parametrize("nodes", [2, 4])
def test_a_node_reads_its_own_shards_and_the_same_ones_every_epoch(nodes):
    counts = [10] * 40
    seen = []
    for epoch in range(3):
        order = EpochOrder(counts, seed=5, epoch=epoch, block_shards=4, nodes=nodes)
        per_node = [set() for _ in range(nodes)]
        sequence = []
        for p in range(len(order)):
            shard, item = order.locate(p)
            per_node[p % nodes].add(shard)
            sequence.append((shard, item))
        assert all(len(s) <= 40 // nodes + 1 for s in per_node)  # its share, plus one boundary shard
        assert all(per_node[i] == set(order.node_shards(i)) for i in range(nodes))
        seen.append((per_node, sequence))
    assert seen[0][0] == seen[1][0] == seen[2][0]  # the same shards epoch after epoch
    assert seen[0][1] != seen[1][1]  # in a new order


def test_one_node_keeps_the_order_it_always_had():
    """With one node the order is the plain shuffle of shards, blocks and samples (generator keys
    (seed, epoch, salt[, block])), so checkpoints of earlier runs resume into the same order."""
    from datasets.shards.order import SALT_BLOCK, SALT_SHARDS

    counts = np.array([3, 0, 5, 7, 2, 9, 1])
    order = EpochOrder(counts, seed=7, epoch=3, block_shards=2)
    shards = np.random.default_rng([7, 3, SALT_SHARDS]).permutation(len(counts))
    expected = []
    for b, start in enumerate(range(0, len(counts), 2)):
        block = shards[start:start + 2]
        items = [(int(k), i) for k in block for i in range(counts[k])]
        perm = np.random.default_rng([7, 3, SALT_BLOCK, b]).permutation(len(items))
        expected += [items[j] for j in perm]
    assert [order.locate(p) for p in range(len(order))] == expected


class _Numbers(PositionalStream):
    """An in-memory stream of n numbered samples, for the real iteration code without shards."""

    def __init__(self, n: int, **kw):
        super().__init__(seed=0, prefetch=2, decode_threads=1, repeat=False, **kw)
        self.n = n

    def epoch_length(self, epoch: int) -> int:
        return self.n

    def _value(self, epoch: int, position: int) -> int:
        q = position // self.nodes % self.node_length(epoch)
        return q * self.nodes + position % self.nodes

    def is_padding(self, epoch: int, position: int) -> bool:
        return super().is_padding(epoch, position) or self._value(epoch, position) >= self.n

    def fetch(self, epoch: int, position: int) -> dict[str, np.ndarray]:
        return {"value": np.int64(self._value(epoch, position) % self.n)}

    def content_id(self) -> str:
        return f"numbers:{self.n}"


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_batches_are_equal_per_rank_and_padding_is_flagged(workers):
    n, world, batch = 11, 4, 2  # 2 nodes x 2 ranks: 3 samples each, 12 in all, one of them repeated
    got = []
    for rank in range(world):
        ds = _Numbers(n, batch_size=batch, drop_last=False, rank=rank, world_size=world, nodes=2)
        batches = list(StreamingLoader(ds, num_workers=workers))
        assert len(batches) == len(ds) == 2
        got += [(int(v), bool(f)) for b in batches for v, f in zip(b["value"], b["padding"], strict=True)]
    real = sorted(v for v, pad in got if not pad)
    assert len(got) == 12 and real == list(range(n))
