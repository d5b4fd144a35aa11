"""Expression synthesis: each frame's expression carried by other identities, so the expression encoder
learns the expression and not the appearance (GPHMv2, sections 3.1 and 3.4).

    synth         uint8 [T, S, 256, 256, 3]  S images per frame, framed like the face crops (JPEG)
    synth_source  int32 [T, S, 3]            source of each image: (pool clip index, frame, view); the pool
                                             table (store URL or "" for this store, clip) is synth.attrs["pool"]
    synth_view    int16 [T]                  the driving view (-1: no frontal view with a face)
    synth_ok      bool  [T, S]

For every frame a frontal view (a camera list, or the view the head faces most, within `max_yaw`)
drives; S sources are drawn from the pool (another store, e.g. a preprocessed VFHQ store, or the other
subjects of this store; never the same subject) by a generator seeded with (seed, clip, frame), so the
same config gives the same images whichever task makes them.

Backends: `warp` (offline default: the driving expression as a displacement of the 3D landmarks in the
head frame, relative to the subject's neutral face, moved onto the source's landmarks and applied by a
piecewise-affine warp of the source crop) and `liveportrait` (a LivePortrait checkout the user supplies:
its expression transfer on head crops, re-framed like the face crops).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from datasets.errors import ConfigError
from datasets.names import clip_subject
from datasets.schema import ensure_store_array
from datasets.store import LedgerItem, Store
from pipeline.backends.face_align import face_transform, head_transform, warp
from pipeline.stage import BlockOutput, ClipLayout, SegmentContext, Stage, register

BACKENDS = ("warp", "liveportrait")


@dataclass
class SynthesisConfig:
    backend: str = "warp"  # warp (offline) | liveportrait (checkout + weights from --liveportrait-dir)
    images: int = 2  # S: synthesized images per frame
    seed: int = 0  # source sampling
    source_store: str = ""  # pool of source identities (a store URL); empty: the other subjects of this store
    frontal_views: list[str] = field(default_factory=list)  # camera serials that count as frontal; empty: by head pose
    max_yaw: float = 25.0  # by head pose: the head must face the camera within this angle (degrees)
    neutral_sources: float = 0.2  # sources come from this fraction of a pool clip's least expressive frontal frames
    min_confidence: float = 0.1  # landmarks below this mean confidence: no face in that view
    size: int = 256  # output side, like the face crops
    head_scale: float = 1.1  # liveportrait: framing of its input crops relative to FFHQ's
    liveportrait_dir: str = ""  # LivePortrait checkout (default $LIVEPORTRAIT_DIR)
    device: str = "cpu"  # liveportrait: cpu | cuda
    batch_size: int = 8  # liveportrait: images per forward pass
    jpeg_quality: int = 95

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"synthesis backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.images < 1:
            raise ConfigError(f"synthesis images per frame must be at least 1, got {self.images}")
        if not 0 < self.neutral_sources <= 1:
            raise ConfigError(f"synthesis.neutral_sources must be in (0, 1], got {self.neutral_sources}")
        if self.backend == "liveportrait" and not self.liveportrait_dir:
            import os

            from pipeline.backends.liveportrait import LIVEPORTRAIT_VARIABLE

            self.liveportrait_dir = os.environ.get(LIVEPORTRAIT_VARIABLE, "")


def fitted_clips(store: Store) -> list[str]:
    """Clips of a store whose every block has finished landmarks and fitting."""
    out = []
    for key in store.clips():
        layout = ClipLayout.from_group(store.clip(key))
        if all(len(store.markers(stage, key)) >= layout.n_blocks for stage in ("landmarks", "fitting")):
            out.append(key)
    return out


@dataclass
class ClipFacts:
    """What the stage needs of one clip (driving or source): fit, landmarks, cameras."""

    group: object
    lmk2d: np.ndarray  # [T, V, 68, 3]
    pose: np.ndarray  # [T, 4, 4]
    scale: np.ndarray  # [T]
    local: np.ndarray  # [T, 68, 3] head frame
    ok: np.ndarray  # [T] fitted
    K: np.ndarray  # [V, 3, 3]
    E: np.ndarray  # [V, 4, 4]
    views: list[str]

    @staticmethod
    def read(group) -> "ClipFacts":
        from model.fitting.geometry import to_head_frame

        pose, scale = group["fit/pose"][:].astype(np.float64), group["fit/scale"][:].astype(np.float64)
        ok = group["fit/ok"][:] & (scale > 0)
        lmk3d = group["fit/lmk3d"][:].astype(np.float64)
        local = np.zeros_like(lmk3d)
        local[ok] = to_head_frame(lmk3d[ok], pose[ok], scale[ok])
        return ClipFacts(group, group["lmk2d"][:], pose, scale, local, ok, group["cameras/K"][:].astype(np.float64),
                         group["cameras/world_to_cam"][:].astype(np.float64), list(group.attrs["views"]))

    def frontal_view(self, t: int, serials: list[str], max_yaw: float, min_conf: float) -> int:
        """The driving/source view of frame t, or -1."""
        seen = self.lmk2d[t, :, :, 2].mean(-1) >= min_conf
        if serials:
            for serial in serials:
                if serial in self.views and seen[self.views.index(serial)]:
                    return self.views.index(serial)
            return -1
        if not self.ok[t]:
            return -1
        R, c = self.pose[t, :3, :3], self.pose[t, :3, 3]
        centres = -np.einsum("vji,vj->vi", self.E[:, :3, :3], self.E[:, :3, 3])  # camera centres
        to_cam = centres - c
        cos = to_cam @ R[:, 2] / np.linalg.norm(to_cam, axis=1)  # head forward axis vs direction to camera
        cos = np.where(seen, cos, -2.0)
        v = int(np.argmax(cos))
        return v if cos[v] >= np.cos(np.radians(max_yaw)) else -1


@register
class SynthesisStage(Stage):
    name = "synthesis"
    config_class = SynthesisConfig
    version = "1"
    requires = ("landmarks", "fitting")
    products = ("synth", "synth_source", "synth_view", "synth_ok")
    scope = "group"  # reads the subject's other clips (neutral face) and the pool's clips

    def _fitted(self, store: Store) -> list[str]:
        """fitted_clips of a store, listed once per stage object (planning asks for every clip)."""
        cache = self.__dict__.setdefault("_fitted_cache", {})
        if store.url not in cache:
            cache[store.url] = fitted_clips(store)
        return cache[store.url]

    def check(self) -> None:
        cfg = self.config
        if cfg.backend == "liveportrait":
            from pipeline.backends.liveportrait import find_checkout

            find_checkout(cfg.liveportrait_dir)
        if cfg.source_store:
            if not self._fitted(Store(cfg.source_store, mode="r")):
                raise ConfigError(f"source store {cfg.source_store} has no clip with finished landmarks and fitting; "
                                 "run `cli.py preprocess ... --stages landmarks,fitting` on it first")

    def plan_work(self, store: Store, key: str, keys: list[str]) -> dict:
        cfg = self.config
        if cfg.source_store:
            pool = [[cfg.source_store, k] for k in self._fitted(Store(cfg.source_store, mode="r"))]
        else:
            ready = set(keys) | set(self._fitted(store))
            pool = [["", k] for k in sorted(ready) if clip_subject(k) != clip_subject(key)]
        cache = self.__dict__.setdefault("_clips_cache", {})
        in_store = cache.setdefault(store.url, store.clips())
        subject = sorted(k for k in set(keys) | set(in_store) if clip_subject(k) == clip_subject(key))
        return {"pool": pool, "subject": subject}

    def scope_members(self, key: str, work) -> tuple[str, ...]:
        same_store = [k for url, k in work["pool"] if not url]
        return tuple(sorted(set(work["subject"]) | set(same_store) | {key}))

    def clip_identity(self, work):
        return work["pool"]  # another pool: other sources for the same seed

    def prepare(self, store: Store, layout: ClipLayout, work) -> None:
        cfg = self.config
        group = store.clip(layout.key)
        T, B, S, N = layout.n_frames, layout.block_frames, cfg.size, cfg.images
        for name in self.products:
            ensure_store_array(store, group, name, {"T": T, "N": N, "C": S}, B, jpeg_quality=cfg.jpeg_quality)
        group["synth"].attrs.update({
            "pool": work["pool"], "backend": cfg.backend, "source": "(pool index, frame, view) in synth_source",
            "source_frames": f"the {cfg.neutral_sources:.0%} least expressive frontal frames of each pool clip "
                             "(closed, narrow mouth, usual eyes and brows), the expression added to them"})

    def skip_reason(self, key: str, work) -> str | None:
        if work["pool"]:
            return None
        return ("skipped: no source identities to carry this clip's expressions (the store has no other subject "
                "and no pool was given); add one with --synth-source STORE, a preprocessed store of other people "
                "(e.g. VFHQ); training uses the clip's own face crops as expression conditions meanwhile")

    # ------------------------------------------------------------------ worker side
    def run(self, ctx: SegmentContext) -> Iterator[BlockOutput]:
        from pipeline.backends.expression_geometry import neutral_shape

        cfg, layout = self.config, ctx.layout
        pool = ctx.work["pool"]
        driving = ClipFacts.read(ctx.group)
        subject = [driving] + [ClipFacts.read(ctx.store.clip(k)) for k in ctx.work["subject"]
                               if k != layout.key and "fit" in ctx.store.clip(k)]
        local = np.concatenate([f.local[f.ok] for f in subject])
        driving_neutral = neutral_shape(local) if len(local) else None
        sources = _SourcePool(pool, ctx.store, cfg)
        backend = self._backend()
        for block in ctx.blocks:
            t0, t1 = layout.frames(block)
            n, N, S = t1 - t0, cfg.images, cfg.size
            out = {"synth": np.zeros((n, N, S, S, 3), np.uint8), "synth_source": np.full((n, N, 3), -1, np.int32),
                   "synth_view": np.full(n, -1, np.int16), "synth_ok": np.zeros((n, N), bool)}
            items: list[LedgerItem] = []
            jobs = []  # (row, s, source) to synthesise
            for i, t in enumerate(range(t0, t1)):
                frame = layout.frame_ids[t] if layout.frame_ids else t
                v = driving.frontal_view(t, cfg.frontal_views, cfg.max_yaw, cfg.min_confidence)
                out["synth_view"][i] = v
                if v < 0 or driving_neutral is None:
                    items.append(LedgerItem(self.name, layout.key, "no frontal view with a fitted face to drive "
                                            "the expression", frame=frame, block=block))
                    continue
                rng = np.random.default_rng([cfg.seed, zlib.crc32(layout.key.encode()), frame])
                for s in range(N):
                    source = sources.draw(rng)
                    if source is None:
                        items.append(LedgerItem(self.name, layout.key, "no frontal source face found in the pool",
                                                frame=frame, block=block))
                        continue
                    jobs.append((i, s, t, v, source))
            if jobs:
                images = self._synthesise(backend, driving, driving_neutral, sources, jobs)
                for (i, s, _, _, source), image in zip(jobs, images):
                    out["synth"][i, s] = image
                    out["synth_source"][i, s] = source
                    out["synth_ok"][i, s] = True
            yield BlockOutput(block, out, items)

    def _backend(self):
        cfg = self.config
        if cfg.backend == "warp":
            from pipeline.backends.expression_warp import WarpExpression

            return WarpExpression()
        from pipeline.backends.liveportrait import LivePortraitExpression, find_checkout

        return LivePortraitExpression(find_checkout(cfg.liveportrait_dir), cfg.device, cfg.batch_size)

    def _synthesise(self, backend, driving: "ClipFacts", driving_neutral: np.ndarray, sources: "_SourcePool",
                    jobs: list) -> list[np.ndarray]:
        from pipeline.backends.expression_geometry import target_points
        from pipeline.backends.face_align import apply

        cfg, S = self.config, self.config.size
        if cfg.backend == "warp":
            images = []
            for _, _, t, v, (p, f, sv) in jobs:
                src = sources.facts(p)
                lmk = src.lmk2d[f, sv]
                M = face_transform(lmk, S)
                crop = warp(src.group["rgb"][f, sv], M, S)
                goal = target_points(apply(M, lmk[:, :2]), src.local[f], sources.neutral(p), driving.local[t],
                                     driving_neutral, src.pose[f], float(src.scale[f]), src.K[sv], src.E[sv], M)
                images.append(backend(crop, apply(M, lmk[:, :2]), goal))
            return images
        # liveportrait: head crops in, the result re-framed like the source's face crop
        drv, src_crops, reframe = [], [], []
        for _, _, t, v, (p, f, sv) in jobs:
            src = sources.facts(p)
            d_lmk, s_lmk = driving.lmk2d[t, v], src.lmk2d[f, sv]
            drv.append(warp(driving.group["rgb"][t, v], head_transform(d_lmk, S, cfg.head_scale), S))
            H = head_transform(s_lmk, S, cfg.head_scale)
            src_crops.append(warp(src.group["rgb"][f, sv], H, S))
            reframe.append(_compose(face_transform(s_lmk, S), _invert(H)))
        results = backend(np.stack(drv), np.stack(src_crops))
        return [warp(r, M, S) for r, M in zip(results, reframe)]


def _invert(M: np.ndarray) -> np.ndarray:
    A = np.vstack([M, [0.0, 0.0, 1.0]])
    return np.linalg.inv(A)[:2]


def _compose(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """The 2x3 affine of applying B then A."""
    return (np.vstack([A, [0, 0, 1.0]]) @ np.vstack([B, [0, 0, 1.0]]))[:2]


class _SourcePool:
    """Draws (pool index, frame, view) source faces; reads a pool clip once per task."""

    def __init__(self, pool: list, store: Store, cfg: SynthesisConfig):
        self.pool = pool
        self.store = store
        self.cfg = cfg
        self._stores: dict[str, Store] = {}
        self._facts: dict[int, ClipFacts] = {}
        self._frontal: dict[int, list[tuple[int, int]]] = {}
        self._neutral: dict[int, np.ndarray] = {}

    def facts(self, p: int) -> ClipFacts:
        if p not in self._facts:
            url, key = self.pool[p]
            if url and url not in self._stores:
                self._stores[url] = Store(url, self.store.storage_options, mode="r")
            store = self._stores[url] if url else self.store
            facts = ClipFacts.read(store.clip(key))
            self._facts[p] = facts
            frontal = [(t, v) for t in range(len(facts.ok))
                       if (v := facts.frontal_view(t, self.cfg.frontal_views, self.cfg.max_yaw,
                                                   self.cfg.min_confidence)) >= 0]
            # a source wears the driving expression on top of its own: take its least expressive frames
            frontal = [(t, v) for t, v in frontal if facts.ok[t]]
            if frontal:
                from pipeline.backends.expression_geometry import least_expressive

                local = facts.local[[t for t, _ in frontal]]
                keep = least_expressive(local, self.cfg.neutral_sources)
                frontal = [frontal[i] for i in sorted(keep)]
            self._frontal[p] = frontal
        return self._facts[p]

    def neutral(self, p: int) -> np.ndarray:
        """A source clip's neutral face (from that clip's frames)."""
        from pipeline.backends.expression_geometry import neutral_shape

        if p not in self._neutral:
            facts = self.facts(p)
            self._neutral[p] = neutral_shape(facts.local[facts.ok])
        return self._neutral[p]

    def draw(self, rng: np.random.Generator) -> tuple[int, int, int] | None:
        for _ in range(8):  # a clip without a frontal face: draw another
            p = int(rng.integers(len(self.pool)))
            self.facts(p)
            if self._frontal[p]:
                t, v = self._frontal[p][int(rng.integers(len(self._frontal[p])))]
                return p, t, v
        return None
