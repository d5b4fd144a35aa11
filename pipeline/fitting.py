"""Head pose, scale and 3D landmarks per frame, from the 2D landmarks of the calibrated views.

    fit/pose        float32 [T, 4, 4]  head -> world rotation and translation (world = scale R x + t)
    fit/scale       float32 [T]        head-frame (or model) units -> world units
    fit/lmk3d       float32 [T, 68, 3] 3D landmarks, world (iBUG-68 order)
    fit/residual    float32 [T, V]     median reprojection error of each view's landmarks, pixels (NaN: no face)
    fit/ok          bool    [T]        the frame had enough landmarks to be fitted
    fit/expression  float32 [T, E]     model backends: expression coefficients per frame
    fit/identity    float32 [I]        model backends: the subject's identity coefficients (per clip copy)
    fit/reference   float32 [68, 3]    triangulate: the subject's reference landmark set in the head frame

Backends: `triangulate` (offline default, no model files: multi-view triangulation and a similarity fit
of the subject's reference landmark set; one view: the face mesh's relative depth aligned to the subject's
reference shape, the pose from its rigid part and the rest kept as the expression, smoothed over time, see
model/fitting/monocular.py; `monocular = "template"` poses the rigid mean template by perspective-n-point),
`bfm2009`, `bfm2017`, `flame` (a morphable model fitted to all views of all frames at once), `released`
(the release's own FLAME tracking, stored by ingest as `tracking/*`, evaluated with the FLAME 2023 model
file and converted to the store's convention, model/fitting/released_flame.py; checked by reprojecting
its landmarks onto the 2D landmarks: views off by more than max_residual go to the ledger).

What is shared by a subject (identity and scale of a model, the reference landmark set) is fitted on
frames sampled evenly from every clip of the subject in the run, so the stage runs per subject: its
task for a clip waits for the landmarks of all the subject's clips, and adding a clip to a subject
makes the subject's fits stale (refused unless --recompute). A task always solves its whole clip (the
fit is batched over the clip's frames) and writes the blocks it was asked for; the result of a block
does not depend on which task made it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from datasets.errors import ConfigError
from datasets.names import clip_subject
from datasets.schema import ensure_store_array
from datasets.store import LedgerItem, Store
from datasets.weights import MORPHABLE_LANDMARK_VARIABLES, MORPHABLE_MODEL_VARIABLES
from model.fitting.geometry import to_matrix
from pipeline.stage import BlockOutput, ClipLayout, SegmentContext, Stage, register

BACKENDS = ("triangulate", "bfm2009", "bfm2017", "flame", "released")


@dataclass
class FittingConfig:
    backend: str = "triangulate"  # triangulate (no model files) | bfm2009 | bfm2017 | flame | released
    model_path: str = ""  # model file; empty: $HEADFORGE_BFM2009 / $HEADFORGE_BFM2017 / $HEADFORGE_FLAME
    landmarks_path: str = ""  # FLAME landmark embedding / BFM2017 68-point index file (or the env variable)
    n_id: int = 0  # identity coefficients fitted (0: the model's default)
    n_exp: int = 0  # expression coefficients fitted (0: the model's default)
    min_confidence: float = 0.1  # detections below this confidence are ignored
    robust: float = 0.02  # Cauchy scale of the reprojection error, fraction of a view's face size
    outlier_view: float = 0.06  # views disagreeing by more than this (fraction of face size) are dropped
    max_residual: float = 0.06  # views whose final median residual exceeds this fraction go to the ledger
    min_views: int = 2  # frames seen with a face by fewer views are not fitted (one-view clips: 1)
    monocular: str = "mesh"  # one view: mesh (face mesh depth, with expression) | template (rigid, neutral)
    smooth_pose: float = 0.04  # one view: Gaussian smoothing of the head pose over time, sigma in seconds (0: none)
    smooth_expression: float = 0.02  # one view: the same for the expression (short: a blink lasts about 0.1 s)
    identity_frames: int = 16  # frames per clip used to fit what the subject shares
    rigid_iters: int = 300  # model backends: iteration cap of the rigid phase
    full_iters: int = 500  # model backends: iteration cap of the full phase
    tol: float = 1e-4  # model backends: relative loss change over 20 iterations that shrinks the step (4x: phase ends)
    w_id: float = 1e-3  # model backends: identity prior weight
    w_exp: float = 1e-3  # model backends: expression prior weight
    temporal: float = 0.0  # model backends: smoothness of expression and pose between frames
    device: str = "cpu"  # model backends: cpu | cuda

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"fitting backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.monocular not in ("mesh", "template"):
            raise ConfigError(f"fitting.monocular must be mesh or template, got {self.monocular!r}")
        if self.smooth_pose < 0 or self.smooth_expression < 0:
            raise ConfigError("fitting.smooth_pose and smooth_expression must not be negative")
        # the file actually used is part of the config (and so of the fingerprint), not the variable
        kind = self.model_kind
        if kind in MORPHABLE_MODEL_VARIABLES and not self.model_path:
            self.model_path = os.environ.get(MORPHABLE_MODEL_VARIABLES[kind], "")
        if kind in MORPHABLE_LANDMARK_VARIABLES and not self.landmarks_path:
            self.landmarks_path = os.environ.get(MORPHABLE_LANDMARK_VARIABLES[kind], "")

    @property
    def model_kind(self) -> str:
        """The morphable model file the backend reads ('' for triangulate)."""
        return "flame" if self.backend == "released" else ("" if self.backend == "triangulate" else self.backend)

    def settings(self):
        from model.fitting.model_fit import FitSettings

        return FitSettings(self.robust, self.outlier_view, self.min_confidence, self.rigid_iters, self.full_iters,
                           self.tol, w_id=self.w_id, w_exp=self.w_exp, temporal=self.temporal, device=self.device)


@dataclass
class ClipInput:
    """The landmarks and cameras of (some frames of) one clip."""

    uv: np.ndarray  # [T, V, 68, 2]
    conf: np.ndarray  # [T, V, 68]
    K: np.ndarray  # [V, 3, 3]
    E: np.ndarray  # [V, 4, 4]
    frames: np.ndarray = field(default_factory=lambda: np.zeros(0, int))  # store frame of each row
    K_frames: np.ndarray | None = None  # [T, V, 3, 3] per-frame intrinsics (framing that follows the head)
    mesh: np.ndarray | None = None  # [T, V, 68, 3] the face mesh's 68 points with depth (mediapipe), pixels
    has_mesh: np.ndarray | None = None  # [T, V] the frame's points came with the mesh
    fps: float = 0.0


def read_clip(group, frames: np.ndarray | None = None) -> ClipInput:
    from datasets.store import frame_intrinsics
    from model.fitting.monocular import mesh_landmarks

    def rows(name: str) -> np.ndarray:
        return group[name][:] if frames is None else group[name].get_orthogonal_selection((frames,))

    lmk = rows("lmk2d")
    frames = np.arange(lmk.shape[0]) if frames is None else frames
    K, E = group["cameras/K"][:].astype(np.float64), group["cameras/world_to_cam"][:].astype(np.float64)
    mesh = has = None
    if "lmk_full" in group and str(group["lmk_full"].attrs.get("format", "")).startswith("mediapipe"):
        full = rows("lmk_full")
        T, V = full.shape[:2]
        mesh, has = mesh_landmarks(full.reshape((T * V,) + full.shape[2:]))
        mesh, has = mesh.reshape(T, V, 68, 3), has.reshape(T, V)
    return ClipInput(lmk[..., :2].astype(np.float64), lmk[..., 2].astype(np.float64), K, E, frames,
                     frame_intrinsics(group, frames), mesh, has, float(group.attrs.get("fps") or 0.0))


def sample_frames(conf: np.ndarray, k: int, min_conf: float) -> np.ndarray:
    """Up to k frames spread evenly over the clip, among those seen with a face by the most views."""
    views = (conf.mean(-1) >= min_conf).sum(1)  # [T]
    candidates = np.flatnonzero(views >= max(1, views.max() // 2)) if views.max() > 0 else np.arange(len(views))
    if len(candidates) <= k:
        return candidates
    return candidates[np.round(np.linspace(0, len(candidates) - 1, k)).astype(int)]


def _pad_views(clips: list[ClipInput]) -> ClipInput:
    """Concatenate the frames of several clips; views padded to the largest rig (padding has no weight)."""
    V = max(c.uv.shape[1] for c in clips)
    uv, conf, K, E = [], [], [], []
    for c in clips:
        T, v = c.uv.shape[:2]
        pad = V - v
        uv.append(np.pad(c.uv, ((0, 0), (0, pad), (0, 0), (0, 0))))
        conf.append(np.pad(c.conf, ((0, 0), (0, pad), (0, 0))))
        Kc = np.concatenate([c.K, np.repeat(c.K[:1], pad, 0)]) if pad else c.K
        Ec = np.concatenate([c.E, np.repeat(c.E[:1], pad, 0)]) if pad else c.E
        K.append(np.broadcast_to(Kc, (T,) + Kc.shape))
        E.append(np.broadcast_to(Ec, (T,) + Ec.shape))
    return ClipInput(np.concatenate(uv), np.concatenate(conf), np.concatenate(K), np.concatenate(E))


@dataclass
class ClipFit:
    pose: np.ndarray  # [T, 4, 4]
    scale: np.ndarray  # [T]
    lmk3d: np.ndarray  # [T, 68, 3]
    residual: np.ndarray  # [T, V]
    ok: np.ndarray  # [T]
    dropped: np.ndarray  # [T, V] views dropped as outliers
    whole: dict[str, np.ndarray]
    expression: np.ndarray | None = None  # [T, E]


@register
class FittingStage(Stage):
    name = "fitting"
    config_class = FittingConfig
    version = "1"
    requires = ("landmarks",)
    scope = "subject"

    @property
    def products(self) -> tuple[str, ...]:  # type: ignore[override]
        base = ("fit/pose", "fit/scale", "fit/lmk3d", "fit/residual", "fit/ok")
        return base if self.config.backend == "triangulate" else base + ("fit/expression",)

    def check(self) -> None:
        if self.config.backend != "triangulate":
            self.model()

    def model(self):
        """The morphable model, loaded once per stage object (check, prepare of every clip, the task)."""
        if getattr(self, "_model", None) is None:
            self._model = self._load_model()
        return self._model

    def _load_model(self):
        from model.morphable import load_morphable_model

        cfg = self.config
        return load_morphable_model(cfg.model_kind, cfg.model_path, landmarks_path=cfg.landmarks_path,
                                    n_id=cfg.n_id or None, n_exp=cfg.n_exp or None, device=cfg.device)

    def tracking_model(self, n_shape: int, n_expression: int):
        """FLAME with the coefficient counts of a released tracking (loaded once per count)."""
        from model.morphable import load_morphable_model

        cache = self.__dict__.setdefault("_tracking_models", {})
        if (n_shape, n_expression) not in cache:
            cfg = self.config
            cache[n_shape, n_expression] = load_morphable_model(
                "flame", cfg.model_path, landmarks_path=cfg.landmarks_path, n_id=n_shape, n_exp=n_expression)
        return cache[n_shape, n_expression]

    def plan_work(self, store: Store, key: str, keys: list[str]) -> tuple[str, ...]:
        subject = clip_subject(key)
        return tuple(sorted(k for k in keys if clip_subject(k) == subject))

    def clip_identity(self, work) -> tuple[str, ...] | None:
        return work  # the subject's clips: a new one changes what the subject shares

    def prepare(self, store: Store, layout: ClipLayout, work) -> None:
        group = store.clip(layout.key)
        fit = group.require_group("fit")
        T, V, B = layout.n_frames, len(layout.views), layout.block_frames
        sizes = {"T": T, "V": V}
        attrs = {"backend": self.config.backend,
                 "convention": "world = scale * R @ x + t with [R t] = pose; x in the head frame (triangulate: "
                               "metres of the template, x to the subject's left, y up, z out of the face) or "
                               "model units (model backends)"}
        # arrays of another backend go; this backend's stay when they fit (finished blocks keep their data)
        if self.config.backend == "triangulate":
            wanted = ("fit/reference",)
        elif self.config.backend == "released":
            wanted = ("fit/expression", "fit/identity")
            if "tracking" in group and "expression" in group["tracking"]:
                X, S = group["tracking/expression"].shape[1], group["tracking/shape"].shape[0]
            else:  # no tracking: the run says so per frame
                X, S = 100, 300
            sizes.update(E=X + 3, I=S)
            attrs["model"] = {**self.model().describe(), "n_id": S, "n_exp": X + 3,
                              "source": "released FLAME tracking"}
        else:
            model = self.model()
            sizes.update(E=model.n_exp, I=model.n_id)
            wanted = ("fit/expression", "fit/identity")
            attrs["model"] = model.describe()
        for name in ("fit/expression", "fit/identity", "fit/reference"):
            if name not in wanted and name.split("/")[1] in fit:
                del fit[name.split("/")[1]]
        for name in ("fit/pose", "fit/scale", "fit/lmk3d", "fit/residual", "fit/ok", *wanted):
            ensure_store_array(store, group, name, sizes, B)
        fit.attrs.update(attrs)

    # ------------------------------------------------------------------ worker side
    def run(self, ctx: SegmentContext) -> Iterator[BlockOutput]:
        cfg, layout = self.config, ctx.layout
        siblings = ctx.work or (layout.key,)
        if cfg.backend != "triangulate":
            import torch

            torch.set_num_threads(max(1, ctx.threads))
        clip = read_clip(ctx.group)
        samples = []
        for key in siblings:
            g = ctx.store.clip(key)
            conf = g["lmk2d"][..., 2]
            samples.append(read_clip(g, sample_frames(conf, cfg.identity_frames, cfg.min_confidence)))
        if cfg.backend == "released":
            result, problem = self._fit_released(ctx.group, clip)
        else:
            result, problem = (self._fit_triangulate(clip, samples) if cfg.backend == "triangulate" else
                               self._fit_model(clip, samples)), ""
        from model.fitting.triangulate import face_size_px

        size = face_size_px(clip.uv, clip.conf, cfg.min_confidence)  # [T, V] for the ledger's thresholds
        for block in ctx.blocks:
            t0, t1 = layout.frames(block)
            frames = {"fit/pose": result.pose[t0:t1], "fit/scale": result.scale[t0:t1],
                      "fit/lmk3d": result.lmk3d[t0:t1], "fit/residual": result.residual[t0:t1],
                      "fit/ok": result.ok[t0:t1]}
            if result.expression is not None:
                frames["fit/expression"] = result.expression[t0:t1]
            frames = {k: v.astype(np.float32) if v.dtype != bool else v for k, v in frames.items()}
            items = self._ledger(layout, block, clip, result, size, problem)
            yield BlockOutput(block, frames, items, result.whole)

    def _ledger(self, layout: ClipLayout, block: int, clip: ClipInput, result: ClipFit, size: np.ndarray,
                problem: str = "") -> list[LedgerItem]:
        cfg = self.config
        items = []
        t0, t1 = layout.frames(block)
        for t in range(t0, t1):
            frame = layout.frame_ids[t] if layout.frame_ids else t
            if not result.ok[t] and problem:
                items.append(LedgerItem(self.name, layout.key, problem, frame=frame, block=block))
                continue
            if not result.ok[t]:
                n = int((clip.conf[t].mean(-1) >= cfg.min_confidence).sum())
                items.append(LedgerItem(self.name, layout.key, f"not fitted: a face in {n} view(s), "
                                        f"at least {cfg.min_views} needed", frame=frame, block=block))
                continue
            for v, serial in enumerate(layout.views):
                r = result.residual[t, v]
                limit = cfg.max_residual * size[t, v]
                if result.dropped[t, v] or (np.isfinite(r) and r > limit):
                    items.append(LedgerItem(
                        self.name, layout.key, f"landmarks disagree with the fit: median residual {r:.1f} px "
                        f"(threshold {limit:.1f} px){'; view dropped' if result.dropped[t, v] else ''}",
                        frame=frame, view=serial, block=block))
        return items

    def _fit_triangulate(self, clip: ClipInput, samples: list[ClipInput]) -> ClipFit:
        from model.fitting.landmark_pose import reference_poses, reference_shape
        from model.fitting.template import IBUG68_TEMPLATE
        from model.fitting.triangulate import triangulate

        cfg = self.config
        T, V = clip.uv.shape[:2]
        tri_args = {"min_conf": cfg.min_confidence, "robust": cfg.robust, "outlier_view": cfg.outlier_view}
        if V == 1:
            return self._fit_monocular(clip, samples)
        # the subject's reference from the sampled frames of all its clips
        pts, valid = [], []
        for s in samples:
            if s.uv.shape[1] >= 2:
                tri_s = triangulate(s.uv, s.conf, s.K, s.E, **tri_args)
                pts.append(tri_s.points)
                valid.append(tri_s.valid)
        reference = reference_shape(np.concatenate(pts), np.concatenate(valid), IBUG68_TEMPLATE) if pts \
            else IBUG68_TEMPLATE
        tri = triangulate(clip.uv, clip.conf, clip.K, clip.E, **tri_args)
        poses = reference_poses(tri.points, tri.valid, reference)
        seen = (clip.conf.mean(-1) >= cfg.min_confidence).sum(1)
        ok = poses.ok & (seen >= cfg.min_views)
        lmk3d = np.where(tri.valid[..., None], tri.points, poses.posed_reference())
        lmk3d = np.where(ok[:, None, None], lmk3d, 0.0)
        return ClipFit(to_matrix(poses.rotation, poses.translation), poses.scale, lmk3d,
                       tri.view_residual, ok, tri.outlier_views, {"fit/reference": reference.astype(np.float32)})

    def _fit_released(self, group, clip: ClipInput) -> tuple[ClipFit, str]:
        """The release's FLAME tracking of this clip as the fit (frames without a row: not fitted)."""
        from model.fitting.released_flame import tracking_to_world
        from model.fitting.triangulate import view_residuals

        T, V = clip.uv.shape[:2]
        if "tracking" not in group or "ok" not in group["tracking"]:
            E = group["fit/expression"].shape[1]
            empty = ClipFit(np.tile(np.eye(4), (T, 1, 1)), np.ones(T), np.zeros((T, 68, 3)), np.full((T, V), np.nan),
                            np.zeros(T, bool), np.zeros((T, V), bool), {}, np.zeros((T, E)))
            return empty, "not fitted: the release has no FLAME tracking of this clip (--fit released)"
        arrays = {k: group[f"tracking/{k}"][...] for k in
                  ("rotation", "translation", "jaw", "neck", "eyes", "expression", "shape", "scale", "ok")}
        model = self.tracking_model(arrays["shape"].shape[0], arrays["expression"].shape[1])
        fit = tracking_to_world(model, arrays)
        ok = arrays["ok"].astype(bool)
        K_views = clip.K_frames if clip.K_frames is not None else clip.K
        _, residual = view_residuals(fit.lmk3d, clip.uv, clip.conf >= self.config.min_confidence, K_views, clip.E)
        return ClipFit(fit.pose, fit.scale, np.where(ok[:, None, None], fit.lmk3d, 0.0),
                       np.where(ok[:, None], residual, np.nan), ok, np.zeros((T, V), bool),
                       {"fit/identity": fit.identity.astype(np.float32)}, fit.expression), \
            "not fitted: the released tracking has no row for this frame"

    def _fit_monocular(self, clip: ClipInput, samples: list[ClipInput]) -> ClipFit:
        """One view: the mesh method (with expression, smoothed), or the rigid template posed by PnP."""
        from model.fitting.landmark_pose import template_poses
        from model.fitting.monocular import fit_monocular, subject_reference
        from model.fitting.template import IBUG68_TEMPLATE
        from model.fitting.triangulate import view_residuals

        cfg = self.config
        T = len(clip.uv)
        K = clip.K_frames[:, 0] if clip.K_frames is not None else clip.K[0]
        if cfg.monocular == "template" or clip.mesh is None:
            poses = template_poses(clip.uv[:, 0], clip.conf[:, 0], K, clip.E[0], IBUG68_TEMPLATE,
                                   min_conf=cfg.min_confidence, robust=cfg.robust)
            R, t, scale, lmk3d, ok, reference = (poses.rotation, poses.translation, poses.scale,
                                                 poses.posed_reference(), poses.ok, IBUG68_TEMPLATE)
        else:
            # the subject's reference shape from the mesh frames sampled over its clips
            pts = [s.mesh[:, 0][s.has_mesh[:, 0]] for s in samples if s.mesh is not None]
            valid = [(s.conf[:, 0] >= cfg.min_confidence)[s.has_mesh[:, 0]] for s in samples if s.mesh is not None]
            reference = subject_reference(np.concatenate(pts), np.concatenate(valid), IBUG68_TEMPLATE) \
                if pts and sum(len(p) for p in pts) else IBUG68_TEMPLATE
            fit = fit_monocular(clip.uv[:, 0], clip.conf[:, 0], clip.mesh[:, 0], clip.has_mesh[:, 0], K, clip.E[0],
                                reference, min_conf=cfg.min_confidence, robust=cfg.robust,
                                smooth_pose=cfg.smooth_pose * clip.fps,
                                smooth_expression=cfg.smooth_expression * clip.fps)
            R, t, scale, lmk3d, ok = fit.rotation, fit.translation, fit.scale, fit.world_landmarks(), fit.ok
        K_views = clip.K_frames if clip.K_frames is not None else clip.K
        _, residual = view_residuals(lmk3d, clip.uv, clip.conf >= cfg.min_confidence, K_views, clip.E)
        return ClipFit(to_matrix(R, t), scale, lmk3d, residual, ok, np.zeros((T, 1), bool),
                       {"fit/reference": np.asarray(reference, np.float32)})

    def _fit_model(self, clip: ClipInput, samples: list[ClipInput]) -> ClipFit:
        from model.fitting.model_fit import fit_model

        cfg = self.config
        model = self.model()
        settings = cfg.settings()
        T, V = clip.uv.shape[:2]
        pooled = _pad_views(samples)
        subject = fit_model(model, pooled.uv, pooled.conf, pooled.K, pooled.E, settings)
        fit = fit_model(model, clip.uv, clip.conf, clip.K, clip.E, settings, identity=subject.identity,
                        scale=subject.scale, fit_scale=False)
        seen = (clip.conf.mean(-1) >= cfg.min_confidence).sum(1)
        ok = fit.ok & (seen >= min(cfg.min_views, V))
        return ClipFit(to_matrix(fit.rotation, fit.translation), np.full(T, fit.scale), fit.landmarks,
                       fit.residual, ok, fit.outlier_views, {"fit/identity": subject.identity.astype(np.float32)},
                       expression=fit.expression)

