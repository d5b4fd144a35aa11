"""The sample order of an epoch: a pure function of (seed, epoch, nodes, per-shard sample counts).

Nodes. The samples of the shard set, taken shard by shard in index order, are cut into `nodes` contiguous
ranges of (nearly) equal size; node i reads only the shards of its range (a shard at a boundary is shared
by two nodes), and keeps them from epoch to epoch, so a node's shard cache settles and remote traffic per
epoch is about one copy of the data set, not one per node. With one node this is the whole set.

Within a node: its shard segments are permuted with (seed, epoch[, node]), cut into blocks of
`block_shards` consecutive segments, and the samples of each block are permuted with (seed, epoch, block
[, node]). A reader needs only one block of shards at a time. The node index joins the generator keys only
when there are several nodes, so a one-node order is what it always was.

Global positions interleave the nodes: position p is sample q = p // nodes of node p % nodes. A node's
stream has `node_length` = ceil(n / nodes) positions; one that holds fewer samples repeats its own from
the start (padding, `is_padding`), so every node does the same work.

Work split (`rank_positions`): rank r = node * L + local (torchrun's numbering, L ranks per node) takes
the positions p = start + (local * nodes + node) + j * R, i.e. every L-th sample of its own node's stream.
The stream is padded (repeated) up to a multiple of L, so every rank has exactly the same number of
positions, hence batches, whatever n, R and drop_last are: no rank waits for another at the end of an
epoch. A rank's positions are grouped into batches, and batch j of a rank goes to loader worker j mod W;
torch's DataLoader takes batches from its workers round-robin, so every rank sees its positions in
global order whatever W is. `start` (where a resumed epoch picks up) is a multiple of R after lock-step
training, so a resume sees exactly the positions an uninterrupted run had left.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

SALT_SHARDS, SALT_BLOCK = 0x5EED, 0xB10C


def epoch_key(epoch: int | tuple[int, ...]) -> tuple[int, ...]:
    """An epoch as generator entropy: an int, or a tuple (a mixture's component epochs)."""
    return tuple(int(e) for e in epoch) if isinstance(epoch, tuple) else (int(epoch),)


@dataclass(frozen=True)
class Segment:
    """Samples [lo, hi) of one shard (in the shard's canonical item order)."""
    shard: int
    lo: int
    hi: int


def node_segments(counts: np.ndarray, nodes: int) -> list[list[Segment]]:
    """The shard segments of each node: samples cut into `nodes` contiguous ranges, node i holding
    [ceil(i n / nodes), ceil((i + 1) n / nodes)) of the samples in shard-index order. Fixed for a shard
    set and node count (no epoch): a node sees the same shards every epoch. Shards without samples go to
    the node where they would start (they matter only for the one-node block layout)."""
    n = int(counts.sum())
    bounds = [-(-i * n // nodes) for i in range(nodes + 1)]
    out: list[list[Segment]] = [[] for _ in range(nodes)]
    offset = 0
    for k, c in enumerate(counts.tolist()):
        if c == 0:
            node = max(i for i in range(nodes) if bounds[i] <= offset) if n else 0
            out[min(node, nodes - 1)].append(Segment(k, 0, 0))
        for i in range(nodes):
            lo, hi = max(bounds[i], offset), min(bounds[i + 1], offset + c)
            if lo < hi:
                out[i].append(Segment(k, lo - offset, hi - offset))
        offset += c
    return out


class _NodeOrder:
    """One node's samples in one epoch's order: q -> (shard, item) for q < len(self)."""

    def __init__(self, segments: list[Segment], key: list[int], suffix: list[int], shuffle: bool, block_shards: int):
        self.key, self.suffix, self.shuffle = key, suffix, shuffle  # generator keys: key + salt + suffix
        n = len(segments)
        order = np.random.default_rng([*key, SALT_SHARDS, *suffix]).permutation(n) if shuffle else np.arange(n)
        self.blocks = [[segments[i] for i in order[b:b + block_shards]] for b in range(0, n, block_shards)]
        sizes = np.array([sum(s.hi - s.lo for s in b) for b in self.blocks], np.int64)
        self.block_start = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)  # [n_blocks + 1]
        self._perms: OrderedDict[int, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return int(self.block_start[-1])

    def _block_perm(self, b: int) -> np.ndarray:
        if b not in self._perms:
            size = int(self.block_start[b + 1] - self.block_start[b])
            if self.shuffle:
                rng = np.random.default_rng([*self.key, SALT_BLOCK, b, *self.suffix])
                self._perms[b] = rng.permutation(size)
            else:
                self._perms[b] = np.arange(size)
            while len(self._perms) > 4:
                self._perms.popitem(last=False)
        self._perms.move_to_end(b)
        return self._perms[b]

    def locate(self, q: int) -> tuple[int, int]:
        b = int(np.searchsorted(self.block_start, q, side="right") - 1)
        j = int(self._block_perm(b)[q - self.block_start[b]])
        segments = self.blocks[b]
        ends = np.cumsum([s.hi - s.lo for s in segments])
        i = int(np.searchsorted(ends, j, side="right"))
        seg = segments[i]
        return seg.shard, seg.lo + j - int(ends[i] - (seg.hi - seg.lo))


class EpochOrder:
    """Global position -> (shard, item within shard) for one epoch on `nodes` nodes."""

    def __init__(self, counts: list[int] | np.ndarray, seed: int, epoch: int | tuple[int, ...], *, shuffle: bool = True,
                 block_shards: int = 4, nodes: int = 1):
        self.counts = np.asarray(counts, np.int64)  # [n_shards] samples per shard
        if nodes < 1:
            raise ValueError(f"nodes must be at least 1, got {nodes}")
        self.seed, self.epoch, self.shuffle, self.nodes = int(seed), epoch, shuffle, int(nodes)
        self.block_shards = max(1, int(block_shards))
        self.n = int(self.counts.sum())
        self.node_length = -(-self.n // self.nodes)  # positions of every node's stream
        self.segments = node_segments(self.counts, self.nodes)
        self._streams: dict[int, _NodeOrder] = {}
        self._lock = threading.Lock()  # loader threads share one order

    def __len__(self) -> int:
        """Positions of the epoch: every node's stream, padded to the longest."""
        return self.nodes * self.node_length

    def node_samples(self, node: int) -> int:
        """Real (unpadded) samples of `node`'s stream."""
        return sum(s.hi - s.lo for s in self.segments[node])

    def node_shards(self, node: int) -> list[int]:
        """The shards a node reads (the same every epoch)."""
        return [s.shard for s in self.segments[node] if s.hi > s.lo]

    def _stream(self, node: int) -> _NodeOrder:
        if node not in self._streams:
            suffix = [node] if self.nodes > 1 else []  # one node: the keys it always had
            self._streams[node] = _NodeOrder(self.segments[node], [self.seed, *epoch_key(self.epoch)], suffix,
                                             self.shuffle, self.block_shards)
        return self._streams[node]

    def _node_and_sample(self, position: int) -> tuple[int, int, bool]:
        if position < 0:
            raise IndexError(f"position {position} outside the epoch")
        node, q = position % self.nodes, position // self.nodes
        real = self.node_samples(node)
        if real == 0:  # fewer samples than nodes: this node repeats node 0's
            return 0, q % max(1, self.node_samples(0)), True
        return node, q % real, q >= real

    def is_padding(self, position: int) -> bool:
        """A repeated sample (the node's stream, padded to equal work), not counted by evaluation."""
        return self._node_and_sample(position)[2]

    def locate(self, position: int) -> tuple[int, int]:
        """(shard index, sample index inside that shard) of an epoch position (padding included: a padded
        position gives the repeated sample)."""
        if self.n == 0:
            raise IndexError("the epoch has no samples")
        node, q, _ = self._node_and_sample(position)
        with self._lock:
            return self._stream(node).locate(q)


def _split(rank: int, world: int, nodes: int) -> tuple[int, int, int]:
    """-> (node, local rank, ranks per node) of a rank in torchrun's numbering."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside a world of {world}")
    if nodes < 1 or world % nodes:
        raise ValueError(f"a world of {world} ranks cannot be split over {nodes} nodes")
    per_node = world // nodes
    node, local = divmod(rank, per_node)
    return node, local, per_node


def rank_offset(rank: int, world: int, nodes: int = 1) -> int:
    """The first epoch position of a rank (then every `world`-th)."""
    node, local, _ = _split(rank, world, nodes)
    return local * nodes + node


def padded_length(node_length: int, world: int, nodes: int = 1) -> int:
    """Positions of an epoch once every node's stream is padded to a multiple of its ranks: a multiple of
    `world`, so every rank has padded_length / world positions."""
    per_node = _split(0, world, nodes)[2]
    return nodes * per_node * -(-node_length // per_node)


def rank_positions(total: int, start: int, rank: int, world: int, nodes: int = 1) -> range:
    """Epoch positions of one rank, from `start` (a multiple of `world`) on; `total` from padded_length."""
    if total % world or start % world:
        raise ValueError(f"an epoch of {total} positions from {start} does not split evenly over {world} ranks")
    return range(start + rank_offset(rank, world, nodes), total, world)


def worker_batches(positions: range, batch_size: int, worker: int, workers: int,
                   drop_last: bool = False) -> list[range]:
    """The batches (ranges of positions) a loader worker makes: batch j of the rank goes to worker j mod W."""
    batches = [positions[i:i + batch_size] for i in range(0, len(positions), batch_size)]
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    return batches[worker::max(1, workers)]
