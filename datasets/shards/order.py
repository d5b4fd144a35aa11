"""The sample order of an epoch: a pure function of (seed, epoch, per-shard sample counts).

Global order: the shards are permuted with (seed, epoch), cut into blocks of `block_shards` consecutive
shards, and the samples of each block are permuted with (seed, epoch, block). A reader thus needs only
one block of shards at a time, and the order knows nothing of ranks or workers.

Work split: position p of the epoch goes to rank (p - start) mod R; a rank's positions are grouped into
batches, and batch j of a rank goes to loader worker j mod W. torch's DataLoader takes batches from its
workers round-robin, so every rank sees its positions in global order whatever W is, and the union over
ranks is every position once. `start` is where a resumed epoch picks up (a multiple of R after
lock-step training), so a resume sees exactly the positions an uninterrupted run had left.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

SALT_SHARDS, SALT_BLOCK = 0x5EED, 0xB10C


def epoch_key(epoch: int | tuple[int, ...]) -> tuple[int, ...]:
    """An epoch as generator entropy: an int, or a tuple (a mixture's component epochs)."""
    return tuple(int(e) for e in epoch) if isinstance(epoch, tuple) else (int(epoch),)


class EpochOrder:
    """Position -> (shard, item within shard) for one epoch."""

    def __init__(self, counts: list[int] | np.ndarray, seed: int, epoch: int | tuple[int, ...], *, shuffle: bool = True,
                 block_shards: int = 4):
        self.counts = np.asarray(counts, np.int64)  # [n_shards] samples per shard
        self.seed, self.epoch, self.shuffle = int(seed), epoch, shuffle
        key = epoch_key(epoch)
        n = len(self.counts)
        if shuffle:
            self.shard_order = np.random.default_rng([self.seed, *key, SALT_SHARDS]).permutation(n)
        else:
            self.shard_order = np.arange(n)
        self.block_shards = max(1, int(block_shards))
        self.blocks = [self.shard_order[i:i + self.block_shards] for i in range(0, n, self.block_shards)]
        sizes = np.array([self.counts[b].sum() for b in self.blocks], np.int64)
        self.block_start = np.concatenate([[0], np.cumsum(sizes)])  # [n_blocks + 1]
        self._perms: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()  # loader threads share one order

    def __len__(self) -> int:
        return int(self.block_start[-1])

    def _block_perm(self, b: int) -> np.ndarray:
        if b not in self._perms:
            size = int(self.block_start[b + 1] - self.block_start[b])
            if self.shuffle:
                rng = np.random.default_rng([self.seed, *epoch_key(self.epoch), SALT_BLOCK, b])
                self._perms[b] = rng.permutation(size)
            else:
                self._perms[b] = np.arange(size)
            while len(self._perms) > 4:
                self._perms.popitem(last=False)
        self._perms.move_to_end(b)
        return self._perms[b]

    def locate(self, position: int) -> tuple[int, int]:
        """(shard index, sample index inside that shard) of an epoch position."""
        if not 0 <= position < len(self):
            raise IndexError(f"position {position} outside the epoch of {len(self)} samples")
        b = int(np.searchsorted(self.block_start, position, side="right") - 1)
        with self._lock:
            j = int(self._block_perm(b)[position - self.block_start[b]])
        shards = self.blocks[b]
        ends = np.cumsum(self.counts[shards])
        i = int(np.searchsorted(ends, j, side="right"))
        return int(shards[i]), j - int(ends[i] - self.counts[shards[i]])


def rank_positions(n: int, start: int, rank: int, world: int) -> range:
    """Epoch positions of one rank, from `start` on."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside a world of {world}")
    return range(start + rank, n, world)


def worker_batches(positions: range, batch_size: int, worker: int, workers: int,
                   drop_last: bool = False) -> list[range]:
    """The batches (ranges of positions) a loader worker makes: batch j of the rank goes to worker j mod W."""
    batches = [positions[i:i + batch_size] for i in range(0, len(positions), batch_size)]
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    return batches[worker::max(1, workers)]
