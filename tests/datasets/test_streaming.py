"""The streaming dataset: exactly-once global order for any workers x ranks, exact resume, samples that
hold what the store held, digest validation, mixtures, and s3:// (moto) against local."""

from __future__ import annotations

import os

import numpy as np
import pytest

from datasets.capture.coloured_store import decode_colour, make_store, usable_items
from datasets.shards.build import BuildOptions, build_shards
from datasets.shards.reader import ShardCorruptError
from datasets.shards.storage import ShardMissingError
from datasets.streaming import MixtureDataset, ShardDataset, StreamingLoader


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("streaming")
    make_store(str(root / "store.zarr"), subjects=3, frames=8, views=4)
    out = str(root / "shards")
    build_shards(BuildOptions([str(root / "store.zarr")], out, shard_rows=3, val_subjects="0",
                              holdout_views="cam03"))
    return out


def _dataset(url, **kw):
    kw.setdefault("seed", 7)
    kw.setdefault("block_shards", 2)
    kw.setdefault("decode_threads", 1)
    kw.setdefault("prefetch", 2)
    return ShardDataset(url, **kw)


def _ident(batch, i=None):
    """(subject, frame, view) of a stage-2 sample, read from its image."""
    rgb = batch["rgb"].numpy() if i is None else batch["rgb"][i].numpy()
    s, t, v, kind = decode_colour(rgb)
    assert kind == 0
    return s, t, v


def _stream(loader):
    out = []
    for b in loader:
        for i in range(len(b["position"])):
            out.append((int(b["position"][i]), _ident(b, i), int(b["epoch"][i])))
    return out


@pytest.fixture(scope="module")
def reference(shards):
    ds = _dataset(shards)
    return [(int(s["position"]), _ident(s)) for s in ds]


def test_reference_epoch_holds_every_training_view_once(reference):
    expected = {i for i in usable_items() if i[2] != 3}  # cam03 is held out
    idents = [i for _, i in reference]
    assert [p for p, _ in reference] == list(range(len(reference)))
    assert len(idents) == len(set(idents)) and set(idents) == expected


@pytest.mark.parametrize("workers", [0, 1, 2, 3])
@pytest.mark.parametrize("world", [1, 2])
def test_same_global_order_for_any_workers_and_ranks(shards, reference, workers, world):
    merged = []
    for rank in range(world):
        ds = _dataset(shards, batch_size=2, rank=rank, world_size=world)
        got = _stream(StreamingLoader(ds, num_workers=workers))
        positions = [p for p, _, _ in got]
        assert positions == sorted(positions) and all(p % world == rank for p in positions)
        assert len(got) == -(-len(reference) // world)  # equal work: the short rank repeats a sample
        merged += got
    merged.sort()
    assert [(p, i) for p, i, _ in merged if p < len(reference)] == reference
    assert {i for p, i, _ in merged if p >= len(reference)} <= {i for _, i in reference}


@pytest.mark.parametrize("world", [1, 2])
def test_resume_after_k_samples_yields_exactly_the_rest(shards, reference, world):
    batch, taken = 3, 2
    states = []
    for rank in range(world):
        loader = StreamingLoader(_dataset(shards, batch_size=batch, rank=rank, world_size=world), num_workers=2)
        for i, _ in enumerate(loader):
            if i + 1 == taken:
                break
        states.append(loader.state_dict())
    assert all(s == states[0] for s in states)  # lock step: every rank saves the same state
    assert states[0]["position"] == world * batch * taken
    rest = []
    for rank in range(world):  # resumed with another number of workers
        loader = StreamingLoader(_dataset(shards, batch_size=batch, rank=rank, world_size=world), num_workers=3)
        loader.load_state_dict(states[rank])
        rest += _stream(loader)
    rest.sort()
    assert [(p, i) for p, i, _ in rest if p < len(reference)] == reference[world * batch * taken:]


def test_in_process_state_and_next_epoch(shards, reference):
    ds = _dataset(shards)
    it = iter(ds)
    first = [_ident(next(it)) for _ in range(5)]
    state = ds.state_dict()
    assert state["position"] == 5 and first == [i for _, i in reference[:5]]
    resumed = _dataset(shards)
    resumed.load_state_dict(state)
    assert [_ident(s) for s in resumed] == [i for _, i in reference[5:]]
    # the epoch is finished: the next iteration is epoch 1, same items in a new order
    epoch1 = [(int(s["epoch"]), _ident(s)) for s in resumed]
    assert {e for e, _ in epoch1} == {1}
    assert sorted(i for _, i in epoch1) == sorted(i for _, i in reference)
    assert [i for _, i in epoch1] != [i for _, i in reference]
    with pytest.raises(ValueError, match="another shard set"):
        _dataset(shards, sample="stage1").load_state_dict(state)


def test_stage2_sample_content(shards):
    ds = _dataset(shards, synth_ratio=0.0)
    for s in ds:
        subject, t, v = _ident(s)
        assert int(s["view"]) == v and int(s["frame"]) == t and float(s["pose"][0, 3]) == subject
        assert float(s["lmk2d"][0, 2]) == v and float(s["K"][0, 0]) == 100 + v and float(s["scale"]) == 1 + subject
        cs, ct, cv, kind = decode_colour(s["condition"].numpy())
        assert (cs, ct, kind) == (subject, t, 1) and cv != v and cv != 3  # another, non-held-out view's crop
        assert int(s["condition_kind"]) == 0
        nf = s["non_face"].numpy()
        assert (nf[:16] == 0).all() and (nf[16:] == s["rgb"].numpy()[16:]).all()
        assert s["alpha"].shape == (32, 32) and int(s["alpha"][0, 0]) == 200
    kinds = [int(s["condition_kind"]) for s in _dataset(shards, synth_ratio=1.0)]
    assert set(kinds) == {1}
    for s in _dataset(shards, synth_ratio=1.0):
        cs, ct, slot, kind = decode_colour(s["condition"].numpy())
        assert kind == 2 and (cs, ct) == _ident(s)[:2] and slot in (0, 1)
        break


def test_stage1_samples_four_views_of_one_frame(shards):
    ds = _dataset(shards, sample="stage1", views=4, batch_size=2)
    n_rows = 0
    for b in ds:
        for i in range(len(b["position"])):
            n_rows += 1
            idents = [decode_colour(b["rgb"][i, k].numpy()) for k in range(4)]
            assert len({(s, t) for s, t, _, _ in idents}) == 1  # one frame of one subject
            views = [v for _, _, v, _ in idents]
            assert views == b["view"][i].tolist() and 3 not in views  # never the held-out camera
            usable = {v for s, t, v in usable_items() if (s, t) == idents[0][:2] and v != 3}
            assert set(views) == usable  # 3 training views here: all of them, one repeated
            assert b["K"][i, :, 0, 0].tolist() == [100 + v for v in views]
    assert n_rows == len({(s, t) for s, t, v in usable_items()})


def test_flipped_byte_raises_with_validation(shards, tmp_path):
    import shutil

    copy = str(tmp_path / "copy")
    shutil.copytree(shards, copy)
    ds = _dataset(copy)
    obj = ds.manifest.shards("train")[0]["objects"]["rgb"]
    with open(os.path.join(copy, obj["key"]), "r+b") as f:
        f.seek(10)
        byte = f.read(1)
        f.seek(10)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(ShardCorruptError, match=r"sha256 .* differs .*verify"):
        list(_dataset(copy, validate=True))
    with open(os.path.join(copy, obj["key"]), "r+b") as f:  # repaired
        f.seek(10)
        f.write(byte)
    os.remove(os.path.join(copy, ds.manifest.shards("train")[1]["objects"]["pose"]["key"]))
    assert len(list(_dataset(copy))) == len(list(_dataset(shards)))  # the reader takes the pack, not pose
    os.remove(os.path.join(copy, ds.manifest.shards("train")[1]["pack"]["key"]))
    with pytest.raises(ShardMissingError, match="missing"):
        list(_dataset(copy))


def test_weighted_mixture(shards, tmp_path):
    mono = str(tmp_path / "mono.zarr")
    make_store(mono, subjects=2, frames=6, views=1, synth=0, dataset="vfhq")
    build_shards(BuildOptions([mono], str(tmp_path / "mono"), shard_rows=4, val_subjects="0"))

    def mixture(**kw):
        parts = [_dataset(shards), _dataset(str(tmp_path / "mono"))]
        return MixtureDataset(parts, [3, 1], seed=1, length=60, batch_size=4, **kw)

    draws = _stream_sources(StreamingLoader(mixture(), num_workers=0))
    assert draws == _stream_sources(StreamingLoader(mixture(), num_workers=2))
    sources = [s for s, _ in draws]
    assert 30 <= sources.count(0) <= 55 and len(sources) == 60
    mono_items = [i for s, i in draws if s == 1]
    assert all(v == 0 for _, _, v in mono_items)
    # within one pass over the monocular set, no repeats
    n_mono = len(usable_items(subjects=2, frames=6, views=1))
    assert len(set(mono_items[:n_mono])) == min(n_mono, len(mono_items))


def _stream_sources(loader):
    return [(int(b["source"][i]), _ident(b, i)) for b in loader for i in range(len(b["position"]))]


def test_s3_build_and_stream_match_local(shards, s3_endpoint, tmp_path):
    from datasets.shards.verify import verify_shards

    store = str(os.path.join(os.path.dirname(shards), "store.zarr"))
    url = "s3://headforge-test/shards-test"
    build_shards(BuildOptions([store], url, shard_rows=3, val_subjects="0", holdout_views="cam03",
                              storage_options=s3_endpoint))
    assert verify_shards(url, s3_endpoint).ok
    cache = str(tmp_path / "cache")
    remote = _dataset(url, storage_options=s3_endpoint, cache_dir=cache, cache_bytes=400_000, validate=True,
                      batch_size=4)
    local = _dataset(shards, batch_size=4)
    assert remote.manifest.split("train")["counts"] == local.manifest.split("train")["counts"]
    for a, b in zip(StreamingLoader(remote, num_workers=2), local, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            assert np.array_equal(a[k].numpy(), b[k].numpy()), k
    cached = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(cache) for f in fs)
    assert 0 < cached <= 400_000
