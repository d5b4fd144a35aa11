"""`python cli.py train`: configs from preset, TOML and overrides; a progress bar; clear errors."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from datasets.config import apply_assignments, apply_tables, read_toml, update
from datasets.errors import ConfigError, UserError
from datasets.shards.reader import ShardCorruptError
from datasets.shards.storage import ShardMissingError
from model.gaussian import config as gaussian_config
from model.guiding import config as guiding_config
from model.train.config import TrainConfig

STAGES = {"guiding": guiding_config.preset, "gaussian": gaussian_config.preset}  # stage -> its presets


class TrainRunError(UserError, RuntimeError):
    """A training run that cannot start or continue, with the reason for the user."""


def build_configs(cli_values: dict, config_file: str | None, sets: list[str], storage_options: dict,
                  stage: str = "guiding") -> tuple[TrainConfig, object]:
    """-> (TrainConfig, the stage's model config: GuidingConfig or GaussianConfig), built the way every
    command builds its configs (datasets/config.py): defaults < preset < TOML file ([train], [model]) <
    command-line options < --set train.FIELD=VALUE / model.FIELD=VALUE (a bare FIELD=VALUE is a model field)."""
    doc = read_toml(config_file) if config_file else {}
    unknown = set(doc) - {"train", "model"}
    if unknown:
        raise ConfigError(f"{config_file}: unknown tables {sorted(unknown)} (it takes [train] and [model])")
    train = TrainConfig()
    apply_tables({"train": doc.get("train", {})}, {"train": train}, ["train"], config_file or "")
    update(train, cli_values, "train")
    if storage_options:
        update(train, {"storage_options": storage_options}, "train")
    train_sets = [s for s in sets if s.strip().startswith("train.")]
    apply_assignments(train_sets, {"train": train}, ["train", "model"])  # the preset may be chosen here
    model = STAGES[stage](train.preset)
    apply_tables({"model": doc.get("model", {})}, {"model": model}, ["model"], config_file or "")
    apply_assignments([s for s in sets if s not in train_sets], {"model": model}, ["train", "model"], default="model")
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
    trainer = trainer_class(train, model)  # bad data, checkpoints or weights raise UserErrors (cli.py)
    if not trainer.world.main:  # under torchrun one process speaks for the run
        console = Console(quiet=True)
    n_params = sum(p.numel() for p in trainer.model.parameters())
    if stage == "gaussian":
        source = trainer.source
        console.print(f"{trainer.model.n_points} Gaussians, initialised from {source['strategy']} "
                      f"({source['path']}, stage-1 step {source['step']})")
    if trainer.world.size > 1:
        console.print(f"{trainer.world.size} processes on {trainer.world.nodes} node(s), DistributedDataParallel: "
                      f"global batch {trainer.global_batch_size}, {trainer.batch_size} per process")
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
