"""Terminal presentation of runs and stores (rich): progress bars, summaries, info and ledger tables."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from pipeline.runner import Reporter, RunSummary


class RichReporter(Reporter):
    """One progress bar per stage, counted in frame blocks."""

    def __init__(self, console: Console):
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]{task.description:>10}"), BarColumn(), MofNCompleteColumn(), TextColumn("blocks"),
            TextColumn("{task.fields[items]} failed items"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=console,
        )
        self.bars: dict[str, Any] = {}

    def __enter__(self) -> "RichReporter":
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def planned(self, stage: str, todo_blocks: int, done_blocks: int) -> None:
        self.bars[stage] = self.progress.add_task(stage, total=max(todo_blocks, 0), items=0)
        if done_blocks:
            self.console.print(f"{stage}: {done_blocks} block(s) already finished, skipped")

    def block_done(self, stage: str, clip: str, block: int, items: int) -> None:
        bar = self.bars.get(stage)
        if bar is not None:
            task = self.progress.tasks[bar]
            self.progress.update(bar, advance=1, items=task.fields["items"] + items)

    def note(self, text: str) -> None:
        self.console.print("[yellow]" + escape(text))


def print_summary(console: Console, summary: RunSummary, store_url: str) -> None:
    table = Table(title=f"preprocess -> {store_url}", box=box.SIMPLE_HEAD, pad_edge=False,
                  caption="blocks: done before this run, done now, failed (task crashed), upstream failed, skipped "
                          "(nothing to do: see the ledger), blocked (upstream missing); items: failed items recorded")
    for col in ("stage", "blocks", "before", "now", "failed", "upstream", "skipped", "blocked", "items"):
        table.add_column(col, justify="right" if col != "stage" else "left", no_wrap=True,
                         min_width=9 if col == "stage" else None)
    for name, s in summary.stages.items():
        table.add_row(name, str(s.blocks), str(s.already_done), str(s.done), str(s.failed),
                      str(s.skipped_upstream), str(s.skipped), str(s.blocked), str(s.items))
    console.print(table)
    for item in summary.skips[:10]:
        console.print(escape(f"{item.stage} {item.clip}: {item.reason}"))
    if len(summary.skips) > 10:
        console.print(f"... {len(summary.skips) - 10} more clips skipped (python cli.py report {store_url})")
    if summary.plan_items:
        console.print(f"[yellow]{len(summary.plan_items)} problem(s) found while reading the raw data:")
        for item in summary.plan_items[:10]:
            where = " ".join(x for x in (item.stage, item.clip, f"view {item.view}" if item.view else "") if x)
            console.print(escape(f"  {where}: {item.reason}"))
        if len(summary.plan_items) > 10:
            console.print("  ...")
    failed = summary.item_failures
    if failed:
        console.print(f"{failed} failed item(s) recorded; list them with: python cli.py report {store_url}")
    for err in summary.task_errors[:5]:
        lines = err.strip().splitlines()
        console.print("[red]task failure:[/red] " + escape(f"{lines[0]} ... {lines[-1]}"))


def print_info(console: Console, info: dict[str, Any], verbose: bool = False) -> None:
    console.print(f"[bold]{info['url']}[/bold]  schema v{info['schema_version']}  created {info['created']}")
    for src in info.get("sources") or []:
        console.print(escape(f"source: {src.get('dataset')} at {src.get('root')}"))
        if src.get("licence"):
            console.print(escape(f"  licence: {src['licence']}"))
    if info.get("software"):
        console.print("software: " + ", ".join(f"{k} {v}" for k, v in sorted(info["software"].items())))
    for name, rec in (info.get("stages") or {}).items():
        cfg = ", ".join(f"{k}={v}" for k, v in rec.get("config", {}).items())
        console.print(escape(f"stage {name} v{rec.get('version')} [{rec.get('fingerprint')}]: {cfg}"))
        for note in rec.get("licences") or []:
            console.print(escape(f"  licence: {note}"))
    table = Table(title=f"{len(info['clips'])} clip(s)")
    stages = sorted({s for c in info["clips"] for s in c["stages"]})
    for col in ("clip", "layout", "views", "frames", *[f"{s} blocks" for s in stages]):
        table.add_column(col)
    for c in info["clips"]:
        cells = []
        for s in stages:
            p = c["stages"].get(s, {})
            cell = f"{p.get('done', 0)}/{p.get('blocks', 0)}"
            if p.get("stale"):
                cell += f" ({p['stale']} stale)"
            cells.append(cell)
        layout = f"{c.get('dataset') or ''} {c.get('layout') or ''}".strip()
        table.add_row(c["clip"], layout, str(c["views"]), str(c["frames"]), *cells)
    console.print(table)
    for c in info["clips"]:  # what the reader found and did (rescaled intrinsics, meta files, released data)
        raw = c.get("raw") or {}
        extras = list(raw.get("notes") or [])
        if raw.get("released_mattes"):
            extras.append(f"released mattes for {len(raw['released_mattes'])} view(s)")
        applied = {k: v for k, v in ((c.get("color_correction") or {}).get("views") or {}).items() if v}
        if applied:
            kinds = sorted({v["kind"] for v in applied.values()})
            extras.append(f"colour correction {'/'.join(kinds)} applied to {len(applied)} view(s)")
        if extras:
            console.print(escape(f"{c['clip']}: " + "; ".join(extras[:6]) + (" ..." if len(extras) > 6 else "")))
    if info["clips"]:
        shown = info["clips"] if verbose else info["clips"][:1]
        for c in shown:
            arrays = Table(title=f"arrays of {c['clip']}" + ("" if verbose else " (all clips alike; -v for each)"))
            for col in ("array", "shape", "dtype", "chunk", "shard", "codec", "stage", "what"):
                arrays.add_column(col, overflow="fold")
            for name, a in c["arrays"].items():
                arrays.add_row(name, str(tuple(a["shape"])), a["dtype"], str(tuple(a["chunks"])),
                               str(tuple(a["shards"])) if a["shards"] else "-", a["codec"], a.get("stage", ""),
                               a.get("doc", ""))
            console.print(arrays)
    console.print(f"ledger: {info['ledger_items']} failed item(s)")


def print_ledger(console: Console, rows: list[dict[str, Any]], limit: int) -> None:
    if not rows:
        console.print("no failures recorded")
        return
    table = Table(title=f"{len(rows)} failure(s)")
    for col in ("stage", "kind", "clip", "frame", "view", "reason"):
        table.add_column(col, overflow="fold")
    for r in rows[:limit]:
        table.add_row(r["stage"], r["kind"], escape(r["clip"]), "" if r["frame"] is None else str(r["frame"]),
                      escape(r["view"] or ""), escape(r["reason"]))
    console.print(table)
    if len(rows) > limit:
        console.print(f"... {len(rows) - limit} more (--limit, or --json for all)")
