"""Ingest: decode every camera once, in order, cut the square the framing stage chose, resize it to the
working resolution, adjust the intrinsics exactly, and store rgb, cameras and the background plates
(same transform).

    cameras/K         float32 [V, 3, 3]     intrinsics of the stored frames (framing that follows the head:
                                            those of frame 0; every frame's in K_frames)
    cameras/K_frames  float32 [T, V, 3, 3]  intrinsics of each stored frame

What a release ships beside the frames is taken in here too: its colour correction (`color_correction`:
auto applies what the release ships, v1 / v2 only that kind, off none; applied per pixel to the stored
square after the resize, in the correction's own colour space, datasets/color_correction.py; recorded in
the clip's `color_correction` attribute), its mattes (`released_alpha`, same crop and resize, for the
matting stage's `released` backend) and its FLAME tracking (`tracking/*`, aligned to the stored frames,
for the fitting stage's `released` backend).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from datasets.cameras import SquareCrop, crop_resize_image, crop_resize_intrinsics
from datasets.color_correction import ColorCorrection
from datasets.errors import ConfigError
from datasets.flame_tracking import TrackingError, read_tracking
from datasets.raw.base import ClipSpec, ViewSpec
from datasets.raw.sources import FrameError, iter_frames, read_image
from datasets.schema import ensure_store_array
from datasets.store import LedgerItem, Store
from pipeline.framing import clip_attributes, raw_identity
from pipeline.stage import BlockOutput, ClipLayout, SegmentContext, Stage, register

FRAME_ARRAYS = ("rgb", "rgb_ok", "cameras/K_frames")
COLOR_MODES = ("off", "auto", "v1", "v2")
TRACKING_ARRAYS = ("tracking/rotation", "tracking/translation", "tracking/jaw", "tracking/neck", "tracking/eyes",
                   "tracking/expression", "tracking/shape", "tracking/scale", "tracking/ok")


@dataclass
class IngestConfig:
    resolution: int = 512  # side of the stored square images, pixels (the square itself: framing.mode)
    image_format: str = "jpeg"  # 'jpeg' (lossy, small) or 'png' (lossless)
    jpeg_quality: int = 95  # JPEG quality 1..100
    frame_stride: int = 1  # keep every n-th frame of the capture (NeRSemble practice: 3)
    block_frames: int = 8  # frames per block: the unit of work, of resume and of sharding
    color_correction: str = "auto"  # off | auto (what the release ships) | v1 | v2 (only that kind)

    def __post_init__(self) -> None:
        if self.resolution < 16:
            raise ConfigError(f"resolution must be at least 16 pixels, got {self.resolution}")
        if self.image_format not in ("jpeg", "png"):
            raise ConfigError(f"image_format must be 'jpeg' or 'png', got {self.image_format!r}")
        if self.frame_stride < 1 or self.block_frames < 1:
            raise ConfigError("frame_stride and block_frames must be at least 1")
        if self.color_correction not in COLOR_MODES:
            raise ConfigError(f"color_correction must be one of {', '.join(COLOR_MODES)}, "
                              f"got {self.color_correction!r}")


def read_tracking_or_none(work: ClipSpec):
    """The clip's released tracking (None: none, or unreadable; the run reports that as a ledger item)."""
    try:
        return read_tracking(work.tracking, work.frame_ids) if work.tracking else None
    except TrackingError:
        return None


@register
class IngestStage(Stage):
    name = "ingest"
    config_class = IngestConfig
    version = "2"
    requires = ("framing",)
    products = FRAME_ARRAYS
    later_settings = {"color_correction": "auto"}  # stores made before it: nothing was shipped to apply
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
        if any(v.alpha is not None for v in work.views):
            for name in ("released_alpha", "released_alpha_ok"):
                ensure_store_array(store, group, name, sizes, B)
        if work.tracking:
            track = read_tracking_or_none(work)
            if track is not None:
                dims = {**sizes, "X": track.expression.shape[1], "S": track.shape.shape[0]}
                for name in TRACKING_ARRAYS:
                    ensure_store_array(store, group, name, dims, B)
        group.attrs["color_correction"] = {
            "mode": cfg.color_correction,
            "views": {v.serial: c.describe() if (c := self.correction(v)) else None for v in work.views}}

    def correction(self, view: ViewSpec) -> ColorCorrection | None:
        """The colour correction applied to a view under this config (None: none)."""
        mode, color = self.config.color_correction, view.color
        if mode == "off" or color is None or (mode in ("v1", "v2") and color.kind != mode):
            return None
        return color

    def run(self, ctx: SegmentContext) -> Iterator[BlockOutput]:
        cfg, layout, work, group = self.config, ctx.layout, ctx.work, ctx.group
        cv2.setNumThreads(max(1, ctx.threads))
        R, V = cfg.resolution, len(work.views)
        wanted = [layout.frame_ids[t] for b in ctx.blocks for t in range(*layout.frames(b))]
        # one sequential decoder per camera, advanced in lockstep block by block
        decoders = [iter_frames(v.source, wanted, ctx.threads) for v in work.views]
        mattes = [iter_frames(v.alpha, wanted, 1) if v.alpha is not None else None for v in work.views]
        corrections = [self.correction(v) for v in work.views]
        with_mattes = any(m is not None for m in mattes)
        for block in ctx.blocks:
            t0, t1 = layout.frames(block)
            rgb = np.zeros((t1 - t0, V, R, R, 3), np.uint8)
            ok = np.zeros((t1 - t0, V), bool)
            matte = np.zeros((t1 - t0, V, R, R), np.uint8) if with_mattes else None
            matte_ok = np.zeros((t1 - t0, V), bool)
            squares = group["framing/crop"][t0:t1]  # [n, V, 3] source pixels
            K = np.zeros((t1 - t0, V, 3, 3), np.float32)
            items: list[LedgerItem] = []
            for t in range(t0, t1):  # frame by frame, all views: a rendered scan makes all its views at once
                for vi, (view, decoder) in enumerate(zip(work.views, decoders)):
                    crop = SquareCrop(*(int(x) for x in squares[t - t0, vi]))
                    K[t - t0, vi] = crop_resize_intrinsics(view.K_array, crop, R)
                    fid, image = next(decoder)
                    assert fid == layout.frame_ids[t], (fid, layout.frame_ids[t])
                    if mattes[vi] is not None:
                        matte_ok[t - t0, vi] = self._matte(next(mattes[vi])[1], view, crop, matte, t - t0, vi,
                                                           items, layout.key, fid, block)
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
                    if corrections[vi] is not None:
                        rgb[t - t0, vi] = corrections[vi].apply(rgb[t - t0, vi])
                    ok[t - t0, vi] = True
            whole = {}
            if block == 0:
                whole = self._background(work, [SquareCrop(*(int(x) for x in c)) for c in squares[0]], layout,
                                         block, items)
                whole["cameras/K"] = K[0]
                whole.update(self._tracking(work, layout, items, block))
                items += [LedgerItem(self.name, layout.key, f"no {cfg.color_correction} colour correction shipped "
                                     f"for camera {v.serial}: stored uncorrected", view=v.serial, block=block)
                          for v, c in zip(work.views, corrections)
                          if c is None and cfg.color_correction in ("v1", "v2")]
            frames = {"rgb": rgb, "rgb_ok": ok, "cameras/K_frames": K}
            if with_mattes:
                frames.update({"released_alpha": matte, "released_alpha_ok": matte_ok})
            yield BlockOutput(block, frames, items, whole)

    def _matte(self, image, view: ViewSpec, crop: SquareCrop, out: np.ndarray, t: int, v: int,
               items: list[LedgerItem], key: str, fid: int, block: int) -> bool:
        """Store one released matte (channel 0 of a matte video or image), resized to the camera's frames
        first where the release keeps it at another size; False (and a ledger item) when it is unreadable."""
        if isinstance(image, FrameError):
            items.append(LedgerItem(self.name, key, f"released matte: {image}", frame=fid, view=view.serial,
                                    block=block))
            return False
        a = image[..., 0] if image.ndim == 3 else image
        if a.shape != (view.height, view.width):
            a = cv2.resize(a, (view.width, view.height), interpolation=cv2.INTER_AREA)
        out[t, v] = crop_resize_image(np.ascontiguousarray(a), crop, self.config.resolution)
        return True

    def _tracking(self, work: ClipSpec, layout: ClipLayout, items: list[LedgerItem], block: int
                  ) -> dict[str, np.ndarray]:
        """The release's FLAME tracking aligned to the stored frames (block 0 owns it)."""
        if not work.tracking:
            return {}
        try:
            track = read_tracking(work.tracking, layout.frame_ids)
        except TrackingError as e:
            items.append(LedgerItem(self.name, layout.key, f"released tracking not used: {e}", block=block))
            return {}
        missing = int((~track.ok).sum())
        if missing:
            items.append(LedgerItem(self.name, layout.key, f"released tracking has no row for {missing} of "
                                    f"{len(track.ok)} stored frames", block=block))
        return track.arrays()

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
            correction = self.correction(view)
            if correction is not None:
                plates[vi] = correction.apply(plates[vi])
            ok[vi] = True
        return {"background": plates, "background_ok": ok}
