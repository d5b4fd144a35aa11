"""build-shards: preprocessed stores -> a shard set (Zarr v3, sample-major, one object per array and shard).

    <out>/manifest.json                 written last: digests of every object, counts, split, provenance
    <out>/zarr.json                     root group
    <out>/<split>/<array>/...           one array per product, rows first: [N, ...]; shard k holds rows
                                        [k*S, (k+1)*S) of every array of the split
    <out>/<split>/_packed/<k>.bin       shard k's raw arrays once more in one object (datasets/shards/pack.py)
    <out>/_build/plan.json              the rows of every shard (resuming rebuilds only what is missing)
    <out>/_build/done/<split>/<k>.json  a finished shard's object digests

A row is one frame of one clip with every view: images, mattes, face crops, face masks (one encoded image
per inner chunk, copied byte for byte from the store), synthesized expression images, and the small
arrays (cameras, 2D landmarks, crop transforms, pose, scale, 3D landmarks, identity). Rows are shuffled
globally within each split (seed) before they are cut into shards, so every shard mixes subjects.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from threading import Lock

import numpy as np
import zarr
from numcodecs import Zstd
from zarr.codecs import ZstdCodec

from datasets import image_codec, zarr_keys
from datasets.errors import UserError
from datasets.schema import SHARDS
from datasets.shards import zarr_shard
from datasets.shards.manifest import FORMAT, MANIFEST, SCHEMA_VERSION, Manifest, count_samples, digest
from datasets.shards.pack import encode_pack, pack_key
from datasets.shards.select import SYNTH_MODES, ClipFacts, SelectionError, holdout_mask, split_identities, store_facts
from datasets.shards.source import SourceStore
from datasets.store import image_codec_config, now_iso, open_zarr_store

MATTE_LEVEL = 3  # zstd level of the mattes

PLAN = "_build/plan.json"


@dataclass
class BuildOptions:
    stores: list[str]  # preprocessed stores (paths or fsspec URLs)
    out: str  # shard set directory or fsspec URL
    seed: int = 0  # global shuffle, validation subjects, held-out frames
    shard_rows: int = 32  # frames (rows) per shard
    val_subjects: str = "0.1"  # validation split by subject: a fraction, a count or names
    holdout_views: str = ""  # cameras kept for evaluation in the training split: serials, or a count
    holdout_frames: float = 0.0  # fraction of each training clip's frames kept for evaluation
    synth: str = "auto"  # synthesized expression images: auto (where present), require, off
    frame_stride: int = 1  # keep every n-th stored frame
    threads: int = 4  # shards written at once (by this process's thread pool; without workers/scheduler)
    workers: int = 0  # local Dask worker processes writing the shards instead (0: the thread pool)
    scheduler: str | None = None  # address of an existing Dask scheduler whose workers write the shards
    overwrite: bool = False  # replace a shard set built with other options
    storage_options: dict = field(default_factory=dict)  # fsspec options of the stores and the output

    def __post_init__(self) -> None:
        if self.synth not in SYNTH_MODES:
            raise SelectionError(f"--synth must be one of {SYNTH_MODES}, got {self.synth!r}")
        if self.shard_rows < 1 or self.frame_stride < 1:
            raise SelectionError("--shard-rows and --frame-stride must be at least 1")
        if not 0 <= self.holdout_frames < 1:
            raise SelectionError(f"--holdout-frames takes a fraction in [0, 1), got {self.holdout_frames}")
        if not self.stores:
            raise SelectionError("build-shards needs at least one store")
        if self.workers < 0 or self.threads < 1:
            raise SelectionError(f"--workers must be at least 0 and --threads at least 1, got {self.workers} "
                                 f"and {self.threads}")
        if self.workers and self.scheduler:
            raise SelectionError("give --workers (a local Dask cluster) or --scheduler (an existing one), not both")


@dataclass
class BuildResult:
    manifest: Manifest
    written: int  # shards written by this call
    skipped: int  # shards found finished from an earlier call
    excluded: list[str]  # clips that gave no rows, with the reason


class ShardBuildError(UserError, RuntimeError):
    """The output holds a shard set of other options or content."""


def _holdout_views(option: str, facts: list[ClipFacts], seed: int) -> list[str]:
    option = option.strip()
    if not option:
        return []
    serials = sorted({v for f in facts if len(f.views) > 1 for v in f.views})
    if option.isdigit():
        count = int(option)
        if count >= len(serials) and serials:
            raise SelectionError(f"--holdout-views {count} leaves no training camera (of {len(serials)})")
        rng = np.random.default_rng([seed, 0x7153])
        return sorted(serials[i] for i in rng.permutation(len(serials))[:count])
    chosen = [s.strip() for s in option.split(",") if s.strip()]
    unknown = set(chosen) - set(serials)
    if unknown:
        raise SelectionError(f"--holdout-views: cameras not in the multi-view clips: {sorted(unknown)}")
    return chosen


def plan_build(opts: BuildOptions, sources: list[SourceStore]) -> tuple[dict, list[ClipFacts], list[str]]:
    """The build plan (JSON-able): layout, clips, and for each split its subjects and shuffled rows."""
    facts: list[ClipFacts] = []
    for i, src in enumerate(sources):
        facts.extend(store_facts(src.store, i, opts.synth))
    excluded = [f"{sources[f.source].url}:{f.key}: missing {', '.join(f.missing)}" for f in facts if f.missing]
    excluded += [f"{sources[f.source].url}:{f.key}: no usable frame" for f in facts
                 if not f.missing and not f.frame_ok.any()]
    usable = [f for f in facts if not f.missing and f.frame_ok.any()]
    if not usable:
        detail = "\n  ".join(excluded) or "the stores hold no clips"
        raise SelectionError(f"no usable frames in {', '.join(opts.stores)}:\n  {detail}\n"
                             "Run the stages ingest, matting, landmarks, fitting and crops first.")
    shapes = {}
    for f in usable:
        src = sources[f.source]
        shapes.setdefault("resolution", set()).add(src.array(f.key, "rgb").shape[2])
        shapes.setdefault("crop", set()).add(src.array(f.key, "face_crop").shape[2])
    for what, values in shapes.items():
        if len(values) > 1:
            raise SelectionError(f"the stores differ in {what} ({sorted(values)}); one shard set needs one")
    widths = {f.n_expression for f in usable}
    layout = {"views": max(len(f.views) for f in usable), "resolution": shapes["resolution"].pop(),
              "crop": shapes["crop"].pop(), "synth": max(f.n_synth for f in usable),
              "expression": widths.pop() if len(widths) == 1 else 0}
    held_views = _holdout_views(opts.holdout_views, usable, opts.seed)
    train_ids, val_ids = split_identities([f.identity for f in usable], opts.val_subjects, opts.seed)
    clips, rows = [], {"train": [], "val": []}
    for c, f in enumerate(usable):
        split = "val" if f.identity in val_ids else "train"
        heldout = holdout_mask(f, held_views, opts.holdout_frames, opts.seed) if split == "train" else \
            np.zeros_like(f.view_ok)
        clips.append({"source": f.source, "clip": f.key, "identity": f.identity, "views": f.views,
                      "frame_ids": f.frame_ids, "synth": f.has_synth, "split": split, "stamp": f.stamp,
                      "view_ok": f.view_ok.astype(int).tolist(), "heldout": heldout.astype(int).tolist()})
        rows[split].extend([c, int(t)] for t in np.flatnonzero(f.frame_ok) if t % opts.frame_stride == 0)
    splits = {}
    for name, ids in (("train", train_ids), ("val", val_ids)):
        if not rows[name]:
            continue
        order = np.random.default_rng([opts.seed, zlib.crc32(name.encode())]).permutation(len(rows[name]))
        splits[name] = {"subjects": ids, "rows": [rows[name][i] for i in order]}
    options = {k: v for k, v in asdict(opts).items()
               if k not in ("threads", "workers", "scheduler", "overwrite", "storage_options", "out")}
    plan = {"options": options, "layout": layout, "holdout_views": held_views, "clips": clips, "splits": splits}
    return plan, usable, excluded


def _array_specs(plan: dict, sources: list[SourceStore], facts: list[ClipFacts]) -> dict[str, dict]:
    """The shard set's arrays (datasets/schema.py SHARDS) at this plan's sizes; images keep the store's codec,
    mattes become raw bytes + zstd instead of the store's PNG (lossless, same size, ~12x faster to decode)."""
    L = plan["layout"]
    sizes = {"V": L["views"], "R": L["resolution"], "C": L["crop"], "N": L["synth"], "E": L["expression"]}
    specs = {}
    for name, spec in SHARDS.items():
        if (spec.source in ("synth", "synth_ok") and not sizes["N"]) or (name == "expression" and not sizes["E"]):
            continue  # no synthesized images / no morphable model in these stores
        entry = {"kind": spec.kind, "row_shape": list(spec.shape(**sizes)), "dtype": spec.dtype}
        if spec.kind == "image":
            clip = next(f for f in facts if f.has_synth) if name == "synth" else facts[0]
            entry["codec"] = image_codec_config(sources[clip.source].array(clip.key, spec.source))
        elif spec.kind == "matte":
            entry["codec"] = {"format": "zstd", "level": MATTE_LEVEL}
        specs[name] = entry
    return specs


def _create_arrays(root: zarr.Group, split: str, n_rows: int, shard_rows: int, specs: dict[str, dict]) -> None:
    group = root.require_group(split)
    for name, spec in specs.items():
        shape = (n_rows,) + tuple(spec["row_shape"])
        if name in group and tuple(group[name].shape) == shape:
            continue
        if spec["kind"] in ("image", "matte"):
            lead = len(spec["row_shape"]) - (3 if spec["row_shape"][-1] == 3 else 2)
            chunks = (1,) * (1 + lead) + tuple(spec["row_shape"][lead:])
            if spec["kind"] == "image":
                codecs = {"serializer": image_codec.ImageCodec(**spec["codec"]), "compressors": None}
            else:
                codecs = {"compressors": ZstdCodec(level=spec["codec"]["level"])}
            group.create_array(name, shape=shape, dtype="uint8", chunks=chunks,
                               shards=(shard_rows,) + tuple(spec["row_shape"]), filters=None, fill_value=0,
                               overwrite=True, **codecs)
        else:
            group.create_array(name, shape=shape, dtype=spec["dtype"], chunks=(shard_rows,) + tuple(spec["row_shape"]),
                               compressors=None, filters=None, fill_value=0, overwrite=True)


class _Writer:
    """Writes the objects of one shard and returns their digests."""

    def __init__(self, opts: BuildOptions, plan: dict, sources: list[SourceStore], specs: dict, zstore,  # noqa: ANN001
                 root: zarr.Group):
        self.opts, self.plan, self.sources, self.specs = opts, plan, sources, specs
        self.zstore, self.root = zstore, root
        self.zstd = Zstd(level=MATTE_LEVEL)
        self.subject_index = {s: {i: n for n, i in enumerate(plan["splits"][s]["subjects"])} for s in plan["splits"]}

    def _put(self, key: str, data: bytes) -> dict:
        zarr_keys.set_bytes(self.zstore, key, data)
        return {"key": key, "bytes": len(data), "sha256": digest(data)}

    def write_shard(self, split: str, k: int) -> dict:
        S, L = self.opts.shard_rows, self.plan["layout"]
        rows = self.plan["splits"][split]["rows"][k * S:(k + 1) * S]
        clips = self.plan["clips"]
        group = self.root[split]
        objects, raw = {}, {}
        for name, spec in self.specs.items():
            array = group[name]
            key = f"{array.path}/{array.metadata.encode_chunk_key((k,) + (0,) * (array.ndim - 1))}"
            if spec["kind"] in ("image", "matte"):
                slots = spec["row_shape"][0]
                chunks: list[bytes | None] = [None] * (S * slots)
                for r, (c, t) in enumerate(rows):
                    clip = clips[c]
                    src = self.sources[clip["source"]]
                    if name == "synth":
                        if not clip["synth"]:
                            continue
                        ok = src.clip_arrays(clip["clip"], True, False)["synth_ok"][t]
                        n = len(ok)
                    else:
                        ok = np.asarray(clip["view_ok"][t], bool)
                        n = len(clip["views"])
                    for v in range(n):
                        if ok[v]:
                            data = src.image_chunk(clip["clip"], name, t, v)
                            if data is not None and spec["kind"] == "matte":
                                data = self.zstd.encode(image_codec.decode_image(data, 1))
                            chunks[r * slots + v] = data
                objects[name] = self._put(key, zarr_shard.encode_shard(chunks))
            else:
                data = np.zeros((S,) + tuple(spec["row_shape"]), dtype=np.dtype(spec["dtype"]).newbyteorder("<"))
                for r, (c, t) in enumerate(rows):
                    data[r] = self._raw_value(split, name, c, t, data.shape[1:])
                raw[name] = data.tobytes()
                objects[name] = self._put(key, raw[name])
        view_ok = np.zeros((len(rows), L["views"]), bool)
        heldout = np.zeros_like(view_ok)
        for r, (c, t) in enumerate(rows):
            n = len(clips[c]["views"])
            view_ok[r, :n] = clips[c]["view_ok"][t]
            heldout[r, :n] = clips[c]["heldout"][t]
        record = {"index": k, "rows": len(rows), "counts": count_samples(view_ok, heldout), "objects": objects}
        if raw:
            record["pack"] = self._put_pack(split, k, raw)
        return record

    def _put_pack(self, split: str, k: int, raw: dict[str, bytes]) -> dict:
        """The raw arrays once more as one object (datasets/shards/pack.py): a remote reader opens the shard
        with one request for all of them instead of one per array."""
        data, layout = encode_pack(raw)
        return self._put(pack_key(split, k), data) | {"arrays": layout}

    def _raw_value(self, split: str, name: str, c: int, t: int, shape: tuple) -> np.ndarray:
        clip = self.plan["clips"][c]
        if name == "identity":
            return np.asarray(self.subject_index[split][clip["identity"]])
        if name == "clip":
            return np.asarray(c)
        if name == "frame":
            return np.asarray(t)
        if name in ("view_ok", "heldout"):
            out = np.zeros(shape, bool)
            out[:len(clip["views"])] = clip[name][t]
            return out
        arrays = self.sources[clip["source"]].clip_arrays(clip["clip"], clip["synth"],
                                                          "expression" in self.specs)
        if name == "synth_ok" and not clip["synth"]:
            return np.zeros(shape, bool)
        value = arrays[name] if name == "world_to_cam" else arrays[name][t]
        out = np.zeros(shape, value.dtype)
        out[tuple(slice(0, n) for n in value.shape)] = value  # pad views or synth slots
        return out


def build_shards(opts: BuildOptions, progress: Callable[[int, int], None] | None = None,
                 stop_after: int | None = None) -> BuildResult:
    """Build (or finish building) the shard set. `stop_after`: return after writing that many shards
    (tests use it to interrupt a build)."""
    sources = [SourceStore(url, opts.storage_options) for url in opts.stores]
    plan, facts, excluded = plan_build(opts, sources)
    zstore = open_zarr_store(opts.out, opts.storage_options)
    plan_text = json.dumps(plan, sort_keys=True).encode()
    previous = zarr_keys.get_bytes(zstore, PLAN)
    if previous is not None and previous != plan_text:
        if not opts.overwrite:
            raise ShardBuildError(f"{opts.out} holds a shard set built from other stores or options; "
                                  "choose another --out, or pass --overwrite to replace it")
        for split in json.loads(previous).get("splits", {}):  # the old set goes entirely
            zarr_keys.delete_dir(zstore, split)
        zarr_keys.delete_dir(zstore, "_build")
        zarr_keys.delete(zstore, MANIFEST)
    elif previous is None and zarr_keys.get_bytes(zstore, "zarr.json") is not None and not opts.overwrite:
        raise ShardBuildError(f"{opts.out} holds something other than a resumable shard set; "
                              "choose another --out, or pass --overwrite")
    specs = _array_specs(plan, sources, facts)
    root = zarr.open_group(zstore, mode="a", zarr_format=3)
    root.attrs.update({"format": FORMAT, "schema_version": SCHEMA_VERSION})
    for split, info in plan["splits"].items():
        _create_arrays(root, split, len(info["rows"]), opts.shard_rows, specs)
    zarr_keys.set_bytes(zstore, PLAN, plan_text)

    todo, done = [], {}
    for split, info in plan["splits"].items():
        for k in range(-(-len(info["rows"]) // opts.shard_rows)):
            record = zarr_keys.get_bytes(zstore, f"_build/done/{split}/{k:06d}.json")
            if record is None:
                todo.append((split, k))
            else:
                done[(split, k)] = json.loads(record)
    total, skipped = len(todo) + len(done), len(done)
    writer = _Writer(opts, plan, sources, specs, zstore, root)
    if progress:
        progress(len(done), total)
    if stop_after is not None:
        todo = todo[:stop_after]

    if opts.workers or opts.scheduler:
        written = _shards_on_dask(opts, plan, specs, todo)
    else:
        written = _shards_in_threads(writer, zstore, todo, opts.threads)
    for item, record in written:
        done[item] = record
        if progress:
            progress(len(done), total)
    if len(done) < total:
        return BuildResult(Manifest({}), len(todo), skipped, excluded)
    manifest = _manifest(opts, plan, specs, sources, done)
    zarr_keys.set_bytes(zstore, MANIFEST, manifest.dumps())
    return BuildResult(manifest, len(todo), skipped, excluded)


def _write_and_record(writer: _Writer, zstore, item: tuple[str, int]) -> tuple[tuple[str, int], dict]:  # noqa: ANN001
    """Write one shard, then its done record (a shard without one is rewritten by the next call)."""
    record = writer.write_shard(*item)
    zarr_keys.set_bytes(zstore, f"_build/done/{item[0]}/{item[1]:06d}.json", json.dumps(record).encode())
    return item, record


def _shards_in_threads(writer: _Writer, zstore, todo: list[tuple[str, int]], threads: int):  # noqa: ANN001
    """(item, record) of each shard of `todo`, written by a pool of `threads` threads of this process."""
    with ThreadPoolExecutor(max(1, threads)) as pool:
        yield from pool.map(lambda item: _write_and_record(writer, zstore, item), todo)


def _shards_on_dask(opts: BuildOptions, plan: dict, specs: dict, todo: list[tuple[str, int]]):
    """(item, record) of each shard of `todo` as Dask tasks finish them: one task per shard, on a local
    cluster of `opts.workers` processes or the workers of `opts.scheduler` (which must reach the stores
    and the output by the same URLs). The plan travels once to each worker, not with every task."""
    from distributed import as_completed

    from datasets.cluster import DaskCluster

    if not todo:
        return
    with DaskCluster(opts.workers, opts.scheduler) as cluster:
        [shared_plan] = cluster.client.scatter([plan], broadcast=True)
        futures = [cluster.client.submit(_dask_write_shard, opts, shared_plan, specs, item, pure=False)
                   for item in todo]
        for future in as_completed(futures):
            yield future.result()  # a task's error ends the build; finished shards keep their records


_WORKER_WRITER: dict = {}  # worker side: the plan the cached writer serves, and the writer
_WORKER_LOCK = Lock()


def _dask_write_shard(opts: BuildOptions, plan: dict, specs: dict, item: tuple[str, int]
                      ) -> tuple[tuple[str, int], dict]:
    """Worker side (a Dask task): write one shard and its done record; returns the record. The writer and
    the sources it opened are kept for the next shard of the same plan on this worker."""
    with _WORKER_LOCK:
        if _WORKER_WRITER.get("plan") is not plan:
            sources = [SourceStore(url, opts.storage_options) for url in opts.stores]
            zstore = open_zarr_store(opts.out, opts.storage_options)
            root = zarr.open_group(zstore, mode="a", zarr_format=3)
            _WORKER_WRITER.update(plan=plan, writer=_Writer(opts, plan, sources, specs, zstore, root),
                                  zstore=zstore)
        writer, zstore = _WORKER_WRITER["writer"], _WORKER_WRITER["zstore"]
    return _write_and_record(writer, zstore, item)


def _manifest(opts: BuildOptions, plan: dict, specs: dict, sources: list[SourceStore], done: dict) -> Manifest:
    from datasets.provenance import package_versions

    splits = {}
    for split, info in plan["splits"].items():
        shards = [done[(split, k)] for k in range(-(-len(info["rows"]) // opts.shard_rows))]
        counts = {use: {kind: sum(s["counts"][use][kind] for s in shards) for kind in ("rows", "views")}
                  for use in shards[0]["counts"]}
        splits[split] = {"rows": len(info["rows"]), "subjects": info["subjects"], "counts": counts, "shards": shards}
    clips = [{k: v for k, v in c.items() if k not in ("view_ok", "heldout")} for c in plan["clips"]]
    provenance = []
    for src in sources:
        a = src.store.attrs
        provenance.append({"url": src.url, "schema_version": a.get("schema_version"), "created": a.get("created"),
                           "sources": a.get("sources", []), "stages": a.get("stages", {}),
                           "software": a.get("software", {})})
    doc = {"format": FORMAT, "schema_version": SCHEMA_VERSION, "created": now_iso(), "digest": "sha256",
           "layout": plan["layout"], "arrays": specs, "clips": clips, "splits": splits,
           "clip_index": _clip_index(plan, opts.shard_rows), "holdout_views": plan["holdout_views"],
           "options": plan["options"] | {"shard_rows": opts.shard_rows}, "sources": provenance,
           "software": package_versions()}
    return Manifest(doc)


def _clip_index(plan: dict, shard_rows: int) -> dict[str, dict[str, dict[str, list[int]]]]:
    """{split: {clip number: {"frames": [n], "shards": [n], "rows": [n]}}}, frames ascending: where each
    frame of a clip lies, so that a reader of one clip opens only its shards (the rows are shuffled over
    the whole split, so without it finding a clip means reading every shard of the split)."""
    index: dict[str, dict[str, dict[str, list[int]]]] = {}
    for split, info in plan["splits"].items():
        found: dict[int, list[tuple[int, int]]] = {}
        for g, (c, t) in enumerate(info["rows"]):  # g: row of the split, in shard g // S at row g % S
            found.setdefault(int(c), []).append((int(t), g))
        index[split] = {}
        for c in sorted(found):
            located = sorted(found[c])
            index[split][str(c)] = {"frames": [t for t, _ in located], "shards": [g // shard_rows for _, g in located],
                                    "rows": [g % shard_rows for _, g in located]}
    return index
