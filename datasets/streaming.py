"""The streaming training dataset: shard sets (local or any fsspec URL) -> torch samples or batches.

    ds = ShardDataset("shards/demo", sample="stage2", batch_size=8, seed=0)
    loader = StreamingLoader(ds, num_workers=2)
    for batch in loader:                      # rgb [8, 512, 512, 3] uint8, condition [8, 256, 256, 3], ...
        ...
        checkpoint["data"] = loader.state_dict()   # resume: loader.load_state_dict(checkpoint["data"])

Guarantees (tested): the order of an epoch is a pure function of (seed, epoch, nodes); every sample comes
once per epoch, in the same global order, for any number of loader workers and ranks, and every rank gets
the same number of samples and batches (a few samples repeated to even them out, flagged `padding`);
a node reads the same shards every epoch (datasets/shards/order.py); a loader resumed from
`state_dict()` yields exactly what the interrupted one had left; the next epoch has a new order.
Batches are made inside the dataset (rank-local consecutive samples), so use `batch_size=None` in a plain
DataLoader or use StreamingLoader. Ranks come from torch.distributed when it is initialised, else from
RANK / WORLD_SIZE, else 0 / 1; nodes from torchrun's LOCAL_WORLD_SIZE (world / local world), else 1.
Several ranks are expected to consume in lock step (DDP does).

Resuming with another world size: with the same node count the order is the same and the epoch goes on
from the saved point rounded down to the new world size (at most world - 1 samples seen twice); with
another node count the order differs, so the interrupted epoch starts again from its beginning (its
first part is seen twice; no sample is skipped).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from datasets.shards.order import (
    EpochOrder,
    epoch_key,
    padded_length,
    rank_offset,
    rank_positions,
    worker_batches,
)
from datasets.shards.reader import ShardReader
from datasets.shards.samples import SAMPLE_KINDS, stage1_sample, stage2_sample
from datasets.shards.storage import DEFAULT_CACHE_BYTES

SALT_SAMPLE, SALT_MIX = 0xC0DE, 0x313C


def _world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _nodes(world: int) -> int:
    """Nodes of a torchrun job: WORLD_SIZE / LOCAL_WORLD_SIZE (ranks are numbered node by node)."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE") or world)
    return world // local if local and world % local == 0 else 1


def collate(samples: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.stack([np.asarray(s[k]) for s in samples])) for k in samples[0]}


def to_tensors(sample: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else torch.tensor(v)
            for k, v in sample.items()}


class PositionalStream(IterableDataset):
    """Iteration, work split, batching, prefetch and resume state over `epoch_length` / `fetch`."""

    def __init__(self, *, seed: int, batch_size: int | None, drop_last: bool, repeat: bool, prefetch: int,
                 decode_threads: int, rank: int | None, world_size: int | None, nodes: int | None = None):
        super().__init__()
        self.seed = int(seed)
        self.batch_size, self.drop_last, self.repeat = batch_size, drop_last, repeat
        self.prefetch, self.decode_threads = max(0, prefetch), max(1, decode_threads)
        default_rank, default_world = _world()
        self.rank = default_rank if rank is None else rank
        self.world_size = default_world if world_size is None else world_size
        self.nodes = _nodes(self.world_size) if nodes is None else int(nodes)
        self.offset = rank_offset(self.rank, self.world_size, self.nodes)  # the rank's first position
        self.epoch, self.position = 0, 0  # where the next iteration starts

    # subclasses ---------------------------------------------------------------------------------------
    def epoch_length(self, epoch: int) -> int:
        """Real samples of an epoch (all nodes)."""
        raise NotImplementedError

    def node_length(self, epoch: int) -> int:
        """Positions of each node's stream before padding to its ranks (ceil(epoch_length / nodes))."""
        return -(-self.epoch_length(epoch) // self.nodes)

    def fetch(self, epoch: int, position: int) -> dict[str, np.ndarray]:
        """The sample at an epoch position (padded positions included)."""
        raise NotImplementedError

    def is_padding(self, epoch: int, position: int) -> bool:
        """Whether the position repeats a sample to even out the ranks' work."""
        return position // self.nodes >= self.node_length(epoch)

    def positions(self, epoch: int) -> int:
        """Positions of an epoch, padding included: every rank has positions / world_size of them."""
        return padded_length(self.node_length(epoch), self.world_size, self.nodes)

    def content_id(self) -> str:
        raise NotImplementedError

    # resume ------------------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.position = int(epoch), 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "content": self.content_id(),
                "world_size": self.world_size, "nodes": self.nodes}

    def load_state_dict(self, state: dict) -> None:
        if state.get("content") not in (None, self.content_id()):
            raise ValueError("this loader state belongs to another shard set (or mixture); cannot resume from it")
        if int(state.get("seed", self.seed)) != self.seed:
            raise ValueError(f"the loader state was saved with seed {state['seed']}, this dataset uses {self.seed}")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        world, nodes = int(state.get("world_size", self.world_size)), int(state.get("nodes", 1))
        if self.position % world:
            raise ValueError(f"position {self.position} is not a multiple of the world size {world}: "
                             "the ranks were not in lock step when the state was saved")
        if nodes != self.nodes:  # another order: the interrupted epoch starts again (module docstring)
            self.position = 0
        elif world != self.world_size:  # the same order: go on, rounded down to the new lock step
            self.position -= self.position % self.world_size

    def __len__(self) -> int:
        """Batches (or samples) this rank yields in one whole epoch (with workers: all workers together)."""
        n = self.positions(self.epoch) // self.world_size
        if self.batch_size is None:
            return n
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    # iteration ---------------------------------------------------------------------------------------
    def _epochs(self) -> Iterator[tuple[int, int]]:
        epoch, start = self.epoch, self.position
        if start >= self.positions(epoch):  # the saved epoch is finished: the next one starts
            epoch, start = epoch + 1, 0
        while True:
            yield epoch, start
            if not self.repeat:
                return
            epoch, start = epoch + 1, 0

    def _units(self) -> Iterator[tuple[int, range]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        for epoch, start in self._epochs():
            positions = rank_positions(self.positions(epoch), start, self.rank, self.world_size, self.nodes)
            for batch in worker_batches(positions, self.batch_size or 1, worker, workers, self.drop_last):
                yield epoch, batch

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        in_process = get_worker_info() is None
        pool = ThreadPoolExecutor(self.decode_threads)
        pending: deque = deque()
        units = self._units()
        try:
            while True:
                while len(pending) <= self.prefetch:
                    unit = next(units, None)
                    if unit is None:
                        break
                    epoch, batch = unit
                    pending.append((epoch, batch, [pool.submit(self.fetch, epoch, p) for p in batch]))
                if not pending:
                    return
                epoch, batch, futures = pending.popleft()
                samples = [f.result() for f in futures]
                for s, p in zip(samples, batch, strict=True):
                    s["epoch"], s["position"] = np.int64(epoch), np.int64(p)
                    s["padding"] = np.bool_(self.is_padding(epoch, p))
                out = to_tensors(samples[0]) if self.batch_size is None else collate(samples)
                if in_process:  # a DataLoader worker's copy is not the user's: StreamingLoader tracks those
                    self.epoch, self.position = epoch, batch[-1] - self.offset + self.world_size
                yield out
        finally:
            for _, _, futures in pending:
                for f in futures:
                    f.cancel()
            pool.shutdown(wait=False, cancel_futures=True)


class ShardDataset(PositionalStream):
    """One split of one shard set as a stream of stage-1 or stage-2 samples (see datasets/shards/samples.py)."""

    def __init__(self, url: str, *, split: str = "train", sample: str = "stage2", use: str = "train",
                 views: int = 4, synth_ratio: float = 0.5, seed: int = 0, shuffle: bool = True,
                 block_shards: int = 4, batch_size: int | None = None, drop_last: bool = False,
                 repeat: bool = False, prefetch: int = 4, decode_threads: int = 2, validate: bool = False,
                 cache_dir: str | None = None, cache_bytes: int = DEFAULT_CACHE_BYTES,
                 storage_options: dict | None = None, rank: int | None = None, world_size: int | None = None,
                 nodes: int | None = None):
        super().__init__(seed=seed, batch_size=batch_size, drop_last=drop_last, repeat=repeat, prefetch=prefetch,
                         decode_threads=decode_threads, rank=rank, world_size=world_size, nodes=nodes)
        if sample not in SAMPLE_KINDS:
            raise ValueError(f"sample must be one of {SAMPLE_KINDS}, got {sample!r}")
        if not 0 <= synth_ratio <= 1:
            raise ValueError(f"synth_ratio must be in [0, 1], got {synth_ratio}")
        self.reader = ShardReader(url, storage_options=storage_options, cache_dir=cache_dir,
                                  cache_bytes=cache_bytes, validate=validate, max_open=2 * block_shards + 1)
        self.manifest = self.reader.manifest
        self.split, self.sample, self.use, self.views = split, sample, use, views
        self.synth_ratio, self.shuffle, self.block_shards = synth_ratio, shuffle, block_shards
        kind = "rows" if sample == "stage1" else "views"
        self.counts = [s["counts"][use][kind] for s in self.manifest.shards(split)]
        if sum(self.counts) == 0:
            raise ValueError(f"split {split!r} of {url} has no {use} samples")
        self._order: EpochOrder | None = None
        self._items: dict[int, np.ndarray] = {}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_order"], state["_items"] = None, {}
        return state

    def epoch_length(self, epoch: int) -> int:
        return sum(self.counts)

    def node_length(self, epoch: int) -> int:
        return self.order(epoch).node_length

    def is_padding(self, epoch: int, position: int) -> bool:
        return position // self.nodes >= self.node_length(epoch) or self.order(epoch).is_padding(position)

    def node_samples(self, epoch: int | tuple[int, int], node: int) -> int:
        """Real samples of a node's stream (the same every epoch)."""
        return self.order(epoch).node_samples(node)

    def content_id(self) -> str:
        return f"{self.manifest.identity()}:{self.split}:{self.sample}:{self.use}"

    def order(self, epoch: int | tuple[int, int]) -> EpochOrder:
        if self._order is None or self._order.epoch != epoch:
            self._order = EpochOrder(self.counts, self.seed, epoch, shuffle=self.shuffle,
                                     block_shards=self.block_shards, nodes=self.nodes)
        return self._order

    def locate(self, epoch: int | tuple[int, int], position: int) -> tuple[int, int]:
        return self.order(epoch).locate(position)

    def fetch(self, epoch: int | tuple[int, int], position: int) -> dict[str, np.ndarray]:
        k, i = self.locate(epoch, position)
        shard = self.reader.shard(self.split, k)
        items = shard.items(self.sample, self.use)
        rng = np.random.default_rng([self.seed, *epoch_key(epoch), position, SALT_SAMPLE])
        if self.sample == "stage1":
            return stage1_sample(shard, int(items[i]), self.use, self.views, rng, self.manifest.layout,
                                 self.synth_ratio)
        row, view = items[i]
        return stage2_sample(shard, int(row), int(view), rng, self.manifest.layout, self.synth_ratio)


class MixtureDataset(PositionalStream):
    """Several ShardDatasets drawn with given weights (e.g. multi-view NeRSemble and monocular VFHQ).

    An epoch is `length` draws (default: the components' epochs together), split between the nodes like a
    shard set's samples (position p is draw p // nodes of node p % nodes); a node's draw picks a component
    with the generator (seed, epoch[, node]); a component's k-th draw on a node is sample k of that node's
    stream of the component, which runs over its epochs (k // its length) in their orders, so a node reads
    only its own shards of every component. A sample gains `source` (component index).
    """

    def __init__(self, datasets: list[ShardDataset], weights: list[float], *, seed: int = 0,
                 length: int | None = None, batch_size: int | None = None, drop_last: bool = False,
                 repeat: bool = False, prefetch: int = 4, decode_threads: int = 2, rank: int | None = None,
                 world_size: int | None = None, nodes: int | None = None):
        super().__init__(seed=seed, batch_size=batch_size, drop_last=drop_last, repeat=repeat, prefetch=prefetch,
                         decode_threads=decode_threads, rank=rank, world_size=world_size, nodes=nodes)
        if len(datasets) != len(weights) or not datasets:
            raise ValueError("a mixture needs one weight per dataset")
        w = np.asarray(weights, float)
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"mixture weights must be non-negative with a positive sum, got {weights}")
        kinds = {d.sample for d in datasets}
        if len(kinds) > 1:
            raise ValueError(f"a mixture needs one sample kind, got {sorted(kinds)}")
        if any(d.nodes != self.nodes for d in datasets):
            raise ValueError(f"the mixture's datasets must be split over its {self.nodes} nodes (nodes=...)")
        self.datasets, self.weights = datasets, w / w.sum()
        self.length = int(length) if length else sum(d.epoch_length(0) for d in datasets)
        self._draws: tuple[tuple[int, int], np.ndarray, np.ndarray] | None = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_draws"] = None
        return state

    def epoch_length(self, epoch: int) -> int:
        return self.length

    def content_id(self) -> str:
        parts = [d.content_id() for d in self.datasets] + [f"{w:.6f}" for w in self.weights] + [str(self.length)]
        return "mix:" + "|".join(parts)

    def _node_draws(self, epoch: int, node: int) -> tuple[np.ndarray, np.ndarray]:
        """A node's draws in an epoch: component [node_length] and the draw's rank in its component."""
        if self._draws is None or self._draws[0] != (epoch, node):
            n = self.node_length(epoch)
            key = [self.seed, epoch, SALT_MIX] + ([node] if self.nodes > 1 else [])  # one node: the old keys
            choice = np.random.default_rng(key).choice(len(self.datasets), size=n, p=self.weights)
            rank_in_source = np.zeros(n, np.int64)
            for c in range(len(self.datasets)):
                where = choice == c
                rank_in_source[where] = np.arange(where.sum())
            self._draws = ((epoch, node), choice, rank_in_source)
        return self._draws[1], self._draws[2]

    def fetch(self, epoch: int, position: int) -> dict[str, np.ndarray]:
        node, q = position % self.nodes, (position // self.nodes) % self.node_length(epoch)
        choice, index = self._node_draws(epoch, node)
        c, k = int(choice[q]), int(index[q])
        ds = self.datasets[c]
        own = node if ds.node_samples(0, node) else 0  # a node without samples of this component repeats node 0's
        n = ds.node_samples(0, own)
        # the component's k-th draw on this node in mixture epoch e: sample k % n of the node's stream of the
        # component's own epoch (e, k // n), a pure function again
        sample = ds.fetch((epoch, k // n), (k % n) * self.nodes + own)
        sample["source"] = np.int64(c)
        return sample


class StreamingLoader:
    """A DataLoader over a stream that knows where it is: `state_dict()` after any batch resumes exactly."""

    def __init__(self, dataset: PositionalStream, num_workers: int = 0, pin_memory: bool = False,
                 prefetch_factor: int | None = None, persistent_workers: bool = False):
        self.dataset = dataset
        self.num_workers = num_workers
        self.kwargs = {"pin_memory": pin_memory}
        if num_workers > 0:
            self.kwargs.update(prefetch_factor=prefetch_factor or 2, persistent_workers=persistent_workers)

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        ds = self.dataset
        if self.num_workers == 0:
            yield from ds
            return
        loader = DataLoader(ds, batch_size=None, num_workers=self.num_workers, **self.kwargs)
        for batch in loader:
            last = batch["position"].reshape(-1)[-1]
            ds.epoch, ds.position = int(batch["epoch"].reshape(-1)[-1]), int(last) - ds.offset + ds.world_size
            yield batch

    def state_dict(self) -> dict:
        return self.dataset.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.dataset.load_state_dict(state)
