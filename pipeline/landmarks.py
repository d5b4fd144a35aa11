"""2D face landmarks: lmk2d [T, V, 68, 3] (x, y, confidence; iBUG-68 order), the detector's full set
lmk_full [T, V, P, 3] (mediapipe: 478 points x, y, z in pixels; face-alignment: the 68 again), the face
box face_box [T, V, 5] (x0, y0, x1, y1, score) and the face count faces [T, V].

A frame with no face keeps confidence 0 (and its alpha); several faces: the one nearest the image
centre (or the largest) is kept, the count recorded. Both go to the ledger.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from datasets.store import LedgerItem, Store
from pipeline.backends.face_result import FaceResult
from pipeline.stage import BlockOutput, ClipLayout, SegmentContext, Stage, register

BACKENDS = ("mediapipe", "face-alignment")


@dataclass
class LandmarksConfig:
    backend: str = "mediapipe"  # mediapipe | face-alignment
    mode: str = "auto"  # mediapipe: tracking (video) | static (unrelated images) | auto (static for image folders)
    select: str = "center"  # with several faces keep the one nearest the centre, or the largest
    device: str = "cpu"  # face-alignment: cpu | cuda
    detector_path: str = ""  # face-alignment S3FD weights (default: $TORCH_HOME/hub/checkpoints/s3fd-619a316812.pth)
    compile: bool = False  # face-alignment: torch.compile the networks
    batch_size: int = 8  # face-alignment: frames per forward pass

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"landmarks backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.mode not in ("auto", "tracking", "static"):
            raise ValueError(f"landmarks mode must be auto, tracking or static, got {self.mode!r}")
        if self.select not in ("center", "largest"):
            raise ValueError(f"face selection must be center or largest, got {self.select!r}")


@register
class LandmarksStage(Stage):
    name = "landmarks"
    config_class = LandmarksConfig
    version = "1"
    requires = ("ingest",)
    products = ("lmk2d", "lmk_full", "face_box", "faces")
    sequential = True  # trackers follow a view from frame to frame

    def check(self) -> None:
        if self.config.backend == "face-alignment":
            from pipeline.backends.fan_landmarks import detector_weights, fan_weights

            fan_weights()
            detector_weights(self.config.detector_path)

    def n_full(self) -> int:
        return 478 if self.config.backend == "mediapipe" else 68

    def prepare(self, store: Store, layout: ClipLayout, work) -> None:
        group = store.clip(layout.key)
        T, V, B = layout.n_frames, len(layout.views), layout.block_frames
        store.ensure_frame_array(group, "lmk2d", (T, V, 68, 3), "float32", B)
        store.ensure_frame_array(group, "lmk_full", (T, V, self.n_full(), 3), "float32", B)
        store.ensure_frame_array(group, "face_box", (T, V, 5), "float32", B)
        store.ensure_frame_array(group, "faces", (T, V), "int16", B)
        group["lmk_full"].attrs["format"] = "mediapipe-478 (x, y, z pixels)" if self.n_full() == 478 else "ibug-68"

    def run(self, ctx: SegmentContext) -> Iterator[BlockOutput]:
        cfg, layout, group = self.config, ctx.layout, ctx.group
        V = len(layout.views)
        if cfg.backend == "mediapipe":
            from pipeline.backends.mediapipe_landmarks import MediapipeFaceLandmarks

            tracking = cfg.mode == "tracking" or (cfg.mode == "auto" and group.attrs.get("dataset") != "images")
            detectors = [MediapipeFaceLandmarks(tracking=tracking, select=cfg.select) for _ in range(V)]
        else:
            from pipeline.backends.fan_landmarks import FanFaceLandmarks

            fan = FanFaceLandmarks(cfg.device, cfg.detector_path, cfg.select, cfg.compile, batch_size=cfg.batch_size)
        try:
            for block in ctx.blocks:
                t0, t1 = layout.frames(block)
                rgb, ok = group["rgb"][t0:t1], group["rgb_ok"][t0:t1]
                n = t1 - t0
                out = {"lmk2d": np.zeros((n, V, 68, 3), np.float32),
                       "lmk_full": np.zeros((n, V, self.n_full(), 3), np.float32),
                       "face_box": np.zeros((n, V, 5), np.float32), "faces": np.zeros((n, V), np.int16)}
                items: list[LedgerItem] = []
                for v in range(V):
                    frames = [t for t in range(n) if ok[t, v]]
                    if cfg.backend == "mediapipe":
                        # tracking starts afresh in every block: a block's result must not depend on
                        # which task (or which earlier run) did the block before it
                        detectors[v].reset()
                        results = [detectors[v](rgb[t, v]) for t in frames]
                    else:
                        results = []
                        for i in range(0, len(frames), cfg.batch_size):
                            results += fan.batch(rgb[frames[i:i + cfg.batch_size], v])
                    for t, res in zip(frames, results):
                        self._store(out, t, v, res)
                        reason = _problem(res)
                        if reason:
                            items.append(LedgerItem(self.name, layout.key, reason, frame=layout.frame_ids[t0 + t],
                                                    view=layout.views[v], block=block))
                yield BlockOutput(block, out, items)
        finally:
            if cfg.backend == "mediapipe":
                for d in detectors:
                    d.close()

    @staticmethod
    def _store(out: dict, t: int, v: int, res: FaceResult) -> None:
        out["faces"][t, v] = res.count
        if res.landmarks68 is None:
            return
        out["lmk2d"][t, v] = res.landmarks68
        out["lmk_full"][t, v] = res.landmarks_full
        out["face_box"][t, v] = res.box


def _problem(res: FaceResult) -> str | None:
    if res.landmarks68 is None:
        return "no face detected" if res.count == 0 else f"{res.count} face(s) detected but no landmarks found"
    if res.count > 1:
        return f"{res.count} faces detected; kept one"
    return None
