"""Ingest: decode every camera once, in order, cut the square the framing stage chose, resize it to the
working resolution, adjust the intrinsics exactly, and store rgb, cameras and the background plates
(same transform).

    cameras/K         float32 [V, 3, 3]     intrinsics of the stored frames (framing that follows the head:
                                            those of frame 0; every frame's in K_frames)
    cameras/K_frames  float32 [T, V, 3, 3]  intrinsics of each stored frame
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from datasets.cameras import SquareCrop, crop_resize_image, crop_resize_intrinsics
from datasets.errors import ConfigError
from datasets.raw.base import ClipSpec
from datasets.raw.sources import FrameError, iter_frames, read_image
from datasets.schema import ensure_store_array
from datasets.store import LedgerItem, Store
from pipeline.framing import clip_attributes, raw_identity
from pipeline.stage import BlockOutput, ClipLayout, SegmentContext, Stage, register

FRAME_ARRAYS = ("rgb", "rgb_ok", "cameras/K_frames")


@dataclass
class IngestConfig:
    resolution: int = 512  # side of the stored square images, pixels (the square itself: framing.mode)
    image_format: str = "jpeg"  # 'jpeg' (lossy, small) or 'png' (lossless)
    jpeg_quality: int = 95  # JPEG quality 1..100
    frame_stride: int = 1  # keep every n-th frame of the capture (NeRSemble practice: 3)
    block_frames: int = 8  # frames per block: the unit of work, of resume and of sharding

    def __post_init__(self) -> None:
        if self.resolution < 16:
            raise ConfigError(f"resolution must be at least 16 pixels, got {self.resolution}")
        if self.image_format not in ("jpeg", "png"):
            raise ConfigError(f"image_format must be 'jpeg' or 'png', got {self.image_format!r}")
        if self.frame_stride < 1 or self.block_frames < 1:
            raise ConfigError("frame_stride and block_frames must be at least 1")


@register
class IngestStage(Stage):
    name = "ingest"
    config_class = IngestConfig
    version = "2"
    requires = ("framing",)
    products = FRAME_ARRAYS
    sequential = True
    reads_raw = True

    def clip_identity(self, work: ClipSpec) -> dict:
        return raw_identity(work)

    def prepare(self, store: Store, layout: ClipLayout, work: ClipSpec) -> None:
        cfg = self.config
        R, T, V, B = cfg.resolution, layout.n_frames, len(layout.views), layout.block_frames
        group = store.create_clip(work.subject, work.sequence, {**clip_attributes(work, layout), "resolution": R})
        cams = group.require_group("cameras")
        sizes = {"T": T, "V": V, "R": R}
        for name in ("rgb", "rgb_ok", "cameras/K_frames", "background", "background_ok", "cameras/world_to_cam",
                     "cameras/K"):  # (cameras/K is written with block 0: it needs the framing)
            ensure_store_array(store, group, name, sizes, B, image_format=cfg.image_format,
                               jpeg_quality=cfg.jpeg_quality)
        group["cameras/world_to_cam"][...] = np.stack([v.world_to_cam_array for v in work.views])
        cams.attrs.update({"convention": "OpenCV world-to-camera; pixel centres at integer coordinates",
                           "image_size": [R, R], "views": list(layout.views)})

    def run(self, ctx: SegmentContext) -> Iterator[BlockOutput]:
        cfg, layout, work, group = self.config, ctx.layout, ctx.work, ctx.group
        cv2.setNumThreads(max(1, ctx.threads))
        R, V = cfg.resolution, len(work.views)
        wanted = [layout.frame_ids[t] for b in ctx.blocks for t in range(*layout.frames(b))]
        # one sequential decoder per camera, advanced in lockstep block by block
        decoders = [iter_frames(v.source, wanted, ctx.threads) for v in work.views]
        for block in ctx.blocks:
            t0, t1 = layout.frames(block)
            rgb = np.zeros((t1 - t0, V, R, R, 3), np.uint8)
            ok = np.zeros((t1 - t0, V), bool)
            squares = group["framing/crop"][t0:t1]  # [n, V, 3] source pixels
            K = np.zeros((t1 - t0, V, 3, 3), np.float32)
            items: list[LedgerItem] = []
            for vi, (view, decoder) in enumerate(zip(work.views, decoders)):
                for t in range(t0, t1):
                    crop = SquareCrop(*(int(x) for x in squares[t - t0, vi]))
                    K[t - t0, vi] = crop_resize_intrinsics(view.K_array, crop, R)
                    fid, image = next(decoder)
                    assert fid == layout.frame_ids[t], (fid, layout.frame_ids[t])
                    if isinstance(image, FrameError):
                        items.append(LedgerItem(self.name, layout.key, str(image), frame=fid, view=view.serial, block=block))
                        continue
                    if image.shape[:2] != (view.height, view.width):
                        items.append(LedgerItem(
                            self.name, layout.key,
                            f"frame is {image.shape[1]}x{image.shape[0]}, camera {view.serial} is {view.width}x{view.height}",
                            frame=fid, view=view.serial, block=block))
                        continue
                    rgb[t - t0, vi] = crop_resize_image(image, crop, R)
                    ok[t - t0, vi] = True
            whole = {}
            if block == 0:
                whole = self._background(work, [SquareCrop(*(int(x) for x in c)) for c in squares[0]], layout,
                                         block, items)
                whole["cameras/K"] = K[0]
            yield BlockOutput(block, {"rgb": rgb, "rgb_ok": ok, "cameras/K_frames": K}, items, whole)

    def _background(self, work: ClipSpec, crops: list[SquareCrop], layout: ClipLayout, block: int,
                    items: list[LedgerItem]) -> dict[str, np.ndarray]:
        """Background plates, cropped and resized like the frames of the same camera (block 0 owns them)."""
        R = self.config.resolution
        plates = np.zeros((len(work.views), R, R, 3), np.uint8)
        ok = np.zeros(len(work.views), bool)
        if not any(v.background for v in work.views):
            return {"background": plates, "background_ok": ok}
        for vi, (view, crop) in enumerate(zip(work.views, crops)):
            if not view.background:
                items.append(LedgerItem(self.name, layout.key, f"no background plate for camera {view.serial}",
                                        view=view.serial, block=block))
                continue
            try:
                plate = read_image(view.background)
            except (ValueError, OSError) as e:
                items.append(LedgerItem(self.name, layout.key, f"background plate: {e}", view=view.serial, block=block))
                continue
            if plate.shape[:2] != (view.height, view.width):
                plate = cv2.resize(plate, (view.width, view.height), interpolation=cv2.INTER_AREA)
            plates[vi] = crop_resize_image(plate, crop, R)
            ok[vi] = True
        return {"background": plates, "background_ok": ok}
