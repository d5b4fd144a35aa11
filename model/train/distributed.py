"""Several training processes (torchrun) as one run: the process group, which process is the main one,
and the few collective operations the trainer needs.

    torchrun --nproc_per_node 8 cli.py train SHARDS --stage guiding ...          # one node, 8 GPUs
    torchrun --nnodes 4 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29400 cli.py train ...

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE; a process started without them is a
world of one and nothing here does anything. The backend is NCCL on CUDA and gloo on CPU (tests run two
CPU processes with gloo). Ranks are numbered node by node, as torchrun does, which the streaming dataset's
node partitioning relies on (datasets/shards/order.py).

Batch size: a model config's `batch_size` is the GLOBAL batch of one optimiser step; each of the R ranks
takes batch_size / R samples and DistributedDataParallel averages the gradients, so a step is the same
step whatever R is (tested: 1 and 2 processes give the same losses and parameters). The paper's "batch
size of 8 ... on 8 RTX 4090" is read as 8 in all, one sample (stage 2) or one frame of 4 views (stage 1)
per GPU; `--set model.batch_size=64` gives 8 per GPU on 8 GPUs.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from datasets.errors import ConfigError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def main(self) -> bool:
        """The process that logs, previews, evaluates and writes checkpoints."""
        return self.rank == 0

    @property
    def nodes(self) -> int:
        return self.size // self.local_size


def from_environment() -> World:
    """The world torchrun describes in the environment (a world of one without torchrun)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    local_size = int(os.environ.get("LOCAL_WORLD_SIZE", str(size)))
    world = World(int(os.environ.get("RANK", "0")), size, int(os.environ.get("LOCAL_RANK", "0")), local_size)
    if size > 1 and size % local_size:
        raise ConfigError(f"WORLD_SIZE {size} is not a multiple of LOCAL_WORLD_SIZE {local_size}: every node "
                          "must run the same number of processes")
    return world


def start(device: torch.device) -> World:
    """Join the process group torchrun set up (idempotent). -> this process's place in the world."""
    world = from_environment()
    if world.size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(world.local_rank)
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    return world


def device_for(name: str, world: World) -> str:
    """A rank's device: on CUDA each local rank takes its own GPU."""
    if world.size > 1 and name in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{world.local_rank}"
    return name


def per_rank_batch(batch_size: int, world: World) -> int:
    """Samples each rank takes for a global batch of `batch_size`."""
    if batch_size % world.size:
        raise ConfigError(f"the global batch size {batch_size} does not split over {world.size} processes; use a "
                          f"multiple of {world.size} (--set model.batch_size=...)")
    return batch_size // world.size


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def mean_scalars(scalars: dict[str, float]) -> dict[str, float]:
    """The ranks' scalars averaged (every rank gets the result): the global batch's loss terms."""
    if not active():
        return scalars
    keys = sorted(scalars)
    values = torch.tensor([float(scalars[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(values)
    return {k: float(v) / dist.get_world_size() for k, v in zip(keys, values.tolist(), strict=True)}


def barrier() -> None:
    if active():
        dist.barrier()


def broadcast_object(value):
    """The main rank's `value` on every rank."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def stop() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
