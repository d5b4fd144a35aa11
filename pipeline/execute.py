"""Running segment tasks: the worker-side task body and the executors that schedule tasks (in this
process, on a local Dask cluster, or on an existing Dask scheduler) in dependency order.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from datasets.cluster import DaskCluster
from datasets.store import LedgerItem, Marker, Store, now_iso
from pipeline.stage import BlockOutput, ClipLayout, SegmentContext, Stage, load_stages

PROGRESS_TOPIC = "headforge-progress"


@dataclass(frozen=True)
class SegmentTask:
    """One unit handed to a worker: a run of blocks of one clip for one stage."""

    task_id: str
    store_url: str
    storage_options: dict
    stage: str
    stage_config: dict
    fingerprint: str  # what a finished block's marker must carry
    stage_fingerprint: str
    layout: ClipLayout
    blocks: tuple[int, ...]
    work: Any = None
    threads: int = 1


@dataclass
class SegmentResult:
    task_id: str
    stage: str
    clip: str
    done: list[int] = field(default_factory=list)  # blocks computed by this task
    skipped: list[int] = field(default_factory=list)  # blocks found finished (e.g. by an earlier attempt)
    items: int = 0  # item-level failures recorded


def make_stage(name: str, config: dict) -> Stage:
    """Rebuild a stage from the plain config dict that travelled to the worker."""
    cls = load_stages()[name]
    return cls(cls.config_class(**config))


def _default_report(message: dict) -> None:
    try:
        from distributed import get_worker

        get_worker().log_event(PROGRESS_TOPIC, message)
    except (ImportError, ValueError):
        pass  # not inside a Dask worker


def execute_segment(task: SegmentTask, report: Callable[[dict], None] | None = None) -> SegmentResult:
    """Worker side. Redo every block of the task that lacks a current marker, from scratch."""
    report = report or _default_report
    store = Store(task.store_url, task.storage_options, mode="a")
    stage = make_stage(task.stage, task.stage_config)
    key = task.layout.key
    result = SegmentResult(task.task_id, stage.name, key)
    todo = []
    for block in task.blocks:  # its own blocks' markers only, from their objects (never the summary)
        marker = store.marker(stage.name, key, block)
        if marker is not None and marker.fingerprint == task.fingerprint:
            result.skipped.append(block)
        else:
            todo.append(block)
    if not todo:
        return result
    group = store.clip(key)
    for block in todo:  # marker first: a block without a marker is redone, whatever else is there
        store.clear_marker(stage.name, key, block)
        store.write_block_ledger(stage.name, key, block, [])
        for name in stage.products:
            store.clear_block(group[name], block)
    ctx = SegmentContext(store, task.layout, todo, task.work, max(1, task.threads))
    started = time.perf_counter()
    for out in stage.run(ctx):
        write_output(store, group, task.layout, out)
        store.write_block_ledger(stage.name, key, out.block, out.items)
        t0, t1 = task.layout.frames(out.block)
        store.write_marker(Marker(stage.name, key, out.block, task.fingerprint, task.stage_fingerprint, [t0, t1],
                                  len(out.items), round(time.perf_counter() - started, 3), now_iso()))
        started = time.perf_counter()
        result.done.append(out.block)
        result.items += len(out.items)
        report({"stage": stage.name, "clip": key, "block": out.block, "items": len(out.items)})
    missing = sorted(set(todo) - set(result.done))
    if missing:
        raise RuntimeError(f"stage {stage.name} yielded no output for blocks {missing} of {key}")
    return result


def write_output(store: Store, group, layout: ClipLayout, out: BlockOutput) -> None:
    t0, t1 = layout.frames(out.block)
    for name, value in out.frames.items():
        if value.shape[0] != t1 - t0:
            raise ValueError(f"{name}: block {out.block} has {t1 - t0} frames, stage gave {value.shape[0]}")
        group[name][t0:t1] = value
    for name, value in out.whole.items():
        group[name][...] = value


# ---------------------------------------------------------------------------------------- executors
@dataclass
class TaskOutcome:
    task: SegmentTask
    result: SegmentResult | None = None
    error: str | None = None  # the task raised, after its retries
    upstream_failed: bool = False


def run_tasks(tasks: list[SegmentTask], deps: dict[str, set[str]], executor: "Executor",
              on_outcome: Callable[[TaskOutcome], None]) -> list[TaskOutcome]:
    """Submit each task once its upstream tasks succeeded; a failure skips everything downstream."""
    by_id = {t.task_id: t for t in tasks}
    waiting = {t.task_id: set(deps.get(t.task_id, ())) for t in tasks}
    children: dict[str, list[str]] = {}
    for tid, ups in waiting.items():
        for up in ups:
            children.setdefault(up, []).append(tid)
    outcomes: list[TaskOutcome] = []

    def skip_downstream(tid: str) -> None:
        for child in children.get(tid, []):
            if child in waiting:
                del waiting[child]
                outcome = TaskOutcome(by_id[child], upstream_failed=True)
                outcomes.append(outcome)
                on_outcome(outcome)
                skip_downstream(child)

    ready = [by_id[tid] for tid, ups in list(waiting.items()) if not ups]
    for t in ready:
        del waiting[t.task_id]
    for outcome in executor.run(ready):
        outcomes.append(outcome)
        on_outcome(outcome)
        tid = outcome.task.task_id
        if outcome.error is not None:
            skip_downstream(tid)
            continue
        newly = []
        for child in children.get(tid, []):
            if child in waiting:
                waiting[child].discard(tid)
                if not waiting[child]:
                    del waiting[child]
                    newly.append(by_id[child])
        executor.submit_more(newly)
    return outcomes


class Executor:
    """Runs tasks; `run(initial)` yields outcomes as tasks finish; `submit_more` adds ready tasks."""

    def run(self, initial: list[SegmentTask]):
        raise NotImplementedError

    def submit_more(self, tasks: list[SegmentTask]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class InlineExecutor(Executor):
    """Runs tasks one after another in this process (`--workers 0`): simplest to debug and profile."""

    def __init__(self, retries: int, report: Callable[[dict], None]):
        self.retries = retries
        self.report = report
        self.queue: list[SegmentTask] = []

    def run(self, initial: list[SegmentTask]):
        self.queue = list(initial)
        while self.queue:
            task = self.queue.pop(0)
            yield self._run_one(task)

    def _run_one(self, task: SegmentTask) -> TaskOutcome:
        error = None
        for _ in range(self.retries + 1):
            try:
                return TaskOutcome(task, execute_segment(task, self.report))
            except Exception:  # noqa: BLE001 - recorded as a task failure after the retries
                error = traceback.format_exc(limit=6)
        return TaskOutcome(task, error=error)

    def submit_more(self, tasks: list[SegmentTask]) -> None:
        self.queue.extend(tasks)


class DaskExecutor(Executor):
    """A local cluster of worker processes, or an existing scheduler (`tcp://host:8786`)."""

    def __init__(self, workers: int, scheduler: str | None, retries: int, report: Callable[[dict], None]):
        self.retries = retries
        self.cluster = DaskCluster(workers, scheduler)
        self.client = self.cluster.client
        self.client.subscribe_topic(PROGRESS_TOPIC, lambda event: report(event[1]))
        self.futures: dict[Any, SegmentTask] = {}
        self.pending = None

    def _submit(self, task: SegmentTask):
        future = self.client.submit(execute_segment, task, key=task.task_id, retries=self.retries, pure=False)
        self.futures[future] = task
        return future

    def run(self, initial: list[SegmentTask]):
        from distributed import as_completed

        self.pending = as_completed([self._submit(t) for t in initial])
        for future in self.pending:
            task = self.futures.pop(future)
            if future.status == "finished":
                yield TaskOutcome(task, future.result())
            else:
                exc = future.exception()
                tb = "".join(traceback.format_exception(type(exc), exc, future.traceback(), limit=6))
                yield TaskOutcome(task, error=tb)

    def submit_more(self, tasks: list[SegmentTask]) -> None:
        for t in tasks:
            self.pending.add(self._submit(t))

    def close(self) -> None:
        for future in list(self.futures):
            future.cancel()
        self.cluster.close()


def default_threads(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def task_failure_items(task: SegmentTask, error: str, done: set[int]) -> list[tuple[int, LedgerItem]]:
    """Ledger entries (kind 'task') for the blocks a crashed task left unfinished."""
    last = error.strip().splitlines()[-1] if error.strip() else "unknown error"
    return [
        (b, LedgerItem(task.stage, task.layout.key, f"task failed after retries: {last}", block=b, kind="task"))
        for b in task.blocks if b not in done
    ]
