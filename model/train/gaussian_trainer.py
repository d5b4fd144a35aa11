"""The stage-2 trainer: the Gaussian parametric head model, started from a stage-1 checkpoint.

    trainer = GaussianTrainer(TrainConfig(shards=..., out=..., init="runs/guiding/checkpoint.pt"), preset("tiny"))
    trainer.fit()

Batches are single images (stage-2 samples). `init` names the stage-1 checkpoint: with `init="stage1"` in the
Gaussian config its mean mesh, features and networks start the model; with `init="template"` only its
architecture is kept (the paper's ablation: points on the template, zero features, untrained networks).
"""

from __future__ import annotations

import torch

from datasets.config import as_dict, override, validate
from model.gaussian import init as gaussian_init
from model.gaussian.config import GaussianConfig
from model.gaussian.losses import GaussianLossTerms, gaussian_loss
from model.gaussian.model import GaussianModel
from model.guiding.canonical import CanonicalFrame
from model.guiding.config import GuidingConfig
from model.guiding.model import GuidingModel
from model.nets.vgg import PerceptualLoss
from model.train import checkpoint
from model.train.config import TrainConfig
from model.train.data import as_views, mean_head_landmarks, prepare_batch
from model.train.run_log import image_grid
from model.train.trainer_base import Trainer

STAGE = "gaussian"
NEW_TENSORS = {"f_att", *gaussian_init.POINT_TENSORS}  # what stage 1 does not have


class GaussianTrainer(Trainer):
    STAGE = STAGE
    SAMPLE = "stage2"

    def __init__(self, train: TrainConfig, config: GaussianConfig, log: bool = True):
        validate(config)
        self.gaussian_config = config
        super().__init__(train, log)
        resume = self.resume
        if resume is not None:
            self.config = guiding_config_from(resume["guiding_config"])
            self.source = resume["init"]
        else:
            stage1 = load_stage1(train.init, train.preset)
            self.config = guiding_config_from(stage1["identity"]["model_config"])
            self.source = {"path": train.init, "step": int(stage1["step"]), "preset": stage1["preset"],
                           "strategy": config.init}
        self._open_data(views=1, batch_size=config.batch_size)
        torch.manual_seed(train.seed)
        if resume is not None:
            self._check_compatible(resume)
            frame = CanonicalFrame.from_state(resume["canonical"])
            points = {k: resume["model"][k] for k in gaussian_init.POINT_TENSORS}
            self.model = self._build(frame, points, torch.zeros_like(resume["model"]["landmarks"]))
        else:
            self._check_stage1_data(stage1)
            self.model = self._from_stage1(stage1, config)
        self.model.to(self.device)
        self.perceptual = PerceptualLoss(config.vgg_weights or None).to(self.device)
        self.optimizer = torch.optim.Adam(self._param_groups())
        if resume is not None:
            self._restore(resume)
        self._ready()

    # --------------------------------------------------------------------------------------- set-up
    def _build(self, frame: CanonicalFrame, points: dict, landmarks: torch.Tensor) -> GaussianModel:
        return GaussianModel(self.config, self.gaussian_config, frame, points, landmarks, len(self.subjects),
                             len(self.frames))

    def _check_stage1_data(self, stage1: dict) -> None:
        theirs = stage1["identity"]
        if list(theirs["subjects"]) != list(self.subjects) or int(theirs["frames"]) != len(self.frames):
            raise checkpoint.CheckpointError(
                f"{self.train_config.init} was trained on other subjects or frames "
                f"({len(theirs['subjects'])} subjects, "
                f"{theirs['frames']} frames; this shard set has {len(self.subjects)} and {len(self.frames)}): "
                "stage 2 needs the shard set stage 1 was trained on")

    def _from_stage1(self, stage1: dict, config: GaussianConfig) -> GaussianModel:
        frame = CanonicalFrame.from_state(stage1["canonical"])
        n_id, n_frames = len(self.subjects), len(self.frames)
        if config.init == "stage1":
            guiding = GuidingModel(self.config, frame, torch.zeros(68, 3), n_id, n_frames, initialise=False)
            guiding.load_state_dict(stage1["model"])
            points = gaussian_init.from_guiding(guiding, config)
        else:  # the ablation: the starting template and untrained networks of the same architecture
            mean = mean_head_landmarks(self.dataset.reader)
            frame = CanonicalFrame.from_landmarks(mean)
            p0 = torch.tensor(frame.to_canonical(mean), dtype=torch.float32)
            guiding = GuidingModel(self.config, frame, p0, n_id, n_frames, initialise=True)
            points = gaussian_init.from_template(guiding, config)
        model = self._build(frame, points, guiding.landmarks.detach())
        inherited = {k: v for k, v in guiding.state_dict().items() if not k.startswith("mean_shape.")}
        missing, unexpected = model.load_state_dict(inherited, strict=False)
        assert not unexpected and all(k.split(".")[0] in NEW_TENSORS for k in missing), (missing, unexpected)
        return model

    def _param_groups(self) -> list[dict]:
        m, c = self.model, self.gaussian_config
        named = [
            ([m.id_codes], c.lr_codes, "identity codes"),
            ([m.landmarks, m.landmark_features], c.lr_landmarks, "P0"),
            ([m.positions], c.lr_positions, "X0"), ([m.features], c.lr_features, "Gamma0"),
            ([m.scales], c.lr_scales, "S0"), ([m.rotations], c.lr_rotations, "Q0"),
            ([m.opacities], c.lr_opacities, "A0"),
            (list(m.pose_refine.parameters()), c.lr_pose, "head poses")]
        if self.config.motion == "codes":
            named.append(([m.exp_codes], c.lr_exp_codes, "expression codes"))
        taken = {id(p) for params, _, _ in named for p in params}
        networks = [p for p in m.parameters() if id(p) not in taken]
        return [{"params": params, "lr": lr, "name": name} for params, lr, name in named] + [
            {"params": networks, "lr": c.lr_networks, "name": "networks"}]

    def identity(self) -> dict:
        return {**super().identity(), "model_config": as_dict(self.config),
                "gaussian_config": as_dict(self.gaussian_config)}

    def checkpoint_extras(self) -> dict:
        return {"guiding_config": as_dict(self.config), "gaussian_config": as_dict(self.gaussian_config),
                "init": self.source}

    # --------------------------------------------------------------------------------------- the loop
    def prepare(self, batch: dict[str, torch.Tensor]) -> tuple[object, object]:
        return prepare_batch(as_views(batch), self.config, self.frames, self.device)

    def loss(self, out, targets) -> GaussianLossTerms:
        return gaussian_loss(self.gaussian_config, out, targets.rgb, targets.coarse_rgb, targets.lmk3d,
                             self.perceptual)

    def preview(self, out, targets) -> None:
        """Up to 4 images of the batch: ground truth, coarse (first 3 channels), fine, alpha."""
        n, size = min(4, out.fine.shape[0]), self.config.output_resolution
        rows = [targets.rgb[:n], out.coarse[:n], out.fine[:n], out.alpha[:n, None]]
        rows = [torch.nn.functional.interpolate(r.detach().float(), size=(size, size), mode="nearest") for r in rows]
        self.log.grid("train/gt_coarse_fine_alpha", image_grid(rows), self.step)


def guiding_config_from(values: dict) -> GuidingConfig:
    """The stage-1 model config stored in a checkpoint (lists back to tuples)."""
    return override(GuidingConfig(), values)


def load_stage1(path: str, preset: str) -> dict:
    """A stage-1 checkpoint that stage 2 with `preset` can start from, or a CheckpointError saying why not."""
    if not path:
        raise checkpoint.CheckpointError("stage 2 starts from a stage-1 checkpoint: give --init RUN/checkpoint.pt "
                                         "(python cli.py train SHARDS --stage guiding makes one)")
    stage1 = checkpoint.load(path, "guiding")
    if stage1.get("preset") != preset:
        raise checkpoint.CheckpointError(
            f"{path} is a stage-1 checkpoint of preset {stage1.get('preset')!r}; stage 2 with preset {preset!r} "
            f"starts from stage 1 of the same preset (train stage 1 with --preset {preset}, or pick "
            f"--preset {stage1.get('preset')} here)")
    return stage1
