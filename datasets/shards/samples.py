"""Training samples assembled from shard rows (numpy; the dataset turns batches into tensors).

Every field, with dtype and shape, is in datasets/schema.py SAMPLE.

Stage 1 (guiding mesh model): several views of one frame of one subject
    rgb [N, R, R, 3] uint8, alpha [N, R, R] uint8, K [N, 3, 3], world_to_cam [N, 4, 4], lmk2d [N, 68, 3],
    view [N] (slot in the clip's camera list), plus one condition image and one non-face image for the frame
Stage 2 (Gaussian model): one view
    rgb [R, R, 3], alpha [R, R], K [3, 3], world_to_cam [4, 4], lmk2d [68, 3], view []
Both
    condition [C, C, 3] uint8: the expression-condition image: another view's face crop of the same frame,
        or (with probability synth_ratio, where present) a synthesized image of the frame's expression on
        another identity; condition_kind [] 0 crop of another view, 1 synthesized, 2 the view's own crop
        (a frame with no other view and no synthesized image)
    non_face [R, R, 3] uint8: the image with the face region black (stage 1: of the first view)
    pose [4, 4], scale [], lmk3d [68, 3] (world), identity [] (index in the split's subjects), clip [],
    frame [] (store frame), expression [E] (when the stores were fitted with a morphable model)

Views, the condition source and the synthesized slot are drawn from a generator seeded with
(seed, epoch, position), so a sample does not depend on which worker or rank makes it. Held-out views
never give condition images, so evaluation views stay unseen.
"""

from __future__ import annotations

import numpy as np

from datasets.non_face import non_face_image
from datasets.schema import SAMPLE, SAMPLE_FRAME_FIELDS
from datasets.shards.manifest import use_mask
from datasets.shards.reader import OpenShard

SAMPLE_KINDS = ("stage1", "stage2")
CROP, SYNTH, OWN_CROP = 0, 1, 2


def _non_face(rgb: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    return rgb.copy() if mask is None else non_face_image(rgb, mask)


def _image(shard: OpenShard, name: str, row: int, slot: int, shape: tuple[int, ...]) -> np.ndarray:
    image = shard.image(name, row, slot)
    return np.zeros(shape, np.uint8) if image is None else image


def _condition(shard: OpenShard, row: int, exclude: set[int], own: int, synth_ratio: float,
               rng: np.random.Generator, crop: int) -> tuple[np.ndarray, int]:
    raw = shard.raw
    crops = np.flatnonzero(raw["view_ok"][row] & raw["crop_ok"][row] & ~raw["heldout"][row])
    others = [int(v) for v in crops if int(v) not in exclude] or [int(v) for v in crops if int(v) != own]
    synth = np.flatnonzero(raw["synth_ok"][row]) if "synth_ok" in raw else np.zeros(0, int)
    draw = rng.random()
    if len(synth) and (draw < synth_ratio or not others):
        return _image(shard, "synth", row, int(rng.choice(synth)), (crop, crop, 3)), SYNTH
    if others:
        return _image(shard, "face_crop", row, int(rng.choice(others)), (crop, crop, 3)), CROP
    return _image(shard, "face_crop", row, own, (crop, crop, 3)), OWN_CROP


def _frame_values(shard: OpenShard, row: int) -> dict[str, np.ndarray]:
    raw = shard.raw
    return {name: raw[name][row] for name in SAMPLE_FRAME_FIELDS if name in raw or not SAMPLE[name].optional}


def stage2_sample(shard: OpenShard, row: int, view: int, rng: np.random.Generator, layout: dict,
                  synth_ratio: float) -> dict[str, np.ndarray]:
    R, C = layout["resolution"], layout["crop"]
    rgb = _image(shard, "rgb", row, view, (R, R, 3))
    condition, kind = _condition(shard, row, {view}, view, synth_ratio, rng, C)
    raw = shard.raw
    return {"rgb": rgb, "alpha": _image(shard, "alpha", row, view, (R, R)),
            "non_face": _non_face(rgb, shard.image("face_mask", row, view)),
            "condition": condition, "condition_kind": np.int64(kind),
            "K": raw["K"][row, view], "world_to_cam": raw["world_to_cam"][row, view],
            "lmk2d": raw["lmk2d"][row, view], "view": np.int64(view), **_frame_values(shard, row)}


def stage1_sample(shard: OpenShard, row: int, use: str, n_views: int, rng: np.random.Generator, layout: dict,
                  synth_ratio: float) -> dict[str, np.ndarray]:
    R, C = layout["resolution"], layout["crop"]
    raw = shard.raw
    usable = np.flatnonzero(use_mask(raw["view_ok"][row], raw["heldout"][row], use))
    if len(usable) >= n_views:
        views = rng.choice(usable, size=n_views, replace=False)
    else:  # fewer views than asked (monocular clips): all of them, then repeats
        views = np.concatenate([rng.permutation(usable), rng.choice(usable, size=n_views - len(usable))])
    views = [int(v) for v in views]
    rgb = np.stack([_image(shard, "rgb", row, v, (R, R, 3)) for v in views])
    condition, kind = _condition(shard, row, set(views), views[0], synth_ratio, rng, C)
    return {"rgb": rgb, "alpha": np.stack([_image(shard, "alpha", row, v, (R, R)) for v in views]),
            "non_face": _non_face(rgb[0], shard.image("face_mask", row, views[0])),
            "condition": condition, "condition_kind": np.int64(kind),
            "K": raw["K"][row, views], "world_to_cam": raw["world_to_cam"][row, views],
            "lmk2d": raw["lmk2d"][row, views], "view": np.asarray(views, np.int64), **_frame_values(shard, row)}
