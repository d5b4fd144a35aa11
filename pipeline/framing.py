"""Framing: which square of each source frame the store keeps, decided before ingest decodes for real.

    framing/crop      int32   [T, V, 3]  x0, y0, size of the stored square in source pixels (it may extend
                                         past the frame: those pixels are black padding, alpha 0)
    framing/face_box  float32 [T, V, 5]  the subject's face found by the framing pass (source pixels) and
                                         its detection score; -1 between two detections (interpolated),
                                         0 where no face was found or the pass did not track (multi-view)
    framing/placement int8    [V]        how each camera's square was chosen (PLACEMENT, also in the
                                         array's attrs["codes"])

Modes (`mode`):
- `head` (the default for one-camera clips: videos, image folders, VFHQ): a first pass over the clip runs
  a face detector on a downscaled copy of every few frames (every frame around a lost face), links the
  detections into the subject's track, interpolates between them, and keeps the union of the frames'
  head squares (FFHQ-style framing grown by `head_scale`): one crop, so the clip keeps one pinhole
  camera. `follow` instead keeps a square per frame that follows the head, smoothed over time (the
  intrinsics of each frame are stored, cameras/K_frames). A clip in which no face is found keeps the
  largest centred square.
- `place` (the default for calibrated multi-view captures): per camera, a square of the frame's shorter
  side placed to hold the head seen in frames sampled over the sequence (larger and padded only when the
  face needs it); a camera in which no face is found is placed on the head the other cameras saw (the
  nearest point of their rays through it, projected), or, seen by fewer than two, keeps its whole frame
  padded to a square.
- `pad` (the default for rendered scans, whose square renders the rig already framed on the head): the
  whole frame padded to a square. `center`: the largest centred square (drops the top and
  bottom of portrait frames). `X0,Y0,SIZE`: one fixed square in source pixels for every camera.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from datasets.cameras import SquareCrop
from datasets.errors import ConfigError
from datasets.raw.base import ClipSpec, ViewSpec
from datasets.raw.sources import FrameError, iter_frames, sample_frames
from datasets.schema import ensure_store_array
from datasets.store import Store
from pipeline.stage import BlockOutput, ClipLayout, SegmentContext, Stage, register

MODES = ("auto", "head", "place", "pad", "center")
FIXED, SEEN, FROM_OTHERS, PADDED, CENTRED = range(5)
PLACEMENT = {FIXED: "the mode's fixed square (pad, center or X0,Y0,SIZE)", SEEN: "on the face this camera saw",
             FROM_OTHERS: "on the head the other cameras saw (none found in this one)",
             PADDED: "no face found: the whole frame, padded to a square",
             CENTRED: "no face found in the clip: the largest centred square"}


@dataclass
class FramingConfig:
    mode: str = "auto"  # auto (head for one camera, place for several) | head | place | pad | center | 'X0,Y0,SIZE'
    follow: bool = False  # head mode: a square per frame following the head (smoothed) instead of one per clip
    head_scale: float = 1.3  # the head square relative to FFHQ's framing (1.0): room for hair, chin and neck
    detect_every: int = 3  # head mode: the detector looks at every n-th frame (every frame around a lost face)
    detect_size: int = 480  # longer side of the downscaled copy the detector sees, pixels
    min_score: float = 0.75  # detections scored lower are ignored (real faces score about 0.9)
    max_gap: float = 0.5  # seconds a face track may go undetected and still be one track (15 frames without fps)
    smooth: float = 0.25  # follow: Gaussian smoothing of the square over time, sigma in seconds (0: none)
    sample_frames: int = 5  # place mode: frames per camera the detector looks at

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            SquareCrop.parse(self.mode, 1, 1)  # 'X0,Y0,SIZE', or a clear error
        if self.mode == "centre":
            self.mode = "center"
        if self.head_scale <= 0 or self.detect_every < 1 or self.detect_size < 32 or self.sample_frames < 1:
            raise ConfigError("framing: head_scale must be positive, detect_every and sample_frames at least 1, "
                             "detect_size at least 32")


def resolved_mode(mode: str, n_views: int, rendered: bool = False) -> str:
    """The mode `auto` stands for: head (one camera), place (several), pad for rendered scans (their
    square frames are already framed on the head by the rig, datasets/scans/rig.py)."""
    if mode == "auto":
        return "pad" if rendered else "head" if n_views == 1 else "place"
    return mode


def is_rendered(work: ClipSpec) -> bool:
    """The clip's frames are rendered scans (datasets/scans), not decoded captures."""
    return any(hasattr(v.source, "iter_frames") for v in work.views)


def stored_fps(work: ClipSpec) -> float:
    """Frame rate of the stored frames (after the stride); 0 when the source has none."""
    if not work.fps:
        return 0.0
    step = work.frame_ids[1] - work.frame_ids[0] if len(work.frame_ids) > 1 else 1
    return work.fps / max(1, step)


def clip_attributes(work: ClipSpec, layout: ClipLayout) -> dict:
    """What every stage may read of a clip's raw origin (framing and ingest both set them)."""
    return {"dataset": work.dataset, "views": list(layout.views), "frame_ids": list(layout.frame_ids),
            "n_frames": layout.n_frames, "block_frames": layout.block_frames, "fps": stored_fps(work),
            "source_sizes": [[v.width, v.height] for v in work.views], "raw": raw_provenance(work)}


def raw_provenance(work: ClipSpec) -> dict:
    """What the reader found and did: the packaging, its notes (rescaled intrinsics, meta files), what the
    release says of the clip, and which views came with the release's mattes and colour correction."""
    return {"layout": work.layout, "notes": list(work.notes),
            "meta": {k: list(v) if isinstance(v, tuple) else v for k, v in work.source_meta},
            "released_mattes": [v.serial for v in work.views if v.alpha is not None],
            "color_correction": {v.serial: v.color.describe() for v in work.views if v.color is not None},
            "tracking": work.tracking}


def raw_identity(work: ClipSpec) -> dict:
    """What a clip's stored frames are made of; moving the raw root does not change it."""
    identity = {"frame_ids": list(work.frame_ids),
                "views": [(v.serial, v.width, v.height, v.K, v.world_to_cam, v.background is not None)
                          for v in work.views]}
    # what a release ships beside the frames (only where it does: other stores keep their fingerprints)
    extras = [(v.serial, v.alpha is not None, v.color.matrix if v.color else None) for v in work.views
              if v.alpha is not None or v.color is not None]
    if extras:
        identity["release"] = extras
    if work.tracking:
        identity["tracking"] = True
    return identity


@register
class FramingStage(Stage):
    name = "framing"
    config_class = FramingConfig
    version = "1"
    requires = ()
    products = ("framing/crop", "framing/face_box")  # (and framing/placement, written with block 0)
    sequential = True
    scope = "clip"  # the crop of a clip depends on all its frames: one task per clip
    reads_raw = True
    implicit = True  # runs whenever ingest runs (its results are kept while current)

    def clip_identity(self, work: ClipSpec) -> dict:
        return raw_identity(work)

    def prepare(self, store: Store, layout: ClipLayout, work: ClipSpec) -> None:
        group = store.create_clip(work.subject, work.sequence, clip_attributes(work, layout))
        T, V, B = layout.n_frames, len(layout.views), layout.block_frames
        group.require_group("framing")
        for name in ("framing/crop", "framing/face_box", "framing/placement"):
            ensure_store_array(store, group, name, {"T": T, "V": V}, B)
        group["framing/placement"].attrs["codes"] = {str(k): v for k, v in PLACEMENT.items()}
        group["framing"].attrs.update({"mode": resolved_mode(self.config.mode, V, is_rendered(work)),
                                       "follow": bool(self.config.follow and V == 1),
                                       "convention": "crop: x0, y0, size in source pixels; face_box: x0, y0, x1, "
                                                     "y1, score (-1 interpolated, 0 none) in source pixels"})

    def run(self, ctx: SegmentContext) -> Iterator[BlockOutput]:
        cfg, layout, work = self.config, ctx.layout, ctx.work
        T, V = layout.n_frames, len(work.views)
        mode = resolved_mode(cfg.mode, V, is_rendered(work))
        crops = np.zeros((T, V, 3), np.int32)
        faces = np.zeros((T, V, 5), np.float32)
        placement = np.full(V, FIXED, np.int8)
        detector = None
        if mode in ("head", "place"):
            from pipeline.backends.face_detect import FaceDetector

            detector = FaceDetector(min_score=min(0.5, cfg.min_score), detect_size=cfg.detect_size)
        try:
            if mode == "place":
                placed, placement[:] = self._place_views(work, detector)
                crops[:] = np.array([[c.x0, c.y0, c.size] for c in placed])[None]
            for v, view in enumerate(work.views):
                if mode == "head":
                    crops[:, v], faces[:, v], placement[v] = self._head(view, work, detector, ctx.threads)
                elif mode != "place":
                    c = SquareCrop.parse(mode, view.width, view.height)
                    crops[:, v] = (c.x0, c.y0, c.size)
        finally:
            if detector is not None:
                detector.close()
        for block in ctx.blocks:
            t0, t1 = layout.frames(block)
            yield BlockOutput(block, {"framing/crop": crops[t0:t1], "framing/face_box": faces[t0:t1]},
                              whole={"framing/placement": placement} if block == 0 else {})

    # ------------------------------------------------------------------ head mode (one camera)
    def _head(self, view: ViewSpec, work: ClipSpec, detector, threads: int) -> tuple[np.ndarray, np.ndarray, int]:
        from pipeline.backends.head_track import follow_squares, head_squares, subject_track, to_crop, union_square

        cfg = self.config
        fps = stored_fps(work)
        detections = detect_clip(view, work.frame_ids, detector, cfg.detect_every, cfg.min_score, threads)
        max_gap = max(1, int(round(cfg.max_gap * fps))) if fps else 15
        track = subject_track(detections, cfg.min_score, max_gap)
        T = len(work.frame_ids)
        if not track.found.any():
            c = SquareCrop.centred(view.width, view.height)
            return np.tile([c.x0, c.y0, c.size], (T, 1)), track.as_array(), CENTRED
        squares = head_squares(track.keypoints, track.boxes, cfg.head_scale)
        if cfg.follow:
            sigma = cfg.smooth * fps if fps else 0.0  # no frame rate (photos): no smoothing across them
            per_frame = follow_squares(squares, track.found, sigma)
            crops = np.array([[c.x0, c.y0, c.size] for c in map(to_crop, per_frame)])
        else:
            c = to_crop(union_square(squares[track.found]))
            crops = np.tile([c.x0, c.y0, c.size], (T, 1))
        return crops, track.as_array(), SEEN

    # ------------------------------------------------------------------ place mode (calibrated views)
    def _place_views(self, work: ClipSpec, detector) -> tuple[list[SquareCrop], list[int]]:
        """Per camera the placed square, from the head seen in frames sampled over the sequence; a camera
        that saw no face gets the head found by the others (its rays' nearest point, projected, at the
        metric size they measured), or its whole frame padded when fewer than two cameras saw it."""
        from pipeline.backends.head_track import head_squares, nearest_point, place_square, union_square

        cfg = self.config
        heads: list[np.ndarray | None] = []
        faces: list[np.ndarray | None] = []
        for view in work.views:
            h, f = [], []
            for _, image in sample_frames(view.source, work.frame_ids, cfg.sample_frames):
                found = [d for d in detector(image) if d.score >= cfg.min_score]
                if found:
                    d = found[0]
                    h.append(head_squares(d.keypoints[None], d.box[None], 1.0)[0])  # FFHQ's: the head itself
                    side = max(d.box[2] - d.box[0], d.box[3] - d.box[1])
                    f.append(np.array([(d.box[0] + d.box[2]) / 2, (d.box[1] + d.box[3]) / 2, side]))
            heads.append(union_square(np.array(h)) if h else None)
            faces.append(union_square(np.array(f)) if f else None)
        seen = [v for v, h in enumerate(heads) if h is not None]
        point = metric = None
        if len(seen) >= 2:  # the head in 3D: where the seen cameras' rays through it meet
            centres, rays, sizes = [], [], []
            for v in seen:
                K, E = work.views[v].K_array, work.views[v].world_to_cam_array
                R, t = E[:3, :3], E[:3, 3]
                centres.append(-R.T @ t)
                rays.append(R.T @ np.linalg.solve(K, [heads[v][0], heads[v][1], 1.0]))
            point = nearest_point(np.array(centres), np.array(rays))
            for v in seen:
                K, E = work.views[v].K_array, work.views[v].world_to_cam_array
                depth = (E[:3, :3] @ point + E[:3, 3])[2]
                sizes.append((heads[v][2] * depth / K[0, 0], faces[v][2] * depth / K[0, 0]))
            metric = np.median(np.array(sizes), 0)  # head and face sides, world units
        crops, how = [], []
        for v, view in enumerate(work.views):
            head, face = heads[v], faces[v]
            how.append(SEEN)
            if head is None and point is not None:
                K, E = view.K_array, view.world_to_cam_array
                cam = E[:3, :3] @ point + E[:3, 3]
                if cam[2] > 0:
                    uv = (K @ cam)[:2] / cam[2]
                    head = np.array([*uv, metric[0] * K[0, 0] / cam[2]])
                    face = np.array([*uv, metric[1] * K[0, 0] / cam[2]])
                    how[-1] = FROM_OTHERS
            if head is None:
                crops.append(SquareCrop.padded(view.width, view.height))
                how[-1] = PADDED
            else:
                crops.append(place_square(head, face, view.width, view.height))
        return crops, how


def detect_clip(view: ViewSpec, frame_ids, detector, every: int, min_score: float, threads: int = 1
                ) -> list[list | None]:
    """Detections (frame pixels) per stored frame of one camera; None where the detector did not look.
    The detector looks at every `every`-th frame; when it finds no face (scored min_score or more) there
    it goes back over the frames since its last look, then looks at every frame until it finds one. Frames
    it does not look at are decoded (a video needs them) but never converted to RGB or resized."""
    n = len(frame_ids)
    out: list[list | None] = [None] * n
    pending: deque = deque()  # (t, lazy frame) not looked at since the last look
    lost = False

    def look(frame) -> list:
        try:
            return detector(frame.rgb())
        except (ValueError, OSError):  # an unreadable image file: ingest records it
            return []

    for t, (_, frame) in enumerate(iter_frames(view.source, list(frame_ids), threads, lazy=True)):
        if isinstance(frame, FrameError):
            continue
        if not (lost or t % every == 0 or t == n - 1):
            pending.append((t, frame))
            continue
        out[t] = look(frame)
        hit = any(d.score >= min_score for d in out[t])
        if not hit and not lost:
            for tb, fb in pending:  # the face was lost in between: look at those frames too
                out[tb] = look(fb)
        pending.clear()
        lost = not hit
    return out
