"""Fitting a morphable model to the 2D landmarks of calibrated views, batched over frames.

Parameters: identity coefficients and scale shared by all frames, expression coefficients and a pose
(rotation increment, translation) per frame. Loss: a robust (Cauchy) reprojection error normalised by
each view's face size and weighted by the detector's confidence, plus L2 priors on the coefficients
and optional temporal smoothness. Two phases, each with an iteration cap and a convergence tolerance:
rigid (pose and scale, mean face), then everything. Views whose landmarks disagree with the fit as a
whole after the rigid phase get no weight in the second (and are reported).

Works on CPU and CUDA (`device`); every frame's problem is solved in the same tensors, so a clip costs
little more than one frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from model.fitting.geometry import robust_similarity
from model.fitting.landmark_pose import RIGID_WEIGHTS, template_poses
from model.fitting.template import head_size
from model.fitting.triangulate import face_size_px, triangulate
from model.morphable.flame import axis_angle_to_matrix


@dataclass
class FitSettings:
    robust: float = 0.02  # Cauchy scale of the reprojection error, fraction of the view's face size
    outlier_view: float = 0.06  # a view whose median residual exceeds this fraction of its face size is dropped
    min_confidence: float = 0.1  # detections below this confidence carry no weight
    rigid_iters: int = 300  # iteration cap of the rigid phase
    full_iters: int = 500  # iteration cap of the full phase
    tol: float = 1e-4  # converged: the loss improved by less than this fraction over 20 iterations at the smallest step
    lr: float = 0.02  # Adam step of pose (radians, head sizes) and coefficients (prior std units)
    w_id: float = 1e-3  # prior weight of the identity coefficients
    w_exp: float = 1e-3  # prior weight of the expression coefficients (over their prior std)
    temporal: float = 0.0  # weight of the smoothness of expression and pose between consecutive frames
    device: str = "cpu"


@dataclass
class ModelFit:
    identity: np.ndarray  # [n_id]
    expression: np.ndarray  # [T, n_exp]
    scale: float  # model units -> world
    rotation: np.ndarray  # [T, 3, 3] model -> world
    translation: np.ndarray  # [T, 3]
    landmarks: np.ndarray  # [T, 68, 3] world
    residual: np.ndarray  # [T, V] pixels: median reprojection error of each view's landmarks (NaN: no face)
    outlier_views: np.ndarray  # [T, V] bool: dropped after the rigid phase
    ok: np.ndarray  # [T] bool: the frame had enough landmarks to be fitted
    iterations: dict = field(default_factory=dict)  # phase -> iterations run


def _per_frame_cameras(K: np.ndarray, E: np.ndarray, T: int) -> tuple[np.ndarray, np.ndarray]:
    K = np.array(K, np.float64)
    E = np.array(E, np.float64)
    if K.ndim == 3:
        K = np.broadcast_to(K, (T,) + K.shape)
    if E.ndim == 3:
        E = np.broadcast_to(E, (T,) + E.shape)
    return np.ascontiguousarray(K), np.ascontiguousarray(E)


def initial_poses(mean_lmk: np.ndarray, uv: np.ndarray, conf: np.ndarray, K: np.ndarray, E: np.ndarray,
                  settings: FitSettings, scale: float | None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Automatic start (no hand tuning): per frame a robust similarity from the model's mean landmarks
    [68, 3] to the triangulated landmarks (several views), or a perspective-n-point pose of the mean
    landmarks at the given (or a typical adult) scale (one view). -> (s [T], R [T,3,3], t [T,3], ok [T])."""
    T, V = uv.shape[:2]
    if V >= 2 and np.allclose(K, K[:1]) and np.allclose(E, E[:1]):
        tri = triangulate(uv, conf, K[0], E[0], min_conf=settings.min_confidence, robust=settings.robust,
                          outlier_view=settings.outlier_view)
        ok = tri.valid.sum(1) >= 20
        s = np.ones(T)
        R = np.tile(np.eye(3), (T, 1, 1))
        t = np.zeros((T, 3))
        if ok.any():
            pts = np.where(tri.valid[..., None], tri.points, 0.0)
            s_o, R_o, t_o, _ = robust_similarity(np.broadcast_to(mean_lmk, (int(ok.sum()), 68, 3)), pts[ok],
                                                 (tri.valid * RIGID_WEIGHTS)[ok])
            s[ok], R[ok], t[ok] = s_o, R_o, t_o
            if scale is not None:
                s[:] = scale
            # frames without enough points start from the nearest fitted frame
            idx = np.flatnonzero(ok)
            near = idx[np.abs(np.arange(T)[:, None] - idx[None]).argmin(1)]
            s, R, t = s[near], R[near], t[near]
        return s, R, t, ok, tri.outlier_views
    # one view per frame (or cameras that change between frames): pose the scaled mean landmarks
    if scale is None:
        from model.fitting.template import IBUG68_TEMPLATE

        scale = head_size(IBUG68_TEMPLATE) / head_size(mean_lmk)
    s = np.full(T, scale)
    R = np.tile(np.eye(3), (T, 1, 1))
    t = np.zeros((T, 3))
    ok = np.zeros(T, bool)
    best = np.argmax((conf >= settings.min_confidence).sum(-1), 1)  # per frame the view with most landmarks
    for v in np.unique(best):
        frames = np.flatnonzero(best == v)
        f0 = frames[0]
        same = np.allclose(K[frames, v], K[f0, v]) and np.allclose(E[frames, v], E[f0, v])
        # one batched solve per camera; frame by frame only when the camera changes between frames
        for group in [frames] if same else np.split(frames, len(frames)):
            p = template_poses(uv[group, v], conf[group, v], K[group[0], v], E[group[0], v], mean_lmk * scale,
                               min_conf=settings.min_confidence, robust=settings.robust)
            R[group], t[group], ok[group] = p.rotation, p.translation, p.ok
    return s, R, t, ok, np.zeros((T, V), bool)


class _LandmarkProblem:
    """The tensors of one fit (cameras, detections, weights, the start poses) and the parameters it
    optimises; what the closures of a single function used to share."""

    def __init__(self, model, uv: np.ndarray, conf: np.ndarray, K: np.ndarray, E: np.ndarray, settings: FitSettings,
                 identity: np.ndarray | None, scale: float | None):
        self.model, self.settings = model, settings
        self.dev = dev = torch.device(settings.device)
        self.T = T = uv.shape[0]
        self.fixed_identity = identity is not None
        with torch.no_grad():
            id0 = torch.zeros(1, model.n_id, device=dev) if identity is None else \
                torch.as_tensor(identity, dtype=torch.float32, device=dev)[None]
            mean_lmk = model.landmarks(id0, torch.zeros(1, model.n_exp, device=dev))[0].double().cpu().numpy()
        s0, R0, t0, self.ok, self.dropped = initial_poses(mean_lmk, uv, conf, K, E, settings, scale)
        self.s_init = float(np.median(s0[self.ok])) if self.ok.any() else float(s0[0])
        self.unit = head_size(mean_lmk) * self.s_init  # head size in world units: the translation step unit

        f32 = {"dtype": torch.float32, "device": dev}
        self.K, self.E = torch.tensor(K, **f32), torch.tensor(E, **f32)  # copies: K and E may be read-only views
        self.uv = torch.as_tensor(uv, **f32)
        self.size = torch.as_tensor(np.maximum(face_size_px(uv, conf, settings.min_confidence), 1.0), **f32)  # [T, V]
        w = torch.as_tensor(np.where(conf >= settings.min_confidence, conf, 0.0), **f32)  # [T, V, 68]
        self.weights = w * torch.as_tensor(self.ok, **f32)[:, None, None] * \
            torch.as_tensor(~self.dropped, **f32)[..., None]
        self.R0, self.t0 = torch.as_tensor(R0, **f32), torch.as_tensor(t0, **f32)
        self.exp_scale = model.exp_scale.to(dev).float()
        # the parameters
        self.rot = torch.zeros(T, 3, requires_grad=True, **f32)
        self.trans = torch.zeros(T, 3, requires_grad=True, **f32)
        self.log_s = torch.zeros((), requires_grad=True, **f32)
        self.idc = id0.clone()[0].requires_grad_(identity is None)
        self.exp = torch.zeros(T, model.n_exp, requires_grad=True, **f32)

    def rotation(self) -> torch.Tensor:
        return axis_angle_to_matrix(self.rot) @ self.R0

    def translation(self) -> torch.Tensor:
        return self.t0 + self.unit * self.trans

    def world_landmarks(self, use_exp: bool) -> torch.Tensor:
        """[T, 68, 3] world."""
        exp = self.exp if use_exp else torch.zeros_like(self.exp)
        lm = self.model.landmarks(self.idc[None].expand(self.T, -1), exp)
        scale = self.s_init * torch.exp(self.log_s)
        return scale * (lm @ self.rotation().transpose(1, 2)) + self.translation()[:, None]

    def residuals(self, X: torch.Tensor) -> torch.Tensor:
        """X [T, 68, 3] world -> normalised residuals [T, V, 68, 2]."""
        cam = torch.einsum("tvij,tlj->tvli", self.E[..., :3, :3], X) + self.E[:, :, None, :3, 3]
        z = cam[..., 2:3].clamp_min(1e-6)
        pix = torch.einsum("tvij,tvlj->tvli", self.K[..., :2, :2], cam[..., :2] / z) + self.K[:, :, None, :2, 2]
        return (pix - self.uv) / self.size[..., None, None]

    def loss(self, use_exp: bool, weights: torch.Tensor) -> torch.Tensor:
        st, T = self.settings, self.T
        r2 = (self.residuals(self.world_landmarks(use_exp)) ** 2).sum(-1)  # [T, V, 68]
        data = (weights * torch.log1p(r2 / st.robust ** 2)).sum((1, 2)) / weights.sum((1, 2)).clamp_min(1e-6)  # [T]
        # summed over frames, so each frame's gradient (and Adam's step) is what it would be alone
        loss = data.sum()
        if use_exp:
            loss = loss + st.w_exp * ((self.exp / self.exp_scale) ** 2).sum()
        if not self.fixed_identity:
            loss = loss + T * st.w_id * (self.idc ** 2).sum()
        if st.temporal > 0 and T > 1:
            smooth = ((self.exp[1:] - self.exp[:-1]) / self.exp_scale).pow(2).sum(-1) if use_exp else 0
            motion = (self.rot[1:] - self.rot[:-1]).pow(2).sum(-1) + (self.trans[1:] - self.trans[:-1]).pow(2).sum(-1)
            loss = loss + st.temporal * (smooth + motion / 0.01 ** 2).sum()
        return loss

    def run_phase(self, params: list[torch.Tensor], iters: int, use_exp: bool, weights: torch.Tensor) -> int:
        """Adam until converged: whenever the loss improved by less than `tol` (relative) over 20
        iterations the step shrinks 3x; after 4 shrinks (or `iters`) the phase ends. tol <= 0: exactly
        `iters` iterations with the step decaying geometrically to 1% (a schedule independent of the
        data, e.g. to compare batched and per-frame fits)."""
        st = self.settings
        opt = torch.optim.Adam(params, lr=st.lr)
        history: list[float] = []
        since, shrinks = 0, 0
        for i in range(iters):
            if st.tol <= 0:
                for group in opt.param_groups:
                    group["lr"] = st.lr * 0.01 ** (i / max(iters - 1, 1))
            opt.zero_grad()
            loss = self.loss(use_exp, weights)
            loss.backward()
            opt.step()
            history.append(loss.item())
            since += 1
            if st.tol > 0 and since > 20 and history[-21] - history[-1] < st.tol * abs(history[-21]):
                shrinks += 1
                if shrinks > 4:
                    return i + 1
                for group in opt.param_groups:
                    group["lr"] /= 3.0
                since = 0
        return iters

    def disagreeing_views(self, weights: torch.Tensor, use_exp: bool) -> torch.Tensor:
        """[T, V] bool: views far above the threshold and far above the frame's other views."""
        with torch.no_grad():
            r = self.residuals(self.world_landmarks(use_exp)).norm(dim=-1)  # [T, V, 68]
            view_med = torch.nanmedian(torch.where(weights > 0, r, torch.full_like(r, float("nan"))), dim=-1).values
            typical = torch.nanmedian(view_med, dim=1, keepdim=True).values
            return (view_med > torch.clamp(3 * typical, min=self.settings.outlier_view)) & (weights.sum(-1) > 0)


def fit_model(model, uv: np.ndarray, conf: np.ndarray, K: np.ndarray, E: np.ndarray,
              settings: FitSettings | None = None, *, identity: np.ndarray | None = None,
              scale: float | None = None, fit_scale: bool | None = None) -> ModelFit:
    """Fit `model` (a MorphableModel: landmarks(id [B, n_id], exp [B, n_exp]) -> [B, 68, 3]) to landmarks.

    uv [T, V, 68, 2] pixels, conf [T, V, 68]; K [V, 3, 3] or [T, V, 3, 3]; E (world_to_cam) [V, 4, 4] or
    [T, V, 4, 4]. identity: given -> kept fixed (e.g. the subject's, fitted on other frames).
    scale: given -> the start (and, unless fit_scale, the value). fit_scale defaults to "several views"."""
    settings = settings or FitSettings()
    uv = np.asarray(uv, np.float64)
    conf = np.asarray(conf, np.float64)
    T, V = uv.shape[:2]
    K, E = _per_frame_cameras(K, E, T)
    if fit_scale is None:
        fit_scale = V >= 2 and scale is None
    p = _LandmarkProblem(model, uv, conf, K, E, settings, identity, scale)
    w = p.weights
    iterations = {}
    rigid = [p.rot, p.trans] + ([p.log_s] if fit_scale else [])
    iterations["rigid"] = p.run_phase(rigid, settings.rigid_iters, False, w)
    # the mean face explains every view alike up to identity and expression: a wrong detection stands out
    outliers = p.disagreeing_views(w, False) | torch.as_tensor(p.dropped, device=p.dev)
    full = rigid + [p.exp] + ([] if p.fixed_identity else [p.idc])
    iterations["full"] = p.run_phase(full, settings.full_iters, True, w * (~outliers)[..., None].float())
    outliers = outliers | p.disagreeing_views(w, True)  # the robust loss kept them from pulling; report them

    with torch.no_grad():
        X = p.world_landmarks(True)
        r_px = p.residuals(X).norm(dim=-1) * p.size[..., None]
        detected = torch.as_tensor(conf >= settings.min_confidence, device=p.dev)
        r_px = torch.where(detected, r_px, torch.full_like(r_px, float("nan")))
        residual = torch.nanmedian(r_px, dim=-1).values
        R = p.rotation().double().cpu().numpy()
        t = p.translation().double().cpu().numpy()
        s = p.s_init * float(torch.exp(p.log_s))
    return ModelFit(p.idc.detach().cpu().numpy().astype(np.float32), p.exp.detach().cpu().numpy().astype(np.float32),
                    s, R, t, X.double().cpu().numpy(), residual.cpu().numpy(), outliers.cpu().numpy(), p.ok,
                    iterations)
