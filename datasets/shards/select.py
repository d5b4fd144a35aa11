"""Which (clip, frame, view) items of preprocessed stores may become training samples, and how they split.

A frame is usable when every stage a sample needs finished its block (completion markers) and the fit
succeeded (fit/ok); a view of it is usable when it decoded (rgb_ok), had a face (faces, crop_ok, a finite
fit residual) and no stage recorded a failure for it in the ledger (e.g. a view the fit dropped).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from datasets.errors import UserError
from datasets.names import clip_subject
from datasets.store import Store

NEEDED_STAGES = ("ingest", "matting", "landmarks", "fitting", "crops")
SYNTH_MODES = ("auto", "require", "off")


class SelectionError(UserError, ValueError):
    """The stores cannot give a shard set (missing products, incompatible layouts, bad split request)."""


@dataclass
class ClipFacts:
    """The small per-clip facts a shard writer needs; images stay in the store."""

    source: int  # index of the store in the build's source list
    key: str  # 'subject/sequence'
    identity: str  # '<dataset>/<subject>': the same subject in two stores of one dataset is one identity
    views: list[str]
    frame_ids: list[int]
    view_ok: np.ndarray  # bool [T, V]
    frame_ok: np.ndarray  # bool [T]
    has_synth: bool
    n_synth: int
    n_expression: int  # fit/expression width, 0 without a morphable model
    missing: list[str] = field(default_factory=list)  # why the clip gives nothing (empty when it gives frames)
    stamp: str = ""  # digest of the clip's completion markers: changes whenever a stage redoes a block


def _stage_done(store: Store, stage: str, key: str, n_frames: int, block_frames: int,
                stamps: list[str] | None = None) -> np.ndarray:
    """bool [T]: frames whose block `stage` finished. Appends each marker's identity to `stamps`."""
    done = np.zeros(n_frames, bool)
    for block, marker in store.markers(stage, key).items():
        done[block * block_frames:(block + 1) * block_frames] = True
        if stamps is not None:
            stamps.append(f"{stage}:{block}:{marker.fingerprint}:{marker.finished}")
    return done


def clip_facts(store: Store, source: int, key: str, synth: str, ledger_by_clip: dict) -> ClipFacts:
    group = store.clip(key)
    a = group.attrs
    T, B, views = int(a["n_frames"]), int(a["block_frames"]), list(a["views"])
    frame_ids = list(a.get("frame_ids") or range(T))
    dataset = (store.attrs.get("sources") or [{}])[0].get("dataset", "store")
    facts = ClipFacts(source, key, f"{dataset}/{clip_subject(key)}", views, frame_ids,
                      np.zeros((T, len(views)), bool), np.zeros(T, bool), False, 0, 0)
    stages = list(NEEDED_STAGES) + (["synthesis"] if synth != "off" else [])
    arrays = ("rgb", "rgb_ok", "alpha", "cameras/K", "cameras/world_to_cam", "lmk2d", "faces", "fit/pose",
              "fit/scale", "fit/lmk3d", "fit/ok", "fit/residual", "face_crop", "face_mask", "crop_ok",
              "crop_transform")
    facts.missing = [f"array {name}" for name in arrays if name not in group]
    done, stamps = np.ones(T, bool), []
    for stage in NEEDED_STAGES:
        stage_done = _stage_done(store, stage, key, T, B, stamps)
        if not stage_done.any():
            facts.missing.append(f"stage {stage}")
        done &= stage_done
    has_synth = synth != "off" and "synth" in group and "synth_ok" in group
    if has_synth:
        synth_done = _stage_done(store, "synthesis", key, T, B, stamps)
        has_synth = bool(synth_done.any())
    if synth == "require" and not has_synth:
        facts.missing.append("stage synthesis")
    facts.stamp = hashlib.sha256("\n".join(sorted(stamps)).encode()).hexdigest()[:16]
    if facts.missing:
        return facts
    view_ok = group["rgb_ok"][:] & group["crop_ok"][:] & (group["faces"][:] >= 1)
    view_ok &= np.isfinite(group["fit/residual"][:])
    frame_ok = done & group["fit/ok"][:].astype(bool)
    if synth == "require":
        frame_ok &= _stage_done(store, "synthesis", key, T, B)
    index_of_frame = {f: t for t, f in enumerate(frame_ids)}
    index_of_view = {v: i for i, v in enumerate(views)}
    for item in ledger_by_clip.get(key, []):
        if item.stage not in stages or item.frame is None and item.view is None:
            continue  # a clip-level entry of a stage that still produced blocks (markers decide)
        t = index_of_frame.get(item.frame) if item.frame is not None else slice(None)
        v = index_of_view.get(item.view) if item.view is not None else slice(None)
        if t is not None and v is not None:
            view_ok[t, v] = False
    frame_ok &= view_ok.any(axis=1)
    facts.view_ok, facts.frame_ok = view_ok & frame_ok[:, None], frame_ok
    facts.has_synth = has_synth
    if has_synth:
        facts.n_synth = int(group["synth"].shape[1])
    if "fit/expression" in group:
        facts.n_expression = int(group["fit/expression"].shape[1])
    return facts


def store_facts(store: Store, source: int, synth: str, clips: list[str] | None = None) -> list[ClipFacts]:
    """The facts of every clip of a store (or of `clips`). Markers and ledger entries come through each
    clip's summary (datasets/store.py): a few requests per clip, not one per block."""
    keys = store.clips() if clips is None else [k for k in store.clips() if k in set(clips)]
    stages = list(NEEDED_STAGES) + (["synthesis"] if synth != "off" else [])
    planned = {stage: store.plan_ledger(stage) for stage in stages}
    ledger_by_clip = {key: [i for stage in stages for i in planned[stage].get(key, []) + store.block_ledger(stage, key)]
                      for key in keys}
    return [clip_facts(store, source, key, synth, ledger_by_clip) for key in keys]


def split_identities(identities: list[str], val: str, seed: int) -> tuple[list[str], list[str]]:
    """(train, val) identities. `val`: comma-separated subject names (matched against the identity or its
    subject part; a value that names subjects is read as names, so '017' is NeRSemble's participant 17),
    else a fraction ('0.1') or a count ('2')."""
    ids = sorted(set(identities))
    val = val.strip()
    names = {n.strip() for n in val.split(",") if n.strip()}
    known = set(ids) | {i.split("/", 1)[1] for i in ids}
    try:
        number = None if names and names <= known else float(val)
    except ValueError:
        raise SelectionError(f"validation subjects not in the stores: {sorted(names - known)} (have {ids})") from None
    if number is None:
        chosen = [i for i in ids if i in names or i.split("/", 1)[1] in names]
    else:
        if number < 0 or (number >= 1 and number != int(number)):
            raise SelectionError(f"--val-subjects takes names, a fraction in [0, 1) or a count, got {val!r}")
        count = int(number) if number >= 1 else int(round(number * len(ids)))
        if count >= len(ids) and ids:
            raise SelectionError(f"--val-subjects {val} leaves no training subject (of {len(ids)})")
        order = np.random.default_rng([seed, 0x5A11]).permutation(len(ids))
        chosen = [ids[i] for i in sorted(order[:count])]
    return [i for i in ids if i not in chosen], chosen


def holdout_mask(facts: ClipFacts, views: list[str], frame_fraction: float, seed: int) -> np.ndarray:
    """bool [T, V]: items kept for evaluation inside the training split (held-out cameras, held-out frames).

    Held-out frames are drawn per clip from (seed, clip), so the choice does not depend on other clips."""
    T, V = facts.view_ok.shape
    mask = np.zeros((T, V), bool)
    for i, serial in enumerate(facts.views):
        if serial in views:
            mask[:, i] = True
    if frame_fraction > 0:
        import zlib

        rng = np.random.default_rng([seed, zlib.crc32(facts.key.encode()), 0x401D])
        frames = np.flatnonzero(facts.frame_ok)
        count = int(round(frame_fraction * len(frames)))
        mask[rng.choice(frames, size=count, replace=False)] = True
    return mask
