"""Fit an avatar to one camera of a store clip: GPHM fitting, then finetuning (GPHMv2 section 3.5).

    fit = AvatarFit(AvatarConfig(model="runs/gaussian", out="avatars/me"), frames)
    fit.run()          # resumes from out/fit_state.pt when it exists; writes out/avatar.pt

One frame per iteration (frame k of phase p is drawn from the seed, p and k alone, so a resumed fit draws
the same frames). Phase 1 optimises the identity code alone with L_fine + lambda_coarse L_coarse; phase 2
the identity-specific Gaussians (lr_gaussians), f_exp, Psi and f_dyn (lr_networks) with the eq. 19 loss.
Few-shot (automatic below `few_shot_below` training frames): f_exp and Psi stay frozen and phase 2 runs
`few_shot_iters_per_image` iterations per image (capped by finetune_iters). Ablations: prior=False (the
GPHM rebuilt from the template with untrained networks, the same schedule), finetune_motion=False (f_exp
and Psi frozen), use_dyn=False (no f_dyn).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
import torch

from datasets.config import as_dict
from datasets.errors import ConfigError
from model.avatar.frames import AvatarFrames
from model.avatar.model import Avatar, check_encoders, render_gphm
from model.gaussian import init as gaussian_init
from model.gaussian.losses import gaussian_loss
from model.gaussian.model import GaussianModel
from model.guiding.canonical import CanonicalFrame
from model.guiding.model import GuidingModel
from model.load import load_trained
from model.nets.vgg import PerceptualLoss
from model.train import checkpoint
from model.train.run_log import RunLog, image_grid

AVATAR_FILE, STATE_FILE = "avatar.pt", "fit_state.pt"


@dataclass
class AvatarConfig:
    model: str = ""  # the trained GPHM: a stage-2 run directory or checkpoint
    out: str = ""  # the avatar directory
    fit_iters: int = 100  # phase 1 (GPHM fitting): identity code only
    finetune_iters: int = 2000  # phase 2
    lr_code: float = 1e-3
    lr_gaussians: float = 1e-3  # X_id, C_id, S_id, Q_id, A_id
    lr_networks: float = 3e-4  # f_exp, Psi, f_dyn
    dyn_width: int = 32  # f_dyn's hidden width (two hidden layers)
    few_shot: str = "auto"  # auto | on | off
    few_shot_below: int = 16  # auto: few-shot when fewer training frames than this
    few_shot_iters_per_image: int = 150
    prior: bool = True  # False: the ablation without the prior (template start, untrained networks)
    finetune_motion: bool = True  # False: f_exp and Psi stay as the GPHM trained them
    use_dyn: bool = True  # False: no f_dyn
    seed: int = 0
    checkpoint_every: int = 100  # iterations between fit_state.pt saves (0: only at the phase ends)
    image_every: int = 200  # iterations between previews (0: none)
    device: str = "cpu"
    threads: int = 0

    def __post_init__(self) -> None:
        if self.few_shot not in ("auto", "on", "off"):
            raise ConfigError(f"few_shot must be auto, on or off, got {self.few_shot!r}")
        if self.fit_iters < 0 or self.finetune_iters < 0:
            raise ConfigError("fit_iters and finetune_iters must not be negative")
        if self.dyn_width < 1 or self.few_shot_iters_per_image < 1:
            raise ConfigError("dyn_width and few_shot_iters_per_image must be at least 1")


def template_gphm(trained_gphm: GaussianModel, frames: AvatarFrames) -> GaussianModel:
    """The no-prior ablation: a GPHM of the same architecture with its points on the template (fitted to
    this clip's mean landmarks) and untrained networks, as stage 2's `template` initialisation."""
    from model.fitting.geometry import to_head_frame

    a = frames.arrays
    mean = to_head_frame(a["lmk3d"][frames.train], a["pose"][frames.train], a["scale"][frames.train]).mean(0)
    frame = CanonicalFrame.from_landmarks(mean)
    p0 = torch.tensor(frame.to_canonical(mean), dtype=torch.float32)
    guiding = GuidingModel(trained_gphm.config, frame, p0, 1, 1, initialise=True)
    points = gaussian_init.from_template(guiding, trained_gphm.gaussian_config)
    model = GaussianModel(trained_gphm.config, trained_gphm.gaussian_config, frame, points, guiding.landmarks.detach(),
                          1, 1)
    inherited = {k: v for k, v in guiding.state_dict().items() if not k.startswith("mean_shape.")}
    model.load_state_dict(inherited, strict=False)
    return model


class AvatarFit:
    def __init__(self, config: AvatarConfig, frames: AvatarFrames, log: bool = True, progress=None):
        if not config.out:
            raise ConfigError("an avatar fit needs an output directory (--out AVATAR)")
        self.config, self.frames, self.progress = config, frames, progress
        if config.threads:
            torch.set_num_threads(config.threads)
        self.device = torch.device(config.device)
        trained = load_trained(config.model, self.device)
        if trained.stage != "gaussian":
            raise ConfigError(f"{trained.path} is a stage-1 ({trained.stage}) checkpoint: an avatar starts from a "
                              "trained Gaussian model (python cli.py train SHARDS --stage gaussian)")
        check_encoders(trained.config, "an avatar")
        self.trained = trained
        torch.manual_seed(config.seed)
        self.gphm = trained.model if config.prior else template_gphm(trained.model, frames).to(self.device)
        self.gphm.eval().requires_grad_(False)
        self.n_train = len(frames.train)
        self.few_shot = config.few_shot == "on" or (config.few_shot == "auto" and self.n_train < config.few_shot_below)
        self.finetune_iters = (min(config.finetune_iters, config.few_shot_iters_per_image * self.n_train)
                               if self.few_shot else config.finetune_iters)
        self.perceptual = PerceptualLoss(trained.model.gaussian_config.vgg_weights or None).to(self.device)
        self.phase, self.step = "fit", 0
        self.z_id = torch.nn.Parameter(torch.randn(1, trained.config.id_dim, device=self.device) * 0.01)
        self.avatar: Avatar | None = None
        self.optimizer = torch.optim.Adam([self.z_id], lr=config.lr_code)
        self.history: list[dict[str, float]] = []
        os.makedirs(config.out, exist_ok=True)
        self.state_path = os.path.join(config.out, STATE_FILE)
        if os.path.exists(self.state_path):
            self._restore(checkpoint.load(self.state_path, "avatar-fit"))
        self.log = RunLog(config.out) if log else None

    # ------------------------------------------------------------------------------------------ phases
    def _start_finetune(self) -> None:
        c = self.config
        self.avatar = Avatar.from_gphm(self.gphm, self.z_id.detach(), c.dyn_width, c.use_dyn)
        frozen = self.few_shot or not c.finetune_motion
        for name in ("E_exp", "E_nf", "f_nf") + (("f_exp", "refine") if frozen else ()):
            getattr(self.avatar, name).requires_grad_(False)
        groups = [{"params": [getattr(self.avatar, n) for n in ("X_id", "C_id", "S_id", "Q_id", "A_id")],
                   "lr": c.lr_gaussians, "name": "gaussians"}]
        networks = [p for n in ("f_exp", "refine", "f_dyn") for p in getattr(self.avatar, n).parameters()
                    if p.requires_grad]
        if networks:
            groups.append({"params": networks, "lr": c.lr_networks, "name": "networks"})
        self.optimizer = torch.optim.Adam(groups)
        self.phase, self.step = "finetune", 0

    def _frame(self) -> int:
        """The training frame of this phase's step, from the seed alone (exact resume)."""
        rng = np.random.default_rng([self.config.seed, 0 if self.phase == "fit" else 1, self.step])
        return int(self.frames.train[rng.integers(len(self.frames.train))])

    def _iteration(self) -> dict[str, float]:
        inputs, targets = self.frames.batch([self._frame()], self.gphm.config, self.device)
        if self.phase == "fit":
            out = render_gphm(self.gphm, self.z_id, inputs)
            fine = (out.fine - targets.rgb).abs().mean()
            coarse = (out.coarse - targets.coarse_rgb).abs().mean()
            total = fine + self.gphm.gaussian_config.w_coarse * coarse
            terms = {"fine": float(fine.detach()), "coarse": float(coarse.detach()), "total": float(total.detach())}
        else:
            out = self.avatar(inputs)
            loss = gaussian_loss(self.gphm.gaussian_config, out, targets.rgb, targets.coarse_rgb, targets.lmk3d,
                                 self.perceptual)
            total, terms = loss.total, loss.scalars()
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        if self.log and self.config.image_every and self.step % self.config.image_every == 0:
            rows = [targets.rgb, out.fine.detach().clamp(0, 1),
                    torch.nn.functional.interpolate(out.coarse.detach().clamp(0, 1), size=targets.rgb.shape[-2:])]
            self.log.grid(f"{self.phase}/gt_fine_coarse", image_grid(rows), self.step)
        return terms

    def run(self) -> str:
        """Fit (or finish a fit) and write the avatar file; returns its path."""
        c = self.config
        todo = {"fit": c.fit_iters, "finetune": self.finetune_iters}
        started = time.perf_counter()
        while True:
            n = todo[self.phase]
            while self.step < n:
                terms = self._iteration()
                self.history.append({"phase": 0.0 if self.phase == "fit" else 1.0, **terms})
                self.step += 1
                if self.log:
                    self.log.scalars(f"avatar_{self.phase}", terms, self.step)
                if self.progress:
                    self.progress(self.phase, self.step, n, terms)
                if c.checkpoint_every and self.step % c.checkpoint_every == 0 and self.step < n:
                    self._save_state()
            if self.phase == "finetune":
                break
            self._start_finetune()
            self._save_state()
        self._save_state()
        path = self.save_avatar(time.perf_counter() - started)
        if self.log:
            self.log.close()
        return path

    # ------------------------------------------------------------------------------------- persistence
    def _save_state(self) -> None:
        checkpoint.save(self.state_path, {
            "stage": "avatar-fit", "phase": self.phase, "step": self.step, "z_id": self.z_id.detach().cpu(),
            "avatar": self.avatar.state_dict() if self.avatar is not None else None,
            "optimizer": self.optimizer.state_dict(), "config": as_dict(self.config),
            "frames": self.frames.describe(), "history": self.history})

    def _restore(self, state: dict) -> None:
        mine = {k: v for k, v in as_dict(self.config).items() if k not in ("checkpoint_every", "image_every",
                                                                         "device", "threads")}
        theirs = {k: state["config"].get(k) for k in mine}
        if theirs != mine or state["frames"] != self.frames.describe():
            diff = [k for k in mine if mine[k] != theirs[k]] or ["frames"]
            raise checkpoint.CheckpointError(f"{self.state_path} is a fit with other {', '.join(diff)}; use another "
                                             "--out directory, or the same options to resume")
        with torch.no_grad():
            self.z_id.copy_(state["z_id"].to(self.device))
        if state["phase"] == "finetune":
            self._start_finetune()
            self.avatar.load_state_dict(state["avatar"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.phase, self.step, self.history = state["phase"], int(state["step"]), list(state["history"])

    def save_avatar(self, seconds: float) -> str:
        """The avatar file: what driving needs (configs, canonical frame, the avatar's tensors), loadable with
        torch.load(weights_only=True)."""
        a = self.avatar
        path = os.path.join(self.config.out, AVATAR_FILE)
        checkpoint.save(path, {
            "stage": "avatar", "guiding_config": as_dict(a.config), "gaussian_config": as_dict(a.gaussian_config),
            "canonical": a.frame.state(), "state": {k: v.detach().cpu() for k, v in a.state_dict().items()},
            "dyn_width": a.dyn_width, "use_dyn": a.use_dyn, "config": as_dict(self.config),
            "frames": self.frames.describe(), "few_shot": self.few_shot,
            "iterations": {"fit": self.config.fit_iters, "finetune": self.finetune_iters},
            "source": {"model": self.trained.path, "step": self.trained.step, "prior": self.config.prior},
            "seconds": round(seconds, 1), "history": self.history})
        return path


def load_avatar(path: str, device: torch.device | str = "cpu") -> tuple[Avatar, dict]:
    """(the avatar in eval mode, the file's payload) from an avatar directory or file."""
    from datasets.config import override
    from model.gaussian.config import GaussianConfig
    from model.guiding.config import GuidingConfig

    path = os.path.join(path, AVATAR_FILE) if os.path.isdir(path) else path
    payload = checkpoint.load(path, "avatar")
    state = payload["state"]
    tensors = {k: state[k] for k in ("X_id", "C_id", "S_id", "Q_id", "A_id", "H_id", "gamma", "weights", "P_id",
                                     "H_lmk")}
    avatar = Avatar(override(GuidingConfig(), payload["guiding_config"]),
                    override(GaussianConfig(), payload["gaussian_config"]),
                    CanonicalFrame.from_state(payload["canonical"]), tensors, payload["dyn_width"], payload["use_dyn"])
    avatar.load_state_dict(state)
    return avatar.to(device).eval(), payload


__all__ = ["AvatarConfig", "AvatarFit", "load_avatar"]
