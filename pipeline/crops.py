"""Face crops and face masks from the 2D landmarks.

    face_crop       uint8 [T, V, S, S, 3]  aligned crop (JPEG): the expression condition image
    crop_transform  float32 [T, V, 2, 3]   image -> crop similarity of each crop
    face_mask       uint8 [T, V, H, W]     the face region (PNG): hull of the landmarks, dilated;
                                           the non-face image is rgb * (1 - face_mask / 255)
    crop_ok         bool [T, V]            a crop was made (landmarks were found)
Only the mask is stored for the non-face image, not a second copy of the frame.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from datasets.errors import ConfigError
from datasets.schema import ensure_store_array
from datasets.store import Store
from pipeline.backends.face_align import face_mask, face_transform, head_transform, warp
from pipeline.stage import BlockOutput, ClipLayout, SegmentContext, Stage, register


@dataclass
class CropsConfig:
    kind: str = "face"  # face: tight crop for the expression encoder | head: FFHQ-style whole-head crop
    size: int = 256  # crop side, pixels
    head_scale: float = 1.3  # head crops: framing relative to FFHQ's (1.0); larger shows more of the head
    mask_margin: float = 0.15  # face mask: dilation of the landmark hull, in eye distances
    min_confidence: float = 0.1  # landmarks below this confidence make no crop
    jpeg_quality: int = 95

    def __post_init__(self) -> None:
        if self.kind not in ("face", "head"):
            raise ConfigError(f"crop kind must be face or head, got {self.kind!r}")


@register
class CropsStage(Stage):
    name = "crops"
    config_class = CropsConfig
    version = "1"
    requires = ("landmarks",)
    products = ("face_crop", "crop_transform", "face_mask", "crop_ok")

    def prepare(self, store: Store, layout: ClipLayout, work) -> None:
        group = store.clip(layout.key)
        T, V, B, S = layout.n_frames, len(layout.views), layout.block_frames, self.config.size
        R = group["rgb"].shape[2]
        for name in self.products:
            ensure_store_array(store, group, name, {"T": T, "V": V, "C": S, "R": R}, B,
                               jpeg_quality=self.config.jpeg_quality)
        group["face_crop"].attrs["kind"] = self.config.kind

    def run(self, ctx: SegmentContext) -> Iterator[BlockOutput]:
        cfg, layout, group = self.config, ctx.layout, ctx.group
        S = cfg.size
        for block in ctx.blocks:
            t0, t1 = layout.frames(block)
            rgb, lmk = group["rgb"][t0:t1], group["lmk2d"][t0:t1]
            n, V, R = rgb.shape[0], rgb.shape[1], rgb.shape[2]
            crops = np.zeros((n, V, S, S, 3), np.uint8)
            transforms = np.zeros((n, V, 2, 3), np.float32)
            masks = np.zeros((n, V, R, R), np.uint8)
            ok = np.zeros((n, V), bool)
            for t in range(n):
                for v in range(V):
                    if lmk[t, v, :, 2].mean() < cfg.min_confidence:
                        continue  # no face: the landmarks stage recorded it
                    M = (face_transform(lmk[t, v], S) if cfg.kind == "face"
                         else head_transform(lmk[t, v], S, cfg.head_scale))
                    crops[t, v] = warp(rgb[t, v], M, S)
                    transforms[t, v] = M
                    masks[t, v] = face_mask(lmk[t, v], R, R, cfg.mask_margin)
                    ok[t, v] = True
            yield BlockOutput(block, {"face_crop": crops, "crop_transform": transforms, "face_mask": masks,
                                      "crop_ok": ok})
