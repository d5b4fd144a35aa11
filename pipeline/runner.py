"""The preprocessing run: plan the (stage, clip, block) work against the store, refuse stale configs,
build tasks in dependency order, execute them, and summarise what happened.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from datasets.errors import UserError
from datasets.names import clip_subject, split_clip_key
from datasets.provenance import package_versions
from datasets.raw import ScanOptions, Selection, licence_note, read_raw
from datasets.store import LedgerItem, Store, fingerprint, now_iso
from pipeline.config import PreprocessConfig
from pipeline.execute import (
    DaskExecutor,
    InlineExecutor,
    SegmentTask,
    TaskOutcome,
    default_threads,
    run_tasks,
    task_failure_items,
)
from pipeline.stage import REGISTRY, ClipLayout, Stage, dependency_order, dependents, load_stages


class RefusedError(UserError, RuntimeError):
    """The store holds results of another config; the run would mix them. Use --recompute."""


class PlanError(UserError, RuntimeError):
    """The request cannot be planned (missing upstream stage, no clips, ...)."""


class Reporter:
    """Progress hooks; the CLI shows them with rich, tests collect them."""

    def planned(self, stage: str, todo_blocks: int, done_blocks: int) -> None: ...

    def block_done(self, stage: str, clip: str, block: int, items: int) -> None: ...

    def note(self, text: str) -> None: ...


@dataclass
class StageSummary:
    blocks: int = 0  # blocks of the selected clips
    already_done: int = 0  # finished before this run (skipped)
    done: int = 0  # computed by this run
    failed: int = 0  # left unfinished by a crashed task (after retries)
    skipped_upstream: int = 0  # not run because an upstream task failed
    skipped: int = 0  # not run because the stage has nothing to do for the clip (the ledger says why)
    blocked: int = 0  # not run because an upstream stage has not produced them
    items: int = 0  # item-level failures recorded by this run


@dataclass
class RunSummary:
    stages: dict[str, StageSummary] = field(default_factory=dict)
    plan_items: list[LedgerItem] = field(default_factory=list)  # problems of the raw data found while planning
    skips: list[LedgerItem] = field(default_factory=list)  # clips a stage had nothing to do for, and why
    task_errors: list[str] = field(default_factory=list)
    clips: int = 0

    @property
    def item_failures(self) -> int:
        return len(self.plan_items) + sum(s.items for s in self.stages.values())

    def exit_code(self, strict: bool) -> int:
        if self.task_errors or any(s.failed or s.skipped_upstream for s in self.stages.values()):
            return 1
        if strict and (self.item_failures or self.skips):
            return 2
        return 0


@dataclass
class Plan:
    store: Store
    stages: list[Stage]
    fingerprints: dict[str, str]  # stage -> stage fingerprint (config, version, upstream)
    works: dict[str, Any]  # clip key -> stage payload (the raw ClipSpec when ingesting)
    tasks: list[SegmentTask]
    deps: dict[str, set[str]]
    summary: RunSummary


def _stage_fingerprints(store: Store, stages: list[Stage]) -> dict[str, str]:
    fps: dict[str, str] = {}
    selected = {s.name for s in stages}
    for stage in stages:
        upstream = {}
        for dep in stage.requires:
            if dep in fps:
                upstream[dep] = fps[dep]
            else:
                record = store.stage_record(dep)
                if record is None:
                    raise PlanError(f"stage {stage.name} needs {dep}, which has not run on this store; "
                                    f"add it: --stages {','.join([dep, *selected])}")
                upstream[dep] = record["fingerprint"]
        fps[stage.name] = fingerprint({"stage": stage.name, "version": stage.version,
                                       "config": stage.fingerprint_config(), "upstream": upstream})
    return fps


def _clip_fingerprint(stage: Stage, stage_fp: str, work: Any) -> str:
    identity = stage.clip_identity(work)
    return stage_fp if identity is None else fingerprint([stage_fp, identity])


def _config_diff(old: dict, new: dict) -> str:
    keys = sorted(set(old) | set(new))
    diffs = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]
    return ", ".join(diffs) or "same config, different stage version, upstream results or raw data"


def _segments(blocks: list[int], size: int) -> list[list[int]]:
    """Split sorted block ids into runs of consecutive blocks of at most `size`."""
    runs: list[list[int]] = []
    for b in blocks:
        if runs and b == runs[-1][-1] + 1 and len(runs[-1]) < size:
            runs[-1].append(b)
        else:
            runs.append([b])
    return runs


@dataclass
class _PlanState:
    """What planning found, per (stage, clip key): the stage's payload, the clip's layout, the blocks to
    compute and those already finished, and the fingerprint a finished block's marker must carry."""

    summary: RunSummary
    fps: dict[str, str]  # stage -> the stage's fingerprint
    works: dict[tuple[str, str], Any] = field(default_factory=dict)
    layouts: dict[tuple[str, str], ClipLayout] = field(default_factory=dict)
    todo: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    done: dict[tuple[str, str], set[int]] = field(default_factory=dict)
    clip_fps: dict[tuple[str, str], str] = field(default_factory=dict)


def plan_run(cfg: PreprocessConfig, reporter: Reporter | None = None) -> Plan:
    """Read the clips, find what is finished and what is stale, prepare the store, build the tasks."""
    reporter = reporter or Reporter()
    if not cfg.store:
        raise PlanError("no output store given (--store PATH_OR_URL)")
    order = dependency_order(list(cfg.stages))
    stages = [load_stages()[name](cfg.stage_config(name)) for name in order]
    for stage in stages:
        stage.check()
    raw = _read_raw(cfg, stages)  # before the store exists: a root that yields nothing leaves no empty store
    store = Store(cfg.store, cfg.storage_options, mode="a")
    summary = RunSummary()
    works = _read_clips(cfg, raw, store, summary)
    state = _PlanState(summary, _stage_fingerprints(store, stages))
    if not works:
        raise PlanError("no clips to process" + (f" ({len(summary.plan_items)} problems, see `cli.py report`)"
                                                  if summary.plan_items else ""))
    summary.clips = len(works)
    block_frames = cfg.stage_config("ingest").block_frames
    clip_layouts = {key: ClipLayout.from_raw(work, block_frames) if work is not None
                    else ClipLayout.from_group(store.clip(key)) for key, work in works.items()}
    for stage in stages:
        _plan_stage(cfg, stage, store, works, clip_layouts, state)
    _prepare_store(stages, store, list(works), state)
    tasks, deps = _build_tasks(cfg, state, stages, order, store)
    store.save_summaries()  # what planning read marker by marker, so that the next planning need not
    for stage in stages:
        s = summary.stages[stage.name]
        reporter.planned(stage.name, sum(len(t.blocks) for t in tasks if t.stage == stage.name), s.already_done)
    return Plan(store, stages, state.fps, works, tasks, deps, summary)


def _selection(cfg: PreprocessConfig) -> Selection:
    src = cfg.source
    return Selection(tuple(src.include), tuple(src.exclude), cfg.stage_config("ingest").frame_stride)


def _read_raw(cfg: PreprocessConfig, stages: list[Stage]):
    """The raw reader's plan when a stage reads the raw capture (None otherwise)."""
    src = cfg.source
    raw_stages = [s.name for s in stages if s.reads_raw]
    if not raw_stages:
        return None
    if not src.root:
        raise PlanError(f"{' and '.join(raw_stages)} need(s) the raw capture root (--root PATH)")
    scan = ScanOptions(cfg.stage_config("ingest").resolution, src.scan_views)  # scans: rendered at the working size
    return read_raw(src.dataset, src.root, _selection(cfg), focal=src.focal, subject=src.subject, scan=scan)


def _read_clips(cfg: PreprocessConfig, raw, store: Store, summary: RunSummary) -> dict[str, Any]:
    """The clips of the run: key -> the raw ClipSpec when a stage reads the raw capture, else None (the
    store's clips); the raw reader's problems go to the ledger."""
    src = cfg.source
    selection = _selection(cfg)
    if raw is not None:
        works: dict[str, Any] = {c.key: c for c in raw.clips}
        considered = set(works) | set(raw.issues)
        store.write_plan_ledger("ingest", {k: raw.issues.get(k, []) for k in considered})
        summary.plan_items = [i for items in raw.issues.values() for i in items]
        source = {"dataset": src.dataset, "root": src.root, "licence": licence_note(src.dataset)}
        sources = list(store.attrs.get("sources", []))
        if source not in sources:
            store.update_attrs(sources=sources + [source])
    else:
        works = {k: None for k in store.clips() if selection.wants(*split_clip_key(k))}
    return works


def _plan_stage(cfg: PreprocessConfig, stage: Stage, store: Store, works: dict[str, Any],
                clip_layouts: dict[str, ClipLayout], state: _PlanState) -> None:
    """A stage's finished and pending blocks for every clip (recorded in `state`); clips it skips go to
    the ledger; blocks finished under another config are refused unless --recompute."""
    stats = state.summary.stages.setdefault(stage.name, StageSummary())
    record = store.stage_record(stage.name)
    skipped: dict[str, list[LedgerItem]] = {}
    stale_report: list[str] = []
    for key, raw_work in works.items():
        work = raw_work if stage.reads_raw else stage.plan_work(store, key, list(works))
        state.works[stage.name, key] = work
        layout = state.layouts[stage.name, key] = clip_layouts[key]
        stats.blocks += layout.n_blocks
        reason = stage.skip_reason(key, work)
        if reason:
            skipped[key] = [LedgerItem(stage.name, key, reason)]
            state.todo[stage.name, key], state.done[stage.name, key] = [], set()
            stats.skipped += layout.n_blocks
            continue
        clip_fp = state.clip_fps[stage.name, key] = _clip_fingerprint(stage, state.fps[stage.name], work)
        markers = store.markers(stage.name, key)
        current = {b for b, m in markers.items() if m.fingerprint == clip_fp and b < layout.n_blocks}
        # blocks an upstream stage of this run redoes must be redone here too (all of them when the
        # stage reads the whole clip or the whole subject, or the upstream stage is clip-wide)
        members = stage.scope_members(key, work)
        for dep in stage.requires:
            if stage.scope == "block" and REGISTRY[dep].scope == "block":
                current -= set(state.todo.get((dep, key), ()))
            elif any(state.todo.get((dep, m)) for m in members):
                current = set()
        stale = [b for b, m in markers.items() if m.fingerprint != clip_fp]
        if stale:
            stale_report.append(f"{stage.name} {key}: {len(stale)} finished block(s) under another config")
        state.todo[stage.name, key] = [b for b in range(layout.n_blocks) if b not in current]
        state.done[stage.name, key] = current
        stats.already_done += len(current)
    if stage.name != "ingest":  # (ingest's plan ledger holds the raw reader's findings)
        store.write_plan_ledger(stage.name, {k: skipped.get(k, []) for k in works})
    state.summary.skips += [i for items in skipped.values() for i in items]
    if stale_report and not cfg.runner.recompute:
        old = (record or {}).get("config", {})
        raise RefusedError(
            f"the store holds results of stage {stage.name} made with another config or from other raw data "
            f"({_config_diff(old, stage.config_dict())}):\n  " + "\n  ".join(stale_report[:10])
            + ("\n  ..." if len(stale_report) > 10 else "")
            + "\nRerun with --recompute to redo them, or write to a new store."
        )


def _prepare_store(stages: list[Stage], store: Store, keys: list[str], state: _PlanState) -> None:
    """Driver side, before any task: the arrays and meta groups of the clips with pending blocks, the
    markers downstream that those blocks make stale, the stage records, the software versions."""
    for stage in stages:
        for key in keys:
            if not state.todo[stage.name, key]:
                continue
            stage.prepare(store, state.layouts[stage.name, key], state.works[stage.name, key])
            store.prepare_meta(stage.name, key)
            for downstream in dependents(stage.name):
                scope = load_stages()[downstream].scope
                # a subject-scope stage reads every clip of the subject: all of them are out of date (a
                # group-scope stage's own clip is; the clips it only takes sources from are not tracked);
                # what a clip-wide stage (framing) redoes changes every block of the clip downstream
                members = [k for k in keys if clip_subject(k) == clip_subject(key)] if scope == "subject" else [key]
                for k in members:
                    for b in store.markers(downstream, k):
                        if scope != "block" or stage.scope != "block" or b in state.todo[stage.name, key]:
                            store.clear_marker(downstream, k, b)
        store.set_stage_record(stage.name, {"version": stage.version, "config": stage.config_dict(),
                                            "fingerprint": state.fps[stage.name], "updated": now_iso(),
                                            "licences": stage.licences()})
    store.update_attrs(software=package_versions())


def _finished_upstream(store: Store, dep: str, key: str, done: dict) -> set[int]:
    """Blocks of an upstream stage that are finished under its current config."""
    if (dep, key) in done:  # planned in this run
        return done[dep, key]
    record = store.stage_record(dep) or {}
    return {b for b, m in store.markers(dep, key).items() if m.stage_fingerprint == record.get("fingerprint")}


def _build_tasks(cfg: PreprocessConfig, state: _PlanState, stages: list[Stage], order: list[str], store: Store
                 ) -> tuple[list[SegmentTask], dict[str, set[str]]]:
    workers = max(1, cfg.runner.workers)
    threads = cfg.runner.threads or (1 if cfg.runner.scheduler else default_threads(cfg.runner.workers))
    tasks: list[SegmentTask] = []
    deps: dict[str, set[str]] = {}
    owner: dict[tuple[str, str, int], str] = {}  # (stage, clip, block) -> id of the task computing it
    for stage in stages:
        stats = state.summary.stages[stage.name]
        pending = [(k, state.todo[stage.name, k]) for (name, k) in state.works
                   if name == stage.name and state.todo.get((name, k))]
        n_blocks = sum(len(b) for _, b in pending)
        if cfg.runner.segment_blocks > 0:
            size = cfg.runner.segment_blocks
        elif stage.sequential:
            # long runs keep decoders sequential; clips are split only to give every worker two tasks
            size = max(1, math.ceil(n_blocks / (2 * workers)))
        else:
            size = 1
        for key, blocks in pending:
            if stage.scope != "block":
                _add_group_task(stage, key, blocks, state, store, owner, tasks, deps, threads)
                continue
            runnable: dict[int, set[str]] = {}
            finished = {dep: _finished_upstream(store, dep, key, state.done) for dep in stage.requires}
            for b in blocks:
                ups = {owner[dep, key, b] for dep in stage.requires if (dep, key, b) in owner}
                if all((dep, key, b) in owner or b in finished[dep] for dep in stage.requires):
                    runnable[b] = ups
                else:
                    stats.blocked += 1
            for seg in _segments(sorted(runnable), size):
                tid = f"{stage.name}:{key}:{seg[0]}-{seg[-1]}"
                tasks.append(_task(tid, stage, key, tuple(seg), state, store, threads))
                deps[tid] = set().union(*(runnable[b] for b in seg))
                for b in seg:
                    owner[stage.name, key, b] = tid
    return tasks, deps


def _task(tid: str, stage: Stage, key: str, blocks: tuple[int, ...], state: _PlanState, store: Store,
          threads: int) -> SegmentTask:
    return SegmentTask(tid, store.url, store.storage_options, stage.name, stage.config_dict(),
                       state.clip_fps[stage.name, key], state.fps[stage.name], state.layouts[stage.name, key],
                       blocks, state.works[stage.name, key], threads)


def _add_group_task(stage: Stage, key: str, blocks: list[int], state: _PlanState, store: Store, owner: dict,
                    tasks: list[SegmentTask], deps: dict[str, set[str]], threads: int) -> None:
    """One task for every pending block of a clip-scope or subject-scope stage: it runs once every
    block of the clip (or of all the subject's clips) is finished upstream or computed in this run."""
    ups: set[str] = set()
    for member in stage.scope_members(key, state.works[stage.name, key]):
        layout = state.layouts.get((stage.name, member)) or ClipLayout.from_group(store.clip(member))
        for dep in stage.requires:
            finished = _finished_upstream(store, dep, member, state.done)
            for b in range(layout.n_blocks):
                if (dep, member, b) in owner:
                    ups.add(owner[dep, member, b])
                elif b not in finished:
                    state.summary.stages[stage.name].blocked += len(blocks)
                    return
    tid = f"{stage.name}:{key}:{blocks[0]}-{blocks[-1]}"
    tasks.append(_task(tid, stage, key, tuple(blocks), state, store, threads))
    deps[tid] = ups
    for b in blocks:
        owner[stage.name, key, b] = tid


def execute_plan(plan: Plan, cfg: PreprocessConfig, reporter: Reporter | None = None) -> RunSummary:
    reporter = reporter or Reporter()
    summary = plan.summary
    if not plan.tasks:
        return summary

    def report(msg: dict) -> None:
        reporter.block_done(msg["stage"], msg["clip"], msg["block"], msg["items"])

    keeper = _SummaryKeeper(plan.store, plan.tasks)

    def on_outcome(outcome: TaskOutcome) -> None:
        _count_outcome(outcome)
        keeper.task_over(outcome.task)

    def _count_outcome(outcome: TaskOutcome) -> None:
        task = outcome.task
        stats = summary.stages[task.stage]
        if outcome.result is not None:
            stats.done += len(outcome.result.done)
            stats.already_done += len(outcome.result.skipped)
            stats.items += outcome.result.items
        elif outcome.upstream_failed:
            stats.skipped_upstream += len(task.blocks)
        else:
            markers = {b: plan.store.marker(task.stage, task.layout.key, b) for b in task.blocks}
            finished = {b for b, m in markers.items() if m is not None and m.fingerprint == task.fingerprint}
            entries = task_failure_items(task, outcome.error or "", finished)
            for block, item in entries:
                plan.store.write_block_ledger(task.stage, task.layout.key, block, [item])
            stats.done += len(set(task.blocks) & finished)
            stats.failed += len(entries)
            summary.task_errors.append(f"{task.task_id}: {outcome.error}")
            reporter.note(f"task {task.task_id} failed: {(outcome.error or '').strip().splitlines()[-1:]}")

    runner = cfg.runner
    if runner.workers == 0 and not runner.scheduler:
        executor = InlineExecutor(runner.retries, report)
    else:
        executor = DaskExecutor(runner.workers, runner.scheduler, runner.retries, report)
    try:
        run_tasks(plan.tasks, plan.deps, executor, on_outcome)
    finally:
        executor.close()
    keeper.finish()
    _record_run(plan, cfg)
    return summary


class _SummaryKeeper:
    """Driver side: brings a clip's summary (datasets/store.py) up to date for a stage as soon as every
    task of that (stage, clip) is over, so that a run stopped later leaves current summaries of what it
    finished. An interrupted run leaves the others behind: correct still (the next planning reads the
    markers the summary does not vouch for, and summarises them), only slower once."""

    def __init__(self, store: Store, tasks: list[SegmentTask]):
        self.store = store
        self.open: dict[tuple[str, str], int] = {}
        for task in tasks:
            self.open[task.stage, task.layout.key] = self.open.get((task.stage, task.layout.key), 0) + 1

    def task_over(self, task: SegmentTask) -> None:
        key = (task.stage, task.layout.key)
        self.open[key] -= 1
        if self.open[key] == 0:
            del self.open[key]
            self.store.summarise([task.layout.key], [task.stage])

    def finish(self) -> None:
        """After the last outcome: any (stage, clip) still open (none, unless a task was never reported)."""
        for stage, key in sorted(self.open):
            self.store.summarise([key], [stage])
        self.open.clear()


def _record_run(plan: Plan, cfg: PreprocessConfig) -> None:
    runs = list(plan.store.attrs.get("runs", []))[-49:]
    runs.append({"finished": now_iso(), "stages": list(cfg.stages),
                 "summary": {k: asdict(v) for k, v in plan.summary.stages.items()}})
    plan.store.update_attrs(runs=runs)


def preprocess(cfg: PreprocessConfig, reporter: Reporter | None = None) -> RunSummary:
    """Plan and run; the whole `cli.py preprocess` in one call."""
    plan = plan_run(cfg, reporter)
    return execute_plan(plan, cfg, reporter)

