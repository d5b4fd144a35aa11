"""datasets/schema.py is the one list of the arrays: every array the stages write into a store, every
array of a shard set and every field of a training sample is there with its dtype and its shape in named
sizes (the same size for the same name across a clip's arrays), and every schema entry of a full run is
written."""

from __future__ import annotations

import zarr

from datasets.capture.coloured_store import make_store
from datasets.schema import SAMPLE, SHARDS, STORE
from datasets.shards.build import BuildOptions, build_shards
from datasets.store import Store
from datasets.streaming import ShardDataset
from pipeline.runner import preprocess
from tests.helpers import ingest_config, marker_capture

STAGES = ["ingest", "matting", "landmarks", "fitting", "crops", "synthesis"]


def _sizes_agree(spec, shape, sizes: dict, where: str) -> None:
    assert len(shape) == len(spec.dims), f"{where}: {shape} against {spec.dims}"
    for dim, n in zip(spec.dims, shape):
        if isinstance(dim, int):
            assert n == dim, f"{where}: {shape} against {spec.dims}"
        else:
            assert sizes.setdefault(dim, n) == n, f"{where}: {dim} is {n} here, {sizes[dim]} elsewhere"


def test_every_array_the_stages_write_is_in_the_schema(tmp_path):
    root = str(tmp_path / "raw")
    marker_capture(root, participants=2, n_frames=4)
    cfg = ingest_config(str(tmp_path / "s.zarr"), root, resolution=32, block_frames=2)
    cfg.stages = STAGES
    preprocess(cfg)
    store = Store(cfg.store, mode="r")
    written = set()
    for key in store.clips():
        group = store.clip(key)
        sizes = {"T": group.attrs["n_frames"], "V": len(group.attrs["views"]), "R": 32}
        for name, node in group.members(max_depth=None):
            if not isinstance(node, zarr.Array):
                continue
            assert name in STORE, f"{key}/{name} is not in datasets/schema.py"
            spec = STORE[name]
            assert str(node.dtype) == spec.dtype, f"{key}/{name}: {node.dtype}, schema {spec.dtype}"
            _sizes_agree(spec, node.shape, sizes, f"{key}/{name}")
            written.add(name)
    model_only = {name for name, spec in STORE.items() if spec.optional}  # a morphable model's, a release's
    released = {"released_alpha", "released_alpha_ok"} | {n for n in STORE if n.startswith("tracking/")}
    assert model_only == {"fit/expression", "fit/identity"} | released
    assert set(STORE) - model_only == written


def test_every_shard_array_is_in_the_schema(tmp_path):
    url = str(tmp_path / "store.zarr")
    make_store(url)
    result = build_shards(BuildOptions([url], str(tmp_path / "shards"), shard_rows=4, val_subjects="0"))
    sizes: dict = {}
    for name, spec in result.manifest.arrays.items():
        assert name in SHARDS, f"shard array {name} is not in datasets/schema.py"
        assert spec["dtype"] == SHARDS[name].dtype and spec["kind"] == SHARDS[name].kind, name
        _sizes_agree(SHARDS[name], tuple(spec["row_shape"]), sizes, name)
    assert set(SHARDS) - {"expression"} == set(result.manifest.arrays)  # no morphable model in this store


def test_every_sample_field_is_in_the_schema(tmp_path):
    url = str(tmp_path / "store.zarr")
    make_store(url)
    shards = str(tmp_path / "shards")
    build_shards(BuildOptions([url], shards, shard_rows=4, val_subjects="0"))
    for kind, views in (("stage2", ()), ("stage1", (3,))):
        sample = next(iter(ShardDataset(shards, sample=kind, views=3, batch_size=None, seed=0)))
        assert set(SAMPLE) - {"expression", "source"} == set(sample), kind  # no morphable model, one dataset
        sizes: dict = {}
        for name, value in sample.items():
            spec = SAMPLE[name]
            value = value.numpy()
            assert str(value.dtype) == spec.dtype, f"{kind} {name}: {value.dtype}, schema {spec.dtype}"
            shape = value.shape[len(views):] if spec.kind == "view" and views else value.shape
            if spec.kind == "view" and views:
                assert value.shape[:1] == views, f"{kind} {name}: {value.shape}"
            _sizes_agree(spec, shape, sizes, f"{kind} {name}")
