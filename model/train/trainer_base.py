"""What both training stages share: the run directory, exact resume, the streamed data, the loop.

A run directory holds `checkpoint.pt` (everything to resume exactly), `tensorboard/` and `previews/`.
Starting again in a directory with a checkpoint resumes it; the same model and data options are required
(they are part of the checkpoint). A stage subclass builds `model` and `optimizer`, calls `_ready()` last,
and defines `prepare`, `loss` and `preview`.

Under torchrun (model/train/distributed.py) every process streams its share of each global batch, the
model is wrapped in DistributedDataParallel (gradients averaged), the logged losses are the ranks' mean,
and only rank 0 logs, previews, evaluates and writes checkpoints. A checkpoint resumes under any number
of processes: the global batch is the same, and the loader goes on as datasets/streaming.py documents
(exactly where it stopped with the same world size).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable

import torch
from torch.profiler import record_function

from datasets.errors import ConfigError
from datasets.streaming import ShardDataset, StreamingLoader
from model.guiding.motion import project_norm_
from model.train import checkpoint, distributed
from model.train.config import TrainConfig
from model.train.data import check_stage1
from model.train.evaluation import evaluate_model, evaluation_data, heldout_views
from model.train.frames import FrameTable
from model.train.run_log import RunLog


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch sees no CUDA device")
    return torch.device(name)


class Trainer:
    STAGE = ""
    SAMPLE = "stage1"  # the shard sample kind a training batch is made of
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer

    def __init__(self, train: TrainConfig, log: bool = True):
        self.train_config = train
        if train.threads:
            torch.set_num_threads(train.threads)
        if train.deterministic:
            torch.use_deterministic_algorithms(True)
        world = distributed.from_environment()
        self.device = pick_device(distributed.device_for(train.device, world))
        if train.amp and self.device.type != "cuda":
            raise ConfigError("--set train.amp=true (bf16 mixed precision) needs a CUDA device")
        self.world = distributed.start(self.device)
        self.ddp: torch.nn.Module | None = None  # the model as DistributedDataParallel wraps it (several ranks)
        self.path = os.path.join(train.out, "checkpoint.pt")
        self.resume = checkpoint.load(self.path, self.STAGE) if os.path.exists(self.path) else None
        self.step = 0
        self.log: RunLog | None = None  # opened by `_ready` once the run is known to start (rank 0)
        self._want_log = log
        self.history: list[dict[str, float]] = []
        self.on_eval: Callable[[int, dict[str, float]], None] | None = None

    def _ready(self) -> None:
        """Called last by a subclass's __init__, once model and optimizer exist: wraps the model for several
        ranks, and opens the log (rank 0; a run that fails to start leaves no log directory behind)."""
        if self.world.size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if self._want_log and self.world.main:
            self.log = RunLog(self.train_config.out)

    def _open_data(self, views: int, batch_size: int) -> None:
        """`batch_size`: the global batch of a step (each rank streams its share of it)."""
        self.global_batch_size = batch_size
        self.batch_size = distributed.per_rank_batch(batch_size, self.world)
        self.dataset = self._dataset("train", sample=self.SAMPLE, views=views, shuffle=True, repeat=True)
        manifest = self.dataset.manifest
        check_stage1(manifest, self.train_config.shards)
        self.subjects = manifest.split("train")["subjects"]
        self.frames = FrameTable(manifest.doc["clips"])
        self.loader = StreamingLoader(self.dataset, num_workers=self.train_config.num_workers)

    def _dataset(self, use: str, sample: str, views: int, shuffle: bool, repeat: bool,
                 synth_ratio: float | None = None) -> ShardDataset:
        t = self.train_config
        return ShardDataset(t.shards, split="train", sample=sample, use=use, views=views,
                            synth_ratio=t.synth_ratio if synth_ratio is None else synth_ratio, seed=t.seed,
                            shuffle=shuffle, batch_size=self.batch_size, drop_last=use == "train",
                            repeat=repeat, decode_threads=t.decode_threads, cache_dir=t.cache_dir or None,
                            storage_options=t.storage_options or None, rank=self.world.rank,
                            world_size=self.world.size, nodes=self.world.nodes)

    # ------------------------------------------------------------------------------------ run identity
    def identity(self) -> dict:
        """What a checkpoint must match to be resumed by this trainer (subclasses add their configs)."""
        return {"shards": self.dataset.manifest.identity(), "subjects": self.subjects, "frames": len(self.frames),
                "seed": self.train_config.seed, "synth_ratio": self.train_config.synth_ratio}

    def _check_compatible(self, resume: dict) -> None:
        mine, theirs = self.identity(), resume["identity"]
        diff = [k for k in mine if plain(mine[k]) != plain(theirs.get(k))]
        if diff:
            raise checkpoint.CheckpointError(
                f"{self.path} was made with other {', '.join(diff)}; use another --out directory, or the same "
                "shard set and options to resume")

    def _restore(self, resume: dict) -> None:
        self.model.load_state_dict(resume["model"])
        self.optimizer.load_state_dict(resume["optimizer"])
        self.loader.load_state_dict(resume["loader"])
        checkpoint.set_rng_state(resume["rng"])
        self.step = int(resume["step"])

    def checkpoint_extras(self) -> dict:
        """Stage-specific entries of the checkpoint (what rebuilds the model without the shard set)."""
        return {}

    def save_checkpoint(self) -> None:
        """Rank 0 writes (every rank holds the same model, optimiser and loader position); the others wait."""
        if self.world.main:
            self._write_checkpoint()
        distributed.barrier()

    def _write_checkpoint(self) -> None:
        checkpoint.save(self.path, {
            "stage": self.STAGE, "preset": self.train_config.preset, "step": self.step,
            "identity": self.identity(), "canonical": self.model.frame.state(),
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "loader": self.loader.state_dict(), "rng": checkpoint.rng_state(), "world_size": self.world.size,
            # storage options may hold credentials: they stay out of the file
            "train_config": {**dataclasses.asdict(self.train_config), "storage_options": {}},
            **self.checkpoint_extras()})

    # --------------------------------------------------------------------------------------- the loop
    def prepare(self, batch: dict[str, torch.Tensor]) -> tuple[object, object]:
        """A streamed batch -> (model inputs, targets) on the device."""
        raise NotImplementedError

    def loss(self, out, targets):
        """-> loss terms with `.total` and `.scalars()`."""
        raise NotImplementedError

    def preview(self, out, targets) -> None:
        raise NotImplementedError

    def train_step(self, batch: dict[str, torch.Tensor]) -> tuple[object, object, object]:
        """One optimiser step -> (loss terms, model outputs, targets)."""
        self.model.train()
        with record_function(f"{self.STAGE}/batch to tensors"):
            inputs, targets = self.prepare(batch)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.train_config.amp):
            out = (self.ddp or self.model)(inputs)
        with record_function(f"{self.STAGE}/losses"):
            terms = self.loss(out, targets)
        with record_function(f"{self.STAGE}/backward + Adam"):
            self.optimizer.zero_grad(set_to_none=True)
            terms.total.backward()
            self.optimizer.step()
        project_norm_(self.model.id_codes)  # identity (and v1 expression) codes stay in the unit ball
        if self.model.config.motion == "codes":
            project_norm_(self.model.exp_codes)
        self.step += 1
        return terms, out, targets

    def evaluate(self, frames: int | None = None) -> dict[str, float]:
        """PSNR and SSIM of the fine images and IoU of the masks on held-out views (training views when the
        shard set holds none out), over the first `frames` frames of a fixed order (evaluation.py)."""
        use, views = heldout_views(self.dataset.manifest)
        t = self.train_config
        data = evaluation_data(t.shards, views, use, self.batch_size, t.storage_options, t.cache_dir or None, t.seed)
        return evaluate_model(self.model, self.model.config, data, self.frames, self.device,
                              frames or t.eval_frames, heldout=use == "heldout")

    def fit(self, on_step: Callable[[int, dict[str, float]], None] | None = None,
            on_eval: Callable[[int, dict[str, float]], None] | None = None) -> dict:
        """Train to `steps` (or until `minutes` pass), evaluating and checkpointing on schedule (a new run is
        evaluated before its first step too). -> the last evaluation."""
        t = self.train_config
        self.on_eval = on_eval
        start, metrics = time.monotonic(), {}
        if self.step == 0 and t.eval_every:
            self._evaluate_and_log()
        batches = iter(self.loader)
        while self.step < t.steps:
            # every rank stops at the same step: rank 0's clock decides
            if t.minutes and distributed.broadcast_object(time.monotonic() - start > t.minutes * 60):
                break
            tick = time.monotonic()
            terms, out, targets = self.train_step(next(batches))
            scalars = distributed.mean_scalars(terms.scalars())  # the global batch's terms
            if not all(math.isfinite(v) for v in scalars.values()):
                raise FloatingPointError(f"step {self.step}: non-finite loss {scalars}")
            scalars["seconds_per_step"] = time.monotonic() - tick
            self.history.append({"step": self.step, **scalars})
            if self.log and (self.step % t.log_every == 0 or self.step == 1):
                self.log.scalars("loss", {k: v for k, v in scalars.items() if k != "seconds_per_step"}, self.step)
                self.log.scalars("time", {"seconds_per_step": scalars["seconds_per_step"]}, self.step)
            if self.log and t.image_every and self.step % t.image_every == 0:
                self.preview(out, targets)
            if on_step:
                on_step(self.step, scalars)
            if t.eval_every and self.step % t.eval_every == 0:
                metrics = self._evaluate_and_log()
            if t.checkpoint_every and self.step % t.checkpoint_every == 0:
                self.save_checkpoint()
        if not metrics or self.step % max(t.eval_every, 1):
            metrics = self._evaluate_and_log()
        self.save_checkpoint()
        if self.log:
            self.log.flush()
        return metrics

    def _evaluate_and_log(self) -> dict[str, float]:
        """Rank 0 evaluates, the others wait and get its metrics."""
        metrics = distributed.broadcast_object(self.evaluate() if self.world.main else None)
        if self.on_eval and self.world.main:
            self.on_eval(self.step, metrics)
        if self.log:
            self.log.scalars("eval", {k: metrics[k] for k in ("iou", "psnr", "ssim") if k in metrics}, self.step)
        return metrics

    def close(self) -> None:
        if self.log:
            self.log.close()
        distributed.stop()


def plain(value):
    """Tuples and lists compare equal after a checkpoint round trip."""
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value
