"""For tests and benchmarks: a preprocessed store written directly (no pipeline run), whose every value
says where it came from.

Images are constant colours (lossless PNG) that encode (subject, frame, view), so a test can tell from a
decoded sample exactly which item it is; the small arrays encode the same. A few items fail on purpose:
"""

from __future__ import annotations

import numpy as np

from datasets.store import LedgerItem, Marker, Store

STAGES = ("ingest", "matting", "landmarks", "fitting", "crops", "synthesis")
# failures written into every store: (subject index, frame, view) -> why
BAD_RGB = (0, 1, 2)  # rgb_ok false
BAD_FIT_FRAME = (1, 3)  # fit/ok false: the whole frame goes
LEDGER_VIEW = (2, 5, 1)  # the fitting ledger dropped this view


def colour(subject: int, frame: int, slot: int, kind: int = 0) -> tuple[int, int, int]:
    """The colour of an image: kind 0 rgb, 1 face crop, 2 synthesized (slot = synth index)."""
    return (10 + 20 * subject + kind * 5, 5 + 9 * frame, 3 + 17 * slot)


def decode_colour(image: np.ndarray) -> tuple[int, int, int, int]:
    """-> (subject, frame, slot, kind) of a constant image."""
    r, g, b = (int(round(float(c))) for c in image.reshape(-1, 3).mean(axis=0))
    kind = ((r - 10) % 20) // 5
    return (r - 10 - 5 * kind) // 20, (g - 5) // 9, (b - 3) // 17, kind


def make_store(url: str, subjects: int = 3, sequences: int = 1, frames: int = 8, views: int = 4, res: int = 32,
               crop: int = 16, synth: int = 2, block: int = 4, storage_options: dict | None = None,
               fitted: bool = True, dataset: str = "nersemble", texture: bool = False) -> Store:
    """texture: JPEG images with camera-like detail (benchmarks) instead of constant PNG colours."""
    store = Store(url, storage_options)
    store.update_attrs(sources=[{"dataset": dataset, "root": "test", "licence": "test data"}])
    for s in range(subjects):
        for q in range(sequences):
            subject, sequence = f"{s:03d}", f"SEQ-{q}"
            serials = [f"cam{v:02d}" for v in range(views)]
            g = store.create_clip(subject, sequence, {"views": serials, "frame_ids": list(range(100, 100 + frames)),
                                                       "n_frames": frames, "block_frames": block, "resolution": res})
            T, V = frames, views
            rgb = np.zeros((T, V, res, res, 3), np.uint8)
            crops = np.zeros((T, V, crop, crop, 3), np.uint8)
            syn = np.zeros((T, synth, crop, crop, 3), np.uint8)
            for t in range(T):
                for v in range(V):
                    rgb[t, v] = colour(s, t, v)
                    crops[t, v] = colour(s, t, v, 1)
                for k in range(synth):
                    syn[t, k] = colour(s, t, k, 2)
            mask = np.zeros((T, V, res, res), np.uint8)
            mask[..., : res // 2, :] = 255  # the top half is "face": the non-face image keeps the bottom half
            alpha = np.full((T, V, res, res), 200, np.uint8)
            ok = np.ones((T, V), bool)
            fit_ok = np.ones(T, bool)
            if s == BAD_RGB[0] and BAD_RGB[2] < views:
                ok[BAD_RGB[1], BAD_RGB[2]] = False
            if s == BAD_FIT_FRAME[0]:
                fit_ok[BAD_FIT_FRAME[1]] = False
            pose = np.tile(np.eye(4, dtype=np.float32), (T, 1, 1))
            pose[:, 0, 3], pose[:, 1, 3] = s, np.arange(T)
            lmk2d = np.zeros((T, V, 68, 3), np.float32)
            lmk2d[..., 0], lmk2d[..., 1], lmk2d[..., 2] = s, np.arange(T)[:, None, None], np.arange(V)[None, :, None]
            K = np.tile(np.eye(3, dtype=np.float32), (V, 1, 1))
            K[:, 0, 0] = 100 + np.arange(V)
            w2c = np.tile(np.eye(4, dtype=np.float32), (V, 1, 1))
            w2c[:, 2, 3] = 1 + np.arange(V)
            fmt = "png"
            if texture:
                rng = np.random.default_rng([s, q])
                rgb, crops, syn = (_textured(x, rng) for x in (rgb, crops, syn))
                fmt = "jpeg"
            arrays = {"rgb": (rgb, fmt), "alpha": (alpha, "png"), "face_crop": (crops, fmt),
                      "face_mask": (mask, "png"), "synth": (syn, fmt), "rgb_ok": (ok, None),
                      "faces": (np.ones((T, V), np.int16), None), "lmk2d": (lmk2d, None),
                      "crop_ok": (np.ones((T, V), bool), None),
                      "crop_transform": (np.zeros((T, V, 2, 3), np.float32), None),
                      "synth_ok": (np.ones((T, synth), bool), None)}
            if fitted:
                arrays.update({"fit/pose": (pose, None), "fit/scale": (np.full(T, 1 + s, np.float32), None),
                               "fit/lmk3d": (np.full((T, 68, 3), s, np.float32), None),
                               "fit/ok": (fit_ok, None), "fit/residual": (np.ones((T, V), np.float32), None)})
            for name, (value, fmt) in arrays.items():
                array = store.create_frame_array(g, name, value.shape, str(value.dtype), block, image_format=fmt)
                array[...] = value
            store.create_view_array(g, "cameras/K", K.shape, "float32")[...] = K
            store.create_view_array(g, "cameras/world_to_cam", w2c.shape, "float32")[...] = w2c
            key = f"{subject}/{sequence}"
            for stage in STAGES:
                if stage == "fitting" and not fitted:
                    continue
                store.prepare_meta(stage, key)
                for b in range(-(-T // block)):
                    store.write_marker(Marker(stage, key, b, "test", "test", [b * block, min(T, (b + 1) * block)]))
            if s == LEDGER_VIEW[0] and LEDGER_VIEW[2] < views:
                t, v = LEDGER_VIEW[1], LEDGER_VIEW[2]
                store.write_block_ledger("fitting", key, t // block, [LedgerItem(
                    "fitting", key, "view dropped by the fit", frame=100 + t, view=serials[v], block=t // block)])
    return store


def _textured(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Constant images [..., H, W, 3] -> the same with smooth structure and fine noise (JPEG entropy like
    a camera image's)."""
    import cv2

    H, W = images.shape[-3:-1]
    out = images.reshape((-1, H, W, 3)).astype(np.float32)
    yy, xx = np.mgrid[0:H, 0:W] / max(H, W)
    for i in range(len(out)):
        coarse = cv2.resize(rng.normal(0, 40, (8, 8, 3)).astype(np.float32), (W, H), interpolation=cv2.INTER_CUBIC)
        waves = 25 * np.sin(2 * np.pi * (rng.uniform(4, 12) * xx + rng.uniform(4, 12) * yy))[..., None]
        out[i] += coarse + waves + rng.normal(0, 6, (H, W, 3))
    return np.clip(out, 0, 255).astype(np.uint8).reshape(images.shape)


def usable_items(subjects: int = 3, frames: int = 8, views: int = 4, sequences: int = 1) -> set[tuple[int, int, int]]:
    """(subject, frame, view) of every item a shard set of make_store's store must hold."""
    out = set()
    for s in range(subjects):
        for t in range(frames):
            if (s, t) == BAD_FIT_FRAME:
                continue
            for v in range(views):
                if (s, t, v) not in (BAD_RGB, LEDGER_VIEW):
                    out.add((s, t, v))
    return out
