"""`python cli.py train`: configs from preset, TOML and overrides; a progress bar; clear errors."""

from __future__ import annotations

import tomllib

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from datasets.shards.manifest import ManifestError
from datasets.shards.reader import ShardCorruptError
from datasets.shards.storage import ShardMissingError
from model.gaussian import config as gaussian_config
from model.guiding import config as guiding_config
from model.guiding.config import override
from model.nets.vgg import VGGWeightsError
from model.train.checkpoint import CheckpointError
from model.train.config import TrainConfig
from model.train.data import ShardSetError

STAGES = {"guiding": guiding_config.preset, "gaussian": gaussian_config.preset}  # stage -> its presets


class TrainRunError(RuntimeError):
    """A training run that cannot start or continue, with the reason for the user."""


def build_configs(cli_values: dict, config_file: str | None, sets: list[str], storage_options: dict,
                  stage: str = "guiding") -> tuple[TrainConfig, object]:
    """-> (TrainConfig, the stage's model config: GuidingConfig or GaussianConfig).
    Precedence: dataclass defaults < preset < TOML file < command line."""
    doc = {}
    if config_file:
        try:
            with open(config_file, "rb") as f:
                doc = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise TrainRunError(f"cannot read {config_file}: {exc}") from None
        unknown = set(doc) - {"train", "model"}
        if unknown:
            raise TrainRunError(f"{config_file}: unknown tables {sorted(unknown)} (use [train] and [model])")
    try:
        train = override(TrainConfig(), {**doc.get("train", {}), **cli_values})
        if storage_options:
            train = override(train, {"storage_options": storage_options})
        model = override(STAGES[stage](train.preset), doc.get("model", {}))
        pairs = {}
        for item in sets:
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"--set takes FIELD=VALUE, got {item!r}")
            pairs[key.strip()] = value.strip()
        model = override(model, pairs)
        model.validate()
    except ValueError as exc:
        raise TrainRunError(str(exc)) from None
    if not train.shards:
        raise TrainRunError("no shard set given")
    return train, model


def run_training(stage: str, cli_values: dict, config_file: str | None, sets: list[str], storage_options: dict,
                 console: Console) -> dict:
    if stage not in STAGES:
        raise TrainRunError(f"unknown stage {stage!r}; available: {', '.join(STAGES)}")
    train, model = build_configs(cli_values, config_file, sets, storage_options, stage)
    if stage == "guiding":
        from model.train.guiding_trainer import GuidingTrainer as trainer_class
    else:
        from model.train.gaussian_trainer import GaussianTrainer as trainer_class
    try:
        trainer = trainer_class(train, model)
    except (ShardSetError, CheckpointError, ManifestError, ShardMissingError, ShardCorruptError, VGGWeightsError,
            FileNotFoundError) as exc:
        raise TrainRunError(str(exc)) from None
    n_params = sum(p.numel() for p in trainer.model.parameters())
    if stage == "gaussian":
        source = trainer.source
        console.print(f"{trainer.model.n_points} Gaussians, initialised from {source['strategy']} "
                      f"({source['path']}, stage-1 step {source['step']})")
    console.print(f"stage {stage}, preset {train.preset}: {n_params / 1e6:.2f} M parameters on {trainer.device}; "
                  f"{len(trainer.subjects)} subjects, {len(trainer.frames)} frames; "
                  f"{'resuming at step ' + str(trainer.step) if trainer.step else 'new run'} in {train.out}")
    if trainer.step >= train.steps:
        console.print(f"the run is already at step {trainer.step} of {train.steps}; raise --steps to continue")
    columns = (TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
               TextColumn("{task.fields[rate]} s/step"), TimeElapsedColumn(), TimeRemainingColumn())
    try:
        with Progress(*columns, console=console) as bar:
            task = bar.add_task("train", total=train.steps, completed=trainer.step, loss="-", rate="-")

            def on_step(step: int, scalars: dict[str, float]) -> None:
                bar.update(task, completed=step, loss=f"{scalars['total']:.4f}",
                           rate=f"{scalars['seconds_per_step']:.2f}")

            def on_eval(step: int, m: dict[str, float]) -> None:
                bar.console.print(f"step {step}: mask IoU {m['iou']:.3f}, PSNR {m['psnr']:.2f} dB, "
                                  f"SSIM {m['ssim']:.3f} "
                                  f"({int(m['views'])} {'held-out' if m['heldout'] else 'training'} views)")

            metrics = trainer.fit(on_step=on_step, on_eval=on_eval)
    except (ShardMissingError, ShardCorruptError) as exc:
        raise TrainRunError(f"{exc} (the last checkpoint is in {train.out})") from None
    finally:
        trainer.close()
    where = "held-out views" if metrics.get("heldout") else "training views (the shard set holds no view out)"
    console.print(f"step {trainer.step}: mask IoU {metrics['iou']:.3f}, PSNR {metrics['psnr']:.2f} dB, "
                  f"SSIM {metrics['ssim']:.3f} on "
                  f"{int(metrics['views'])} {where}; checkpoint {trainer.path}")
    return metrics
