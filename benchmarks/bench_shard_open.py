"""Opening one shard of a remote shard set (s3:// served by moto on 127.0.0.1, cold cache): requests and
wall time before (each array its own object, fetched one after another) and after (the raw arrays in one
pack object, the shard's objects fetched on 8 threads). Measured as served, and with a first-byte latency
added to every request (the server sleeps before answering), as a remote object store has.

    python benchmarks/bench_shard_open.py [--latency-ms 20] [--shards 4]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from datasets.local_s3 import RequestLog


class SlowLog(RequestLog):
    """The request log, answering each request `latency` seconds late (requests in flight overlap)."""

    latency = 0.0

    def wrap(self, app):
        counted = super().wrap(app)

        def slow(environ, start_response):
            time.sleep(self.latency)
            return counted(environ, start_response)
        return slow


def open_shards(url: str, opts: dict, log: RequestLog, cache: str, n: int, pack: bool, threads: int
                ) -> tuple[float, float]:
    """(requests, seconds) per shard to open the first `n` training shards, each with a cold cache."""
    from datasets.shards.reader import ShardReader

    requests, seconds = 0, 0.0
    for k in range(n):
        shutil.rmtree(cache, ignore_errors=True)
        reader = ShardReader(url, storage_options=opts, cache_dir=cache, fetch_threads=threads)
        if not pack:  # as a manifest built before packs
            for entry in reader.manifest.shards("train"):
                entry.pop("pack", None)
        log.reset()
        start = time.perf_counter()
        reader.shard("train", k)
        seconds += time.perf_counter() - start
        requests += log.total()
        reader.close()
    return requests / n, seconds / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latency-ms", type=float, default=20.0, help="added first-byte latency per request")
    ap.add_argument("--shards", type=int, default=4, help="shards opened per measurement")
    args = ap.parse_args()

    from datasets.capture.coloured_store import make_store
    from datasets.local_s3 import local_s3
    from datasets.shards.build import BuildOptions, build_shards

    work = tempfile.mkdtemp(prefix="bench_shard_open_")
    log = SlowLog()
    try:
        store = os.path.join(work, "store.zarr")
        make_store(store, subjects=2, frames=16, views=16, res=128, crop=64, synth=2, block=8, texture=True)
        with local_s3("bench", log) as opts:
            url = "s3://bench/shards"
            m = build_shards(BuildOptions([store], url, shard_rows=8, val_subjects="0", storage_options=opts)).manifest
            entry = m.shards("train")[0]
            images = sum(1 for n in entry["objects"] if m.arrays[n]["kind"] != "raw")
            n = min(args.shards, len(m.shards("train")))
            mib = (sum(o["bytes"] for o in entry["objects"].values()) + entry["pack"]["bytes"]) / 2**20
            print(f"open one remote shard (moto s3:// on loopback, cold cache, {n} shards of {m.shard_rows} rows, "
                  f"{len(entry['objects'])} arrays of which {images} images, ~{mib:.1f} MiB)")
            cache = os.path.join(work, "cache")
            for latency in (0.0, args.latency_ms / 1000):
                log.latency = latency
                before = open_shards(url, opts, log, cache, n, pack=False, threads=1)
                after = open_shards(url, opts, log, cache, n, pack=True, threads=8)
                label = "as served" if not latency else f"+{latency * 1000:.0f} ms per request"
                print(f"  {label:22s} requests: per-array sequential {before[0]:5.1f}   pack + parallel "
                      f"{after[0]:5.1f}   ({before[0] / after[0]:.1f}x fewer)")
                print(f"  {'':22s} ms:       per-array sequential {before[1] * 1000:5.1f}   pack + parallel "
                      f"{after[1] * 1000:5.1f}   ({before[1] / after[1]:.1f}x faster)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
