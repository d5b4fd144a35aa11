"""Train the GaussianHead baseline on one camera of a store clip: the same usable frames, held-out frames,
cameras, mattes and ground truth (composited on black) as `avatar fit` (model/avatar/frames.py).

    fit = GaussianHeadFit(BaselineConfig(out="avatars/me-gaussianhead"), preset("paper"), frames)
    fit.run()     # resumes from out/gaussianhead_state.pt when it exists; writes out/gaussianhead.pt

One frame per iteration (batch size 1, as the paper), drawn from the seed and the step alone, so a resumed
run draws the same frames; the densification's split samples are drawn from the seed and the step too.
Loss (eq. 8): 0.8 L1 + 0.01 VGG (with user weights) + 0.2 D-SSIM. Optimisers: Adam (eps 1e-15, as 3DGS) for
everything but the derivation quaternions, Riemannian Adam for those; schedules from the config (config.py).
`max_seconds` stops a run early at that wall-clock time (the equal-time comparison), the schedules still
spanning `iterations`.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import numpy as np
import torch

from datasets.cameras import scale_intrinsics
from datasets.config import as_dict, override
from datasets.errors import ConfigError
from model.avatar.frames import AvatarFrames
from model.fitting.geometry import to_head_frame
from model.gaussianhead import densify
from model.gaussianhead.config import GaussianHeadConfig
from model.gaussianhead.expression import (
    frame_expressions,
    landmark_expression,
    store_expression,
)
from model.gaussianhead.model import (
    FrameInput,
    GaussianHead,
    head_volume,
    initial_gaussians,
)
from model.gaussianhead.riemannian_adam import RiemannianAdam
from model.images import resize_images
from model.metrics import ssim
from model.nets.vgg import PerceptualLoss
from model.train import checkpoint
from model.train.run_log import RunLog, image_grid

BASELINE_FILE, STATE_FILE = "gaussianhead.pt", "gaussianhead_state.pt"
STAGE, STATE_STAGE = "gaussianhead", "gaussianhead-fit"


@dataclass
class BaselineConfig:
    out: str = ""  # the baseline's directory
    seed: int = 0
    max_seconds: float = 0.0  # stop at this wall-clock time (0: run all iterations)
    checkpoint_every: int = 1000  # iterations between state saves (0: only at the end)
    image_every: int = 0  # iterations between previews (0: none)
    device: str = "cpu"
    threads: int = 0


RUNTIME = ("max_seconds", "checkpoint_every", "image_every", "device", "threads")  # may differ on resume


def lr_at(start: float, end: float, step: int, total: int, kind: str) -> float:
    """The learning rate at `step` of `total`: linear, or log-linear ("exp") from start to end."""
    t = min(max(step / max(total, 1), 0.0), 1.0)
    if kind == "exp" and start > 0 and end > 0:
        return math.exp(math.log(start) + t * (math.log(end) - math.log(start)))
    return start + t * (end - start)


class FrameData:
    """Per usable frame of an AvatarFrames: the model's input and the target at any resolution."""

    def __init__(self, frames: AvatarFrames, expressions: np.ndarray, device: torch.device):
        self.frames, self.expressions, self.device = frames, np.asarray(expressions, np.float32), device

    def get(self, row: int, resolution: int) -> tuple[FrameInput, torch.Tensor]:
        a, dev = self.frames.arrays, self.device
        rgb = torch.from_numpy(np.ascontiguousarray(a["rgb"][row])).to(dev).permute(2, 0, 1)[None].float() / 255
        alpha = torch.from_numpy(np.ascontiguousarray(a["alpha"][row])).to(dev)[None, None].float() / 255
        H = rgb.shape[-1]
        gt = resize_images(rgb * alpha, resolution)[0]  # as model/train/data.py's prepare_batch
        K = scale_intrinsics(torch.from_numpy(a["K"][row]).float(), resolution / H).to(dev)
        frame = FrameInput(pose=torch.from_numpy(a["pose"][row]).float().to(dev),
                           scale=torch.tensor(float(a["scale"][row]), device=dev), K=K,
                           world_to_cam=torch.from_numpy(a["world_to_cam"][row]).float().to(dev),
                           expression=torch.from_numpy(self.expressions[row]).to(dev), resolution=resolution)
        return frame, gt


def scene_geometry(frames: AvatarFrames, config: GaussianHeadConfig) -> tuple[np.ndarray, np.ndarray, float]:
    """(ellipsoid centre [3], radii [3], scene extent) in the head frame from the training frames: the
    landmark ellipsoid (model.head_volume) and 1.1 x the mean camera-to-head-centre distance (3DGS's
    cameras_extent for a head anchored at the origin and a camera moving around it)."""
    a, rows = frames.arrays, frames.train
    lmk = to_head_frame(a["lmk3d"][rows], a["pose"][rows], a["scale"][rows]).mean(0)
    centre, radii = head_volume(lmk, config.init_margin)
    E, P, s = a["world_to_cam"][rows].astype(np.float64), a["pose"][rows].astype(np.float64), a["scale"][rows]
    cam_world = -np.einsum("tji,tj->ti", E[:, :3, :3], E[:, :3, 3])
    cam_head = np.einsum("tji,tj->ti", P[:, :3, :3], cam_world - P[:, :3, 3]) / s[:, None]
    extent = 1.1 * float(np.linalg.norm(cam_head - centre, axis=1).mean())
    return centre, radii, extent


class GaussianHeadFit:
    def __init__(self, run: BaselineConfig, config: GaussianHeadConfig, frames: AvatarFrames, log: bool = True,
                 progress=None):
        if not run.out:
            raise ConfigError("the baseline needs an output directory (--out DIR)")
        self.run_config, self.config, self.frames, self.progress = run, config, frames, progress
        if run.threads:
            torch.set_num_threads(run.threads)
        self.device = torch.device(run.device)
        if len(frames.train) == 0:
            raise ConfigError("the clip has no training frame")
        expressions, self.expression = frame_expressions(frames.arrays, frames.frames, frames.train, frames.store,
                                                         frames.clip, config.expression_dim)
        self.data = FrameData(frames, expressions, self.device)
        os.makedirs(run.out, exist_ok=True)
        self.state_path = os.path.join(run.out, STATE_FILE)
        self.step, self.seconds, self.history = 0, 0.0, []
        self.densified: list[dict] = []
        state = checkpoint.load(self.state_path, STATE_STAGE) if os.path.exists(self.state_path) else None
        if state is not None:
            self._check(state)
        centre, radii, extent = scene_geometry(frames, config)
        gen = torch.Generator().manual_seed(run.seed)
        points = initial_gaussians(centre, radii, config.n_gaussians, gen) if state is None else \
            {k: state["model"][k] for k in ("xyz", "rotation", "log_scale", "derivation", "opacity_logit", "sh_dc",
                                             "sh_rest") if k in state["model"]}
        torch.manual_seed(run.seed)
        self.model = GaussianHead(config, points, torch.from_numpy(centre), float(radii.max()), extent,
                                  expressions.shape[1], gen).to(self.device)
        self.perceptual = PerceptualLoss(config.vgg_weights or None).to(self.device) if config.w_vgg else None
        self._build_optimizers()
        if state is not None:
            self.model.load_state_dict(state["model"])
            self.adam.load_state_dict(state["adam"])
            if self.radam is not None:
                self.radam.load_state_dict(state["radam"])
            self.step, self.seconds = int(state["step"]), float(state["seconds"])
            self.history, self.densified = list(state["history"]), list(state["densified"])
        self.log = RunLog(run.out) if log else None

    # -------------------------------------------------------------------------------------- optimisers
    def _build_optimizers(self) -> None:
        m, c = self.model, self.config
        groups = [("position", [m.xyz]), ("rotation", [m.rotation]), ("scale", [m.log_scale]),
                  ("deform", list(m.deform.parameters()))]
        if c.use_triplane:
            rest = [m.sh_rest_head] if m.sh_rest_head is not None else []
            groups += [("triplane", list(m.triplane.parameters())), ("opacity", list(m.opacity_net.parameters())),
                       ("sh_dc", list(m.colour_net.parameters()) + list(m.sh_dc_head.parameters())),
                       ("sh_rest", [p for h in rest for p in h.parameters()])]
        else:
            groups += [("opacity", [m.opacity_logit]), ("sh_dc", [m.sh_dc]), ("sh_rest", [m.sh_rest])]
        groups = [(n, ps) for n, ps in groups if ps]
        self.adam = torch.optim.Adam([{"params": ps, "name": n, "lr": 0.0} for n, ps in groups], eps=1e-15)
        self.radam = RiemannianAdam([{"params": [m.derivation], "name": "derivation", "lr": 0.0}]) \
            if m.derivation is not None else None
        self._set_lrs()

    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.adam] + ([self.radam] if self.radam is not None else [])

    def learning_rates(self, step: int) -> dict[str, float]:
        c, T = self.config, self.config.iterations
        return {"position": lr_at(*c.lr_position, step, T, "lin"), "rotation": c.lr_rotation, "scale": c.lr_scale,
                "deform": lr_at(*c.lr_deform, step, T, "exp"), "triplane": lr_at(*c.lr_triplane, step, T, "lin"),
                "opacity": c.lr_opacity, "sh_dc": c.lr_sh_dc, "sh_rest": c.lr_sh_rest,
                "derivation": lr_at(*c.lr_derivation, step, T, "lin")}

    def _set_lrs(self) -> None:
        lrs = self.learning_rates(self.step)
        for opt in self.optimizers():
            for group in opt.param_groups:
                group["lr"] = lrs[group["name"]]

    # ---------------------------------------------------------------------------------------- training
    def _frame(self) -> int:
        rng = np.random.default_rng([self.run_config.seed, 2, self.step])
        return int(self.frames.train[rng.integers(len(self.frames.train))])

    def loss(self, image: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.config
        l1 = (image - gt).abs().mean()
        dssim = 1 - ssim(image[None], gt[None])[0]
        total = c.w_rgb * l1 + c.w_dssim * dssim
        terms = {"l1": float(l1.detach()), "dssim": float(dssim.detach())}
        if self.perceptual is not None and self.perceptual.enabled:
            vgg = self.perceptual(image[None], gt[None])
            total = total + c.w_vgg * vgg
            terms["vgg"] = float(vgg.detach())
        terms["total"] = float(total.detach())
        return total, terms

    def _iteration(self) -> dict[str, float]:
        c = self.config
        self._set_lrs()
        frame, gt = self.data.get(self._frame(), c.resolution)
        out = self.model(frame)
        out.means_world.retain_grad()
        total, terms = self.loss(out.image, gt)
        for opt in self.optimizers():
            opt.zero_grad(set_to_none=True)
        total.backward()
        if self.step < c.densify_until:
            densify.accumulate(self.model, out.means_world, frame.K, frame.world_to_cam, c.resolution)
        for opt in self.optimizers():
            opt.step()
        done = self.step + 1
        if c.densify_from <= done <= c.densify_until and done % c.densify_every == 0:
            gen = torch.Generator().manual_seed(self.run_config.seed * 1_000_003 + done)
            counts = densify.densify_and_prune(self.model, self.optimizers(), gen)
            self.densified.append({"step": done, **counts})
        terms["gaussians"] = float(self.model.n_points)
        if self.log and self.run_config.image_every and self.step % self.run_config.image_every == 0:
            self.log.grid("gaussianhead/gt_render", image_grid([gt[None], out.image.detach()[None].clamp(0, 1)]),
                          self.step)
        return terms

    def run(self) -> str:
        r, c = self.run_config, self.config
        started = time.perf_counter() - self.seconds
        while self.step < c.iterations:
            if r.max_seconds and time.perf_counter() - started >= r.max_seconds:
                break
            terms = self._iteration()
            self.history.append(terms)
            self.step += 1
            self.seconds = time.perf_counter() - started
            if self.log:
                self.log.scalars("gaussianhead", terms, self.step)
            if self.progress:
                self.progress("train", self.step, c.iterations, terms)
            if r.checkpoint_every and self.step % r.checkpoint_every == 0 and self.step < c.iterations:
                self._save_state()
        self._save_state()
        path = self.save()
        if self.log:
            self.log.close()
        return path

    # ------------------------------------------------------------------------------------- persistence
    def _check(self, state: dict) -> None:
        mine = {"config": as_dict(self.config),
                "run": {k: v for k, v in as_dict(self.run_config).items() if k not in RUNTIME}}
        theirs = {"config": state["config"], "run": {k: state["run"].get(k) for k in mine["run"]}}
        if mine != theirs or state["frames"] != self.frames.describe():
            diff = [k for k in mine["config"] if mine["config"][k] != theirs["config"].get(k)]
            diff += [k for k in mine["run"] if mine["run"][k] != theirs["run"][k]]
            raise checkpoint.CheckpointError(f"{self.state_path} is a run with other {', '.join(diff) or 'frames'}; "
                                             "use another --out directory, or the same options to resume")

    def _save_state(self) -> None:
        checkpoint.save(self.state_path, {
            "stage": STATE_STAGE, "step": self.step, "seconds": self.seconds, "config": as_dict(self.config),
            "run": as_dict(self.run_config), "frames": self.frames.describe(),
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "adam": self.adam.state_dict(), "radam": self.radam.state_dict() if self.radam is not None else None,
            "history": self.history, "densified": self.densified})

    def save(self) -> str:
        """The baseline file (what evaluation needs), loadable with torch.load(weights_only=True)."""
        path = os.path.join(self.run_config.out, BASELINE_FILE)
        expression = {k: (torch.from_numpy(np.asarray(v)) if k != "source" else v) for k, v in self.expression.items()}
        checkpoint.save(path, {
            "stage": STAGE, "config": as_dict(self.config), "run": as_dict(self.run_config),
            "state": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "expression_dim": self.model.expression_dim, "expression": expression, "frames": self.frames.describe(),
            "iterations": {"train": self.step, "planned": self.config.iterations}, "seconds": round(self.seconds, 1),
            "gaussians": self.model.n_points, "history": self.history, "densified": self.densified})
        return path


def is_baseline(path: str) -> bool:
    """Whether `path` (a directory or file) is a GaussianHead baseline rather than a GPHM avatar."""
    return os.path.basename(path) == BASELINE_FILE or (os.path.isdir(path) and
                                                        os.path.exists(os.path.join(path, BASELINE_FILE)))


def load_baseline(path: str, device: torch.device | str = "cpu") -> tuple[GaussianHead, dict]:
    """(the model in eval mode, the file's payload) from a baseline directory or file."""
    path = os.path.join(path, BASELINE_FILE) if os.path.isdir(path) else path
    payload = checkpoint.load(path, STAGE)
    config = override(GaussianHeadConfig(), payload["config"])
    state = payload["state"]
    points = {k: state[k] for k in ("xyz", "rotation", "log_scale", "derivation", "opacity_logit", "sh_dc", "sh_rest")
              if k in state}
    model = GaussianHead(config, points, state["centre"], float(state["radius"]), float(state["extent"]),
                         int(payload["expression_dim"]))
    model.load_state_dict(state)
    return model.to(device).eval(), payload


def baseline_expressions(payload: dict, frames: AvatarFrames) -> np.ndarray:
    """[T, E] the expression of every usable frame, by the mapping the baseline was trained with."""
    e = payload["expression"]
    if e["source"] == "fit/expression":
        fitted = store_expression(frames.store, frames.clip, frames.frames)
        if fitted is None:
            raise ConfigError(f"{frames.store} clip {frames.clip} no longer has fit/expression")
        return fitted
    mapping = {k: np.asarray(v) for k, v in e.items() if k != "source"}
    a = frames.arrays
    return landmark_expression(mapping, a["lmk3d"], a["pose"], a["scale"])


__all__ = ["BASELINE_FILE", "BaselineConfig", "FrameData", "GaussianHeadFit", "baseline_expressions", "is_baseline",
           "load_baseline", "lr_at", "scene_geometry"]
