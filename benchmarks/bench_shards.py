"""Streaming stage-2 samples: the shard set against the common per-file layout (one JPEG/PNG per frame and
camera plus an npz per frame, the same encoded bytes, decoded by the same decoder) with 0, 1 and 2 loader
workers; bare decode of the same images in one thread as the ceiling; the shard set read from s3:// on
loopback (moto) with a cold cache; and the loader's memory while streaming.

    python benchmarks/bench_shards.py [--store stores/demo.zarr] [--samples 640] [--keep DIR]

Without --store (or when it does not exist) a store of 2 subjects x 24 frames x 16 views at 512 px with
textured JPEG images is generated. Timing starts at the first batch (worker start-up excluded).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

BATCH = 8


def make_data(work: str, store: str | None) -> str:
    if store and os.path.exists(store):
        return store
    from datasets.capture.coloured_store import make_store

    url = os.path.join(work, "store.zarr")
    make_store(url, subjects=2, frames=24, views=16, res=512, crop=256, synth=2, block=8, texture=True)
    return url


def export_per_file(shards: str, out: str) -> list[tuple]:
    """The shard set's training views in the per-file layout; returns the sample list."""
    from datasets.image_codec import encode_image
    from datasets.shards.reader import ShardReader

    reader = ShardReader(shards)
    items = []
    for k, entry in enumerate(reader.manifest.shards("train")):
        shard = reader.shard("train", k)
        raw = shard.raw
        for row in range(entry["rows"]):
            base = os.path.join(out, f"s{k:04d}_r{row:03d}")
            os.makedirs(base, exist_ok=True)
            np.savez(os.path.join(base, "params.npz"), K=raw["K"][row], world_to_cam=raw["world_to_cam"][row],
                     lmk2d=raw["lmk2d"][row], pose=raw["pose"][row], scale=raw["scale"][row],
                     lmk3d=raw["lmk3d"][row], crop_ok=raw["crop_ok"][row], synth_ok=raw["synth_ok"][row],
                     identity=raw["identity"][row])
            views = np.flatnonzero(raw["view_ok"][row])
            for v in views:
                for name in ("rgb", "face_crop"):  # the same JPEG bytes
                    with open(os.path.join(base, f"{name}_{v:02d}.jpg"), "wb") as f:
                        f.write(shard.encoded(name, row, int(v)))
                for name in ("alpha", "face_mask"):  # mattes as PNG, like the store
                    with open(os.path.join(base, f"{name}_{v:02d}.png"), "wb") as f:
                        f.write(encode_image(shard.image(name, row, int(v)), "png", 95))
            for slot in np.flatnonzero(raw["synth_ok"][row]):
                with open(os.path.join(base, f"synth_{slot}.jpg"), "wb") as f:
                    f.write(shard.encoded("synth", row, int(slot)))
            items += [(base, int(v), [int(u) for u in views if u != v]) for v in views]
    return items


class PerFileDataset:
    """Map-style dataset over the per-file layout: the same stage-2 sample as ShardDataset."""

    def __init__(self, items: list[tuple], synth_ratio: float = 0.5):
        self.items, self.synth_ratio = items, synth_ratio

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        from datasets.image_codec import decode_image
        from datasets.non_face import non_face_image

        base, v, others = self.items[i]
        rng = np.random.default_rng(i)

        def read(name: str, channels: int) -> np.ndarray:
            with open(os.path.join(base, name), "rb") as f:
                return decode_image(f.read(), channels)

        params = np.load(os.path.join(base, "params.npz"))
        rgb = read(f"rgb_{v:02d}.jpg", 3)
        mask = read(f"face_mask_{v:02d}.png", 1)
        synth = np.flatnonzero(params["synth_ok"])
        if len(synth) and rng.random() < self.synth_ratio:
            condition = read(f"synth_{rng.choice(synth)}.jpg", 3)
        else:
            condition = read(f"face_crop_{rng.choice(others):02d}.jpg", 3)
        return {"rgb": rgb, "alpha": read(f"alpha_{v:02d}.png", 1),
                "non_face": non_face_image(rgb, mask), "condition": condition,
                "K": params["K"][v], "world_to_cam": params["world_to_cam"][v], "lmk2d": params["lmk2d"][v],
                "pose": params["pose"], "scale": params["scale"], "lmk3d": params["lmk3d"],
                "identity": params["identity"]}


def timed(loader, samples: int) -> float:
    """Samples per second over `samples` samples, timed from the first batch."""
    it = iter(loader)
    next(it)
    start, n = time.perf_counter(), 0
    for batch in it:
        n += len(batch["rgb"])
        if n >= samples:
            break
    return n / (time.perf_counter() - start)


def bare_decode(items: list[tuple], samples: int) -> float:
    """The per-file layout's four images per sample (rgb, alpha, face mask, condition: JPEG, PNG, PNG, JPEG)
    decoded from memory in one thread, and the non-face image made."""
    from datasets.image_codec import decode_image
    from datasets.non_face import non_face_image

    blobs = []
    for base, v, others in items[:samples]:
        names = [(f"rgb_{v:02d}.jpg", 3), (f"alpha_{v:02d}.png", 1), (f"face_mask_{v:02d}.png", 1),
                 (f"face_crop_{others[0]:02d}.jpg", 3)]
        sample = []
        for name, channels in names:
            with open(os.path.join(base, name), "rb") as f:
                sample.append((f.read(), channels))
        blobs.append(sample)
    start = time.perf_counter()
    for sample in blobs:
        rgb, _, mask, _ = (decode_image(b, c) for b, c in sample)
        non_face_image(rgb, mask)
    return len(blobs) / (time.perf_counter() - start)


def bare_decode_shards(shards: str, samples: int) -> float:
    """The shard set's encodings of the same four images (JPEG, zstd matte, zstd matte, JPEG) decoded from
    memory in one thread with the loader's decoder, and the non-face image made."""
    from datasets.non_face import non_face_image
    from datasets.shards.reader import ShardReader

    reader = ShardReader(shards)
    blobs = []
    for k in range(len(reader.manifest.shards("train"))):
        shard = reader.shard("train", k)
        for row, v in shard.items("stage2", "train"):
            other = next(u for u in np.flatnonzero(shard.raw["view_ok"][row]) if u != v)
            blobs.append((shard, [(n, shard.encoded(n, row, int(s))) for n, s in
                                  (("rgb", v), ("alpha", v), ("face_mask", v), ("face_crop", other))]))
            if len(blobs) == samples:
                break
        if len(blobs) == samples:
            break
    start = time.perf_counter()
    for shard, sample in blobs:
        rgb, _, mask, _ = (shard.decode(n, b) for n, b in sample)
        non_face_image(rgb, mask)
    return len(blobs) / (time.perf_counter() - start)


def rss_while_streaming(shards: str, epochs: int = 2) -> list[tuple[float, float]]:
    """(fraction of the stream, RSS MiB) of this process while streaming `epochs` epochs in process."""
    import psutil

    from datasets.streaming import ShardDataset

    ds = ShardDataset(shards, batch_size=BATCH, repeat=True)
    per_epoch = len(ds)
    proc, out = psutil.Process(), []
    for i, _ in enumerate(ds):
        if i % max(1, per_epoch // 4) == 0:
            out.append((i / per_epoch, proc.memory_info().rss / 2**20))
        if i + 1 >= epochs * per_epoch:
            break
    out.append((epochs, proc.memory_info().rss / 2**20))
    return out


def s3_stream(store: str, samples: int, cache: str) -> tuple[float, float]:
    """(build s, samples/s cold cache) for the shard set on s3:// served by moto on 127.0.0.1."""
    from datasets.shards.build import BuildOptions, build_shards
    from datasets.streaming import ShardDataset, StreamingLoader
    from datasets.local_s3 import local_s3

    with local_s3("bench") as opts:
        start = time.perf_counter()
        build_shards(BuildOptions([store], "s3://bench/shards", shard_rows=8, val_subjects="0", storage_options=opts))
        built = time.perf_counter() - start
        ds = ShardDataset("s3://bench/shards", batch_size=BATCH, storage_options=opts, cache_dir=cache)
        return built, timed(StreamingLoader(ds), samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default="stores/demo.zarr", help="a preprocessed store (generated when absent)")
    ap.add_argument("--samples", type=int, default=640)
    ap.add_argument("--keep", default=None, help="keep the generated data here")
    args = ap.parse_args()

    import torch
    from torch.utils.data import DataLoader

    from datasets.shards.build import BuildOptions, build_shards
    from datasets.streaming import ShardDataset, StreamingLoader

    torch.set_num_threads(1)
    work = args.keep or tempfile.mkdtemp(prefix="bench_shards_")
    try:
        store = make_data(work, args.store)
        shards = os.path.join(work, "shards")
        shutil.rmtree(shards, ignore_errors=True)
        start = time.perf_counter()
        m = build_shards(BuildOptions([store], shards, shard_rows=8, val_subjects="0")).manifest
        built = time.perf_counter() - start
        size = sum(o["bytes"] for s in m.shards("train") for o in s["objects"].values()) / 2**20
        print(f"store {store}: {m.split('train')['rows']} frames, {m.split('train')['counts']['train']['views']} "
              f"stage-2 samples; build-shards {built:.1f} s for {size:.0f} MiB ({size / built:.0f} MiB/s)")
        items = export_per_file(shards, os.path.join(work, "per_file"))
        n = min(args.samples, len(items) - BATCH)
        print(f"samples/s (stage-2 sample, batch {BATCH}, {n} samples, 2 CPU cores)")
        per_file_ceiling = bare_decode(items, n)
        ceiling = bare_decode_shards(shards, n)
        print(f"  bare decode, 1 thread, per-file encodings (JPEG + PNG mattes)    {per_file_ceiling:7.1f}")
        print(f"  bare decode, 1 thread, shard encodings (JPEG + zstd mattes)      {ceiling:7.1f}")
        rows = []
        for workers in (0, 1, 2):
            per_file = timed(DataLoader(PerFileDataset(items), batch_size=BATCH, shuffle=True,
                                        num_workers=workers), n)
            threads = 2 if workers == 0 else 1
            shard = timed(StreamingLoader(ShardDataset(shards, batch_size=BATCH, decode_threads=threads),
                                          num_workers=workers), n)
            rows.append((workers, per_file, shard))
            print(f"  {workers} workers: per-file {per_file:7.1f}   shards {shard:7.1f} ({threads} decode "
                  f"thread{'s' if threads > 1 else ''})   shards/per-file {shard / per_file:4.2f}x   "
                  f"bare/shards {ceiling / shard:4.2f}x")
        built_s3, remote = s3_stream(store, n, os.path.join(work, "cache"))
        local = rows[0][2]
        print(f"  s3:// on loopback (moto), 0 workers, cold cache: {remote:7.1f}   local/s3 {local / remote:4.2f}x  "
              f"(build-shards to s3 {built_s3:.1f} s)")
        rss = rss_while_streaming(shards)
        print("loader RSS while streaming 2 epochs in process (epochs, MiB): "
              + ", ".join(f"{f:.2f}: {r:.0f}" for f, r in rss)
              + f"; growth after the first quarter {rss[-1][1] - rss[1][1]:+.0f} MiB")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
