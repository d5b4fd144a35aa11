"""What a stage is: a function over the frame blocks of one clip that reads named arrays and yields
named arrays. The runner owns every write: it clears a block, writes what the stage yields, then the
block's ledger entry and completion marker.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np
import zarr

from datasets.errors import ConfigError
from datasets.raw.base import ClipSpec
from datasets.store import LedgerItem, Store


@dataclass(frozen=True)
class ClipLayout:
    """The frame axis of a clip as every stage sees it."""

    key: str  # 'subject/sequence'
    n_frames: int  # T: frames in the store (after the stride)
    block_frames: int  # frames per block (the unit of work and of sharding)
    views: tuple[str, ...]  # camera serials, in array order
    frame_ids: tuple[int, ...] = ()  # original frame id of each stored frame

    @property
    def n_blocks(self) -> int:
        return math.ceil(self.n_frames / self.block_frames)

    def frames(self, block: int) -> tuple[int, int]:
        """[t0, t1) store frames of a block."""
        t0 = block * self.block_frames
        return t0, min(t0 + self.block_frames, self.n_frames)

    def blocks_of(self, t0: int, t1: int) -> range:
        return range(t0 // self.block_frames, math.ceil(t1 / self.block_frames))

    @staticmethod
    def from_raw(work: ClipSpec, block_frames: int) -> "ClipLayout":
        """The layout of a clip a raw reader found (before anything is stored)."""
        return ClipLayout(work.key, len(work.frame_ids), block_frames, tuple(v.serial for v in work.views),
                          tuple(work.frame_ids))

    @staticmethod
    def from_group(group: zarr.Group) -> "ClipLayout":
        a = group.attrs
        return ClipLayout(a["clip"], int(a["n_frames"]), int(a["block_frames"]), tuple(a["views"]),
                          tuple(a.get("frame_ids", ())))


@dataclass
class BlockOutput:
    """What a stage computed for one block."""

    block: int
    frames: dict[str, np.ndarray]  # frame arrays: the values of frames [t0, t1) of the block
    items: list[LedgerItem] = field(default_factory=list)  # item-level failures
    whole: dict[str, np.ndarray] = field(default_factory=dict)  # small per-clip arrays, written in full


@dataclass
class SegmentContext:
    """Worker-side view of one task: a run of blocks of one clip."""

    store: Store
    layout: ClipLayout
    blocks: list[int]
    work: Any = None  # stage-specific payload from planning (ingest: the raw ClipSpec)
    threads: int = 1  # CPU threads this task may use

    @property
    def group(self) -> zarr.Group:
        return self.store.clip(self.layout.key)


class Stage(ABC):
    """Subclasses set the class variables and implement `prepare` (driver) and `run` (worker)."""

    name: ClassVar[str]
    config_class: ClassVar[type]  # the stage's config dataclass
    version: ClassVar[str] = "1"  # bump when the output for the same config changes
    requires: ClassVar[tuple[str, ...]] = ()  # stages whose products this one reads
    products: ClassVar[tuple[str, ...]] = ()  # frame arrays this stage owns (cleared before a redo)
    sequential: ClassVar[bool] = False  # prefers long runs of blocks per task (decoders, trackers)
    # "block": a block needs the same block upstream; "clip": every block of its clip upstream (one
    # task per clip); "subject": every block of every clip of its subject in the run; "group": every
    # block of the clips `scope_members` names (e.g. the clips it takes source images from)
    scope: ClassVar[str] = "block"
    reads_raw: ClassVar[bool] = False  # its work is the raw clip (ClipSpec) the reader found, not the store's
    implicit: ClassVar[bool] = False  # runs whenever a selected stage requires it (kept while current)

    def __init__(self, config: Any):
        self.config = config

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.config)

    # settings added after stores were made, with the value that reproduces the earlier behaviour: at that
    # value they stay out of the fingerprint, so those stores' finished blocks remain current
    later_settings: ClassVar[dict[str, Any]] = {}

    def fingerprint_config(self) -> dict[str, Any]:
        return {k: v for k, v in self.config_dict().items()
                if not (k in self.later_settings and v == self.later_settings[k])}

    def check(self) -> None:
        """Driver side, before planning: raise a clear error when the backend cannot run here (e.g. a
        weight file is missing), so the run fails once instead of in every task."""

    def plan_work(self, store: Store, key: str, keys: list[str]) -> Any:
        """Driver side: the payload a stage after ingest gets for clip `key`, given the store and every
        clip of the run (subject-scope stages: the subject's clips)."""
        return None

    def scope_members(self, key: str, work: Any) -> tuple[str, ...]:
        """Clips of the run whose upstream results the task for `key` reads (scopes other than block)."""
        return tuple(work) if self.scope == "subject" and work else (key,)

    def clip_identity(self, work: Any) -> Any:
        """Data that, when it changes, makes a clip's finished blocks stale (besides the config)."""
        return None

    @abstractmethod
    def prepare(self, store: Store, layout: ClipLayout, work: Any) -> None:
        """Driver side, before the clip's tasks: create this stage's arrays of the clip, replacing those
        whose shape or encoding no longer match the config (the blocks to redo are cleared anyway)."""

    @abstractmethod
    def run(self, ctx: SegmentContext) -> Iterator[BlockOutput]:
        """Worker side: yield one BlockOutput per block of ctx.blocks, in order."""

    def licences(self) -> list[str]:
        """Terms of the models or data this stage's backend uses (recorded in the store's provenance)."""
        return []

    def skip_reason(self, key: str, work: Any) -> str | None:
        """Driver side: why this stage has nothing to do for clip `key` (recorded in the ledger; the clip's
        blocks are counted as skipped, the run goes on), or None."""
        return None


REGISTRY: dict[str, type[Stage]] = {}
STAGE_MODULES = ("pipeline.framing", "pipeline.ingest", "pipeline.matting", "pipeline.landmarks", "pipeline.fitting",
                 "pipeline.crops", "pipeline.synthesis")  # import = register


def load_stages() -> dict[str, type[Stage]]:
    """Import every stage module (worker processes start with an empty registry)."""
    import importlib

    for module in STAGE_MODULES:
        importlib.import_module(module)
    return REGISTRY


def register(cls: type[Stage]) -> type[Stage]:
    REGISTRY[cls.name] = cls
    return cls


def dependency_order(names: list[str]) -> list[str]:
    """The selected stages, with the implicit stages they require, sorted so every stage comes after the
    stages it requires."""
    load_stages()
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise ConfigError(f"unknown stage(s) {', '.join(unknown)}; known: {', '.join(REGISTRY)}")
    names = list(names)
    for name in list(names):
        names += [dep for dep in REGISTRY[name].requires if REGISTRY[dep].implicit and dep not in names]
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise ValueError(f"stage dependency cycle through {name}")
        visiting.add(name)
        for dep in REGISTRY[name].requires:
            if dep in names:
                visit(dep)
        visiting.discard(name)
        order.append(name)

    for n in names:
        visit(n)
    return order


def dependents(name: str) -> list[str]:
    """Every registered stage that reads, directly or not, the products of `name`."""
    load_stages()
    out: list[str] = []
    frontier = [name]
    while frontier:
        current = frontier.pop()
        for other, cls in REGISTRY.items():
            if current in cls.requires and other not in out:
                out.append(other)
                frontier.append(other)
    return out
