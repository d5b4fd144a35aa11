"""Matting: alpha [T, V, H, W] uint8 (PNG, lossless) of every ingested image.

Backends: `released` (the release's own mattes, stored by ingest as `released_alpha`: copied, nothing
is matted), `plate` (background difference against the camera's plate, with a segmentation prior
where the difference is ambiguous), `mediapipe` (selfie segmentation refined to the image), `rembg`
(U^2-Net family from REMBG_HOME / U2NET_HOME). `auto` takes `released` for the views the release has
mattes of, `plate` for the views that have a plate and `mediapipe` for the others (recorded in the ledger
and, per view, in the `alpha` array's `methods` attribute). A frame whose released matte is missing is
matted with the view's other method.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from datasets.errors import ConfigError
from datasets.schema import ensure_store_array
from datasets.store import LedgerItem, Store
from pipeline.backends.guided_filter import guided_filter
from pipeline.backends.plate_matting import PlateMattingParams, plate_matte, to_lab
from pipeline.stage import BlockOutput, ClipLayout, SegmentContext, Stage, register

BACKENDS = ("auto", "released", "plate", "mediapipe", "rembg")


@dataclass
class MattingConfig:
    backend: str = "auto"  # auto | released | plate | mediapipe | rembg
    plate_prior: bool = True  # plate: mediapipe segmentation decides where the plate difference is ambiguous
    rembg_model: str = "u2net"  # rembg: <name>.onnx in REMBG_HOME / U2NET_HOME
    refine_radius: int = 6  # guided-filter radius (pixels) refining segmentation mattes to the image
    refine_eps: float = 1e-3

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"matting backend must be one of {BACKENDS}, got {self.backend!r}")


@register
class MattingStage(Stage):
    name = "matting"
    config_class = MattingConfig
    version = "1"
    requires = ("ingest",)
    products = ("alpha",)

    def check(self) -> None:
        if self.config.backend == "rembg":
            from pipeline.backends.segmentation import rembg_model_path

            rembg_model_path(self.config.rembg_model)

    def prepare(self, store: Store, layout: ClipLayout, work) -> None:
        group = store.clip(layout.key)
        R = group["rgb"].shape[2]
        ensure_store_array(store, group, "alpha", {"T": layout.n_frames, "V": len(layout.views), "R": R},
                           layout.block_frames)

    def _view_methods(self, group, layout: ClipLayout) -> tuple[np.ndarray, list[bool], list[str]]:
        """(released matte present [T, V], the view takes released mattes [V], its other method [V])."""
        V = len(layout.views)
        has_plate = group["background_ok"][...] if "background_ok" in group else np.zeros(V, bool)
        released_ok = group["released_alpha_ok"][...] if "released_alpha_ok" in group else \
            np.zeros((layout.n_frames, V), bool)
        use = [bool(released_ok[:, v].any()) and self.config.backend in ("auto", "released") for v in range(V)]
        return released_ok, use, [self._method(bool(ok)) for ok in has_plate]

    def run(self, ctx: SegmentContext) -> Iterator[BlockOutput]:
        cfg, layout, group = self.config, ctx.layout, ctx.group
        has_plate = group["background_ok"][...] if "background_ok" in group else np.zeros(len(layout.views), bool)
        plates = group["background"][...] if has_plate.any() else None
        released_ok, use_released, methods = self._view_methods(group, layout)
        if 0 in ctx.blocks:  # the provenance of each view's mattes (the task of block 0 writes it)
            group["alpha"].attrs["methods"] = {
                serial: ("released" + ("" if released_ok[:, v].all() else f", else {m}")) if use_released[v] else m
                for v, (serial, m) in enumerate(zip(layout.views, methods))}
        plate_labs = {v: to_lab(plates[v]) for v, m in enumerate(methods) if m == "plate"}  # static: once per task
        notes = [LedgerItem(self.name, layout.key, f"no background plate for camera {serial}: matted with mediapipe",
                            view=serial, block=0)
                 for serial, ok in zip(layout.views, has_plate)
                 if not ok and cfg.backend in ("auto", "plate") and has_plate.any()]
        notes += [LedgerItem(self.name, layout.key, f"no released matte for camera {serial}: matted with "
                             f"{methods[v]}", view=serial, block=0)
                  for v, serial in enumerate(layout.views) if cfg.backend == "released" and not use_released[v]]
        segmenter = _Lazy(lambda: _mediapipe())
        rembg = _Lazy(lambda: _rembg(cfg.rembg_model))
        try:
            for block in ctx.blocks:
                t0, t1 = layout.frames(block)
                rgb, ok = group["rgb"][t0:t1], group["rgb_ok"][t0:t1]
                alpha = np.zeros(rgb.shape[:4], np.uint8)
                released = group["released_alpha"][t0:t1] if any(use_released) else None
                padding = _padding(group, t0, t1, rgb.shape[2])
                for t in range(t1 - t0):
                    for v, method in enumerate(methods):
                        if not ok[t, v]:
                            continue  # the ingest ledger already has this item
                        image = rgb[t, v]
                        if use_released[v] and released_ok[t0 + t, v]:
                            alpha[t, v] = released[t, v]
                            continue
                        if method == "plate":
                            prior = segmenter.get()(image) if cfg.plate_prior else None
                            a = plate_matte(image, plates[v], prior, PlateMattingParams(), plate_labs[v])
                        elif method == "rembg":
                            a = guided_filter(image, rembg.get()(image), cfg.refine_radius, cfg.refine_eps)
                        else:
                            a = guided_filter(image, segmenter.get()(image), cfg.refine_radius, cfg.refine_eps)
                        alpha[t, v] = np.round(a * 255).astype(np.uint8)
                        if padding is not None and padding[t][v] is not None:
                            alpha[t, v][padding[t][v]] = 0  # black padding past the source frame
                items = notes if block == 0 else []
                yield BlockOutput(block, {"alpha": alpha}, list(items))
        finally:
            segmenter.close()
            rembg.close()

    def _method(self, has_plate: bool) -> str:
        """The method of a view without (usable) released mattes."""
        if self.config.backend in ("auto", "released"):
            return "plate" if has_plate else "mediapipe"
        if self.config.backend == "plate" and not has_plate:
            return "mediapipe"
        return self.config.backend


def _padding(group, t0: int, t1: int, size: int) -> list[list[np.ndarray | None]] | None:
    """Per frame and view of [t0, t1): bool [size, size] where the stored square extends past the source
    frame (None: it does not), from the framing stage's crops; None for stores without them."""
    if "framing" not in group or "crop" not in group["framing"]:
        return None
    from datasets.cameras import SquareCrop, padding_mask

    sizes = group.attrs["source_sizes"]
    masks: dict[tuple, np.ndarray | None] = {}
    out = []
    for row in group["framing/crop"][t0:t1]:
        frame = []
        for v, c in enumerate(row):
            key = (v, *(int(x) for x in c))
            if key not in masks:
                mask = padding_mask(SquareCrop(*key[1:]), sizes[v][0], sizes[v][1], size)
                masks[key] = mask if mask.any() else None
            frame.append(masks[key])
        out.append(frame)
    return out


class _Lazy:
    """A backend created on first use (mediapipe objects cannot travel between processes)."""

    def __init__(self, factory):
        self.factory, self.value = factory, None

    def get(self):
        if self.value is None:
            self.value = self.factory()
        return self.value

    def close(self) -> None:
        if self.value is not None:
            self.value.close()


def _mediapipe():
    from pipeline.backends.segmentation import MediapipeSegmenter

    return MediapipeSegmenter()


def _rembg(model: str):
    from pipeline.backends.segmentation import RembgSegmenter

    return RembgSegmenter(model)
