"""What a store holds, as plain data: clips, arrays, finished blocks per stage, provenance, ledger."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import zarr

from datasets.schema import STORE
from datasets.store import LedgerItem, Store, image_codec_config
from pipeline.stage import ClipLayout


def _array_info(array) -> dict[str, Any]:
    codec = image_codec_config(array)
    return {
        "shape": list(array.shape),
        "dtype": str(array.dtype),
        "chunks": list(array.chunks),
        "shards": list(array.shards) if array.shards else None,
        "codec": f"{codec['format']}" + (f" q{codec['quality']}" if codec["format"] == "jpeg" else "")
        if codec else "zstd",
    }


def describe_store(store: Store, clip_filter: str | None = None) -> dict[str, Any]:
    attrs = store.attrs
    stage_records = attrs.get("stages", {})
    stages = sorted(set(stage_records) | set(store.stages_with_markers()))
    clips = []
    for key in store.clips():
        if clip_filter and key != clip_filter:
            continue
        group = store.clip(key)
        layout = ClipLayout.from_group(group)
        arrays = {}
        for name, node in sorted(group.members(max_depth=None)):
            if isinstance(node, zarr.Array):
                spec = STORE.get(name)  # what the schema says of it (datasets/schema.py)
                arrays[name] = {**_array_info(node), "stage": spec.source if spec else "",
                                "doc": spec.doc if spec else ""}
        progress = {}
        for stage in stages:
            markers = store.markers(stage, key)
            current = (stage_records.get(stage) or {}).get("fingerprint")
            ok = sum(1 for m in markers.values() if m.stage_fingerprint == current)
            progress[stage] = {"done": ok, "stale": len(markers) - ok, "blocks": layout.n_blocks}
        clips.append({
            "clip": key, "views": len(layout.views), "frames": layout.n_frames, "block_frames": layout.block_frames,
            "dataset": group.attrs.get("dataset"), "resolution": group.attrs.get("resolution"),
            "layout": (group.attrs.get("raw") or {}).get("layout", ""), "raw": group.attrs.get("raw") or {},
            "color_correction": group.attrs.get("color_correction"),
            "arrays": arrays, "stages": progress,
        })
    return {
        "url": store.url,
        "schema_version": attrs.get("schema_version"),
        "created": attrs.get("created"),
        "sources": attrs.get("sources", []),
        "software": attrs.get("software", {}),
        "stages": stage_records,
        "clips": clips,
        "ledger_items": len(store.ledger()),
    }


def ledger_rows(store: Store, stage: str | None = None, clip: str | None = None) -> list[dict[str, Any]]:
    items: list[LedgerItem] = store.ledger(stage, clip)
    items.sort(key=lambda i: (i.stage, i.clip, i.frame if i.frame is not None else -1, i.view or ""))
    return [asdict(i) for i in items]
