"""Ingest: decode every camera once, in order, crop to a square, resize to the working resolution,
adjust the intrinsics exactly, and store rgb, cameras and the background plates (same transform).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from datasets.cameras import SquareCrop, crop_resize_image, crop_resize_intrinsics
from datasets.raw.base import ClipSpec
from datasets.raw.sources import FrameError, iter_frames, read_image
from datasets.store import LedgerItem, Store
from pipeline.stage import BlockOutput, ClipLayout, SegmentContext, Stage, register

FRAME_ARRAYS = ("rgb", "rgb_ok")


@dataclass
class IngestConfig:
    resolution: int = 512  # side of the stored square images, pixels
    crop: str = "center"  # 'center' (largest centred square) or 'X0,Y0,SIZE' in source pixels
    image_format: str = "jpeg"  # 'jpeg' (lossy, small) or 'png' (lossless)
    jpeg_quality: int = 95  # JPEG quality 1..100
    frame_stride: int = 1  # keep every n-th frame of the capture (NeRSemble practice: 3)
    block_frames: int = 8  # frames per block: the unit of work, of resume and of sharding

    def __post_init__(self) -> None:
        if self.resolution < 16:
            raise ValueError(f"resolution must be at least 16 pixels, got {self.resolution}")
        if self.image_format not in ("jpeg", "png"):
            raise ValueError(f"image_format must be 'jpeg' or 'png', got {self.image_format!r}")
        if self.frame_stride < 1 or self.block_frames < 1:
            raise ValueError("frame_stride and block_frames must be at least 1")
        if self.crop not in ("center", "centre"):
            SquareCrop.parse(self.crop, 1, 1)  # validates the syntax


@register
class IngestStage(Stage):
    name = "ingest"
    config_class = IngestConfig
    version = "1"
    requires = ()
    products = FRAME_ARRAYS
    sequential = True

    def clip_identity(self, work: ClipSpec) -> dict:
        # what the store's arrays are made of; moving the raw root does not change it
        return {
            "frame_ids": list(work.frame_ids),
            "views": [(v.serial, v.width, v.height, v.K, v.world_to_cam, v.background is not None) for v in work.views],
        }

    def layout(self, store: Store, key: str, work: ClipSpec) -> ClipLayout:
        return ClipLayout(work.key, len(work.frame_ids), self.config.block_frames,
                          tuple(v.serial for v in work.views), tuple(work.frame_ids))

    def crops(self, work: ClipSpec) -> list[SquareCrop]:
        return [SquareCrop.parse(self.config.crop, v.width, v.height) for v in work.views]

    def prepare(self, store: Store, layout: ClipLayout, work: ClipSpec) -> None:
        cfg = self.config
        R, T, V = cfg.resolution, layout.n_frames, len(layout.views)
        crops = self.crops(work)
        attrs = {
            "dataset": work.dataset,
            "views": list(layout.views),
            "frame_ids": list(layout.frame_ids),
            "n_frames": T,
            "block_frames": layout.block_frames,
            "fps": work.fps / cfg.frame_stride if work.fps else 0.0,
            "resolution": R,
            "source_sizes": [[v.width, v.height] for v in work.views],
            "crops": [[c.x0, c.y0, c.size] for c in crops],
        }
        group = store.create_clip(work.subject, work.sequence, attrs)
        store.ensure_frame_array(group, "rgb", (T, V, R, R, 3), "uint8", layout.block_frames,
                                 image_format=cfg.image_format, jpeg_quality=cfg.jpeg_quality)
        store.ensure_frame_array(group, "rgb_ok", (T, V), "bool", layout.block_frames)
        store.ensure_view_array(group, "background", (V, R, R, 3), "uint8", image_format=cfg.image_format,
                                jpeg_quality=cfg.jpeg_quality)
        store.ensure_view_array(group, "background_ok", (V,), "bool")
        cams = group.require_group("cameras")
        K = np.stack([crop_resize_intrinsics(v.K_array, c, R) for v, c in zip(work.views, crops)]).astype(np.float32)
        E = np.stack([v.world_to_cam_array for v in work.views]).astype(np.float32)
        for name, value in (("K", K), ("world_to_cam", E)):
            if name in cams:
                del cams[name]
            cams.create_array(name, data=value, chunks=value.shape)
        cams.attrs.update({"convention": "OpenCV world-to-camera; pixel centres at integer coordinates",
                           "image_size": [R, R], "views": list(layout.views)})

    def run(self, ctx: SegmentContext) -> Iterator[BlockOutput]:
        cfg, layout, work = self.config, ctx.layout, ctx.work
        cv2.setNumThreads(max(1, ctx.threads))
        R, V = cfg.resolution, len(work.views)
        crops = self.crops(work)
        wanted = [layout.frame_ids[t] for b in ctx.blocks for t in range(*layout.frames(b))]
        # one sequential decoder per camera, advanced in lockstep block by block
        decoders = [iter_frames(v.source, wanted, ctx.threads) for v in work.views]
        for block in ctx.blocks:
            t0, t1 = layout.frames(block)
            rgb = np.zeros((t1 - t0, V, R, R, 3), np.uint8)
            ok = np.zeros((t1 - t0, V), bool)
            items: list[LedgerItem] = []
            for vi, (view, decoder, crop) in enumerate(zip(work.views, decoders, crops)):
                for t in range(t0, t1):
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
            whole = self._background(work, crops, layout, block, items) if block == 0 else {}
            yield BlockOutput(block, {"rgb": rgb, "rgb_ok": ok}, items, whole)

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
