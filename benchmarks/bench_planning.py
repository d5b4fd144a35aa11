"""Planning on object storage: the requests (and seconds) of planning a resumed preprocess run of a store on
S3 (moto on loopback) when every completion marker is read on its own (a store without summaries: what
planning always did) against reading one summary per clip (datasets/store.py), side by side.

    python benchmarks/bench_planning.py [--clips 100] [--blocks 6]    (BENCH_PLANNING_DETAIL=1: requests by kind)

The store is made cheaply: empty clips, two benchmark stages (registered here, so that no raw capture is
needed), and the markers a finished run would have left, written straight into the bucket with the
fingerprints the real planning code computes. The planning measured is the real one (plan_run).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from datasets import zarr_keys  # noqa: E402
from datasets.local_s3 import count_requests, local_s3  # noqa: E402
from datasets.store import Marker, Store, _group_doc, now_iso  # noqa: E402
from pipeline.config import PreprocessConfig  # noqa: E402
from pipeline.runner import _stage_fingerprints, plan_run  # noqa: E402
from pipeline.stage import BlockOutput, Stage, load_stages, register  # noqa: E402

BUCKET = "headforge-bench"
WRITES = ("put_object", "delete_object", "delete_objects", "copy_object")


@dataclass
class _NoConfig:
    pass


class _BenchStage(Stage):
    """Does nothing: planning is what is measured."""

    config_class = _NoConfig

    def prepare(self, store, layout, work):  # noqa: ANN001, ANN201
        pass

    def run(self, ctx):  # noqa: ANN001, ANN201
        for block in ctx.blocks:
            yield BlockOutput(block, {})


@register
class BenchA(_BenchStage):
    name = "bench_a"


@register
class BenchB(_BenchStage):
    name = "bench_b"
    requires = ("bench_a",)


def make_store(url: str, options: dict, clips: int, blocks: int) -> tuple[PreprocessConfig, int]:
    """A store of `clips` clips whose two stages finished every block, written in one batch of objects;
    -> (the run's config, markers). The markers carry the fingerprints the runner computes."""
    import s3fs

    store = Store(url, options)
    cfg = PreprocessConfig(store=url, storage_options=dict(options), stages=["bench_a", "bench_b"])
    stages = [load_stages()[name](cfg.stage_config(name)) for name in cfg.stages]
    fingerprints = _stage_fingerprints(store, stages)
    objects = {}
    for c in range(clips):
        key = f"s{c:03d}/seq"
        objects[f"s{c:03d}/zarr.json"] = _group_doc({})
        objects[f"{key}/zarr.json"] = _group_doc({"clip": key, "views": ["cam0"], "n_frames": blocks * 4,
                                                  "block_frames": 4, "frame_ids": list(range(blocks * 4))})
        for stage in stages:
            fp = fingerprints[stage.name]
            for b in range(blocks):
                marker = Marker(stage.name, key, b, fp, fp, [4 * b, 4 * b + 4], finished=now_iso())
                objects[f"_meta/markers/{stage.name}/{key}/b{b:06d}/zarr.json"] = _group_doc({"marker": asdict(marker)})
    base = url.removeprefix("s3://")
    s3fs.S3FileSystem(**options).pipe({f"{base}/{k}": v for k, v in objects.items()})
    return cfg, clips * blocks * len(stages)


def measure(cfg: PreprocessConfig) -> dict:
    with count_requests() as calls:
        start = time.perf_counter()
        plan = plan_run(cfg)
        seconds = time.perf_counter() - start
    if os.environ.get("BENCH_PLANNING_DETAIL"):
        print(Counter((op, "/".join(k.split("/")[1:3]) if "_meta" in k else k.split("/")[-1]) for op, k in calls))
    ops = Counter(op for op, _ in calls)
    writes = sum(n for op, n in ops.items() if op in WRITES)
    return {"requests": len(calls), "reads": len(calls) - writes, "writes": writes, "seconds": seconds,
            "marker_reads": sum(1 for op, key in calls if op == "get_object" and "/_meta/markers/" in key),
            "plan": ([t.task_id for t in plan.tasks], plan.summary.stages["bench_b"].already_done)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=100)
    ap.add_argument("--blocks", type=int, default=6, help="blocks per clip and stage")
    args = ap.parse_args()
    with local_s3(BUCKET) as options:
        url = f"s3://{BUCKET}/store.zarr"
        t = time.perf_counter()
        cfg, n_markers = make_store(url, options, args.clips, args.blocks)
        print(f"store: {args.clips} clips x 2 stages x {args.blocks} blocks = {n_markers} markers on S3 (moto, "
              f"loopback), made in {time.perf_counter() - t:.1f} s")
        zarr_keys.delete_dir(Store(url, options).zstore, "_meta/summary")
        before = measure(cfg)  # reads every marker (and leaves the summaries behind)
        after = measure(cfg)
    assert before["plan"] == after["plan"] and before["plan"] == ([], args.clips * args.blocks), (before, after)
    print("planning the resumed run (nothing left to do; the same plan both ways):")
    print(f"{'':34s}{'requests':>10s}{'reads':>8s}{'writes':>8s}{'marker GETs':>13s}{'seconds':>9s}")
    for name, r in (("every marker read (no summaries)", before), ("one summary per clip", after)):
        print(f"{name:34s}{r['requests']:10d}{r['reads']:8d}{r['writes']:8d}{r['marker_reads']:13d}"
              f"{r['seconds']:9.2f}")
    print(f"{'ratio':34s}{before['requests'] / after['requests']:9.1f}x{before['reads'] / after['reads']:7.1f}x"
          f"{'':21s}{before['seconds'] / after['seconds']:8.1f}x")
    print("(the first planning without summaries also writes them: its writes are those summaries)")


if __name__ == "__main__":
    main()
