"""The stage-1 trainer: streams a shard set into the guiding geometry model.

    trainer = GuidingTrainer(TrainConfig(shards=..., out=...), preset("tiny"))
    trainer.fit()          # a loop of train_step / evaluate / save_checkpoint, resumable

A run directory holds `checkpoint.pt` (everything to resume exactly), `tensorboard/` and `previews/`.
Starting again in a directory with a checkpoint resumes it; the same model and data options are
required (they are part of the checkpoint).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable

import torch
from torch.profiler import record_function

from datasets.streaming import ShardDataset, StreamingLoader
from model.guiding.canonical import CanonicalFrame
from model.guiding.config import GuidingConfig, as_dict
from model.guiding.losses import LossTerms, guiding_loss, iou, psnr
from model.guiding.model import GuidingModel
from model.guiding.motion import FrameTable, project_norm_
from model.train import checkpoint
from model.train.config import TrainConfig
from model.train.data import check_stage1, mean_head_landmarks, prepare_batch
from model.train.run_log import RunLog, image_grid

STAGE = "guiding"


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch sees no CUDA device")
    return torch.device(name)


class GuidingTrainer:
    def __init__(self, train: TrainConfig, model_config: GuidingConfig, log: bool = True):
        self.train_config, self.config = train, model_config
        model_config.validate()
        if train.threads:
            torch.set_num_threads(train.threads)
        if train.deterministic:
            torch.use_deterministic_algorithms(True)
        self.device = pick_device(train.device)
        self.path = os.path.join(train.out, "checkpoint.pt")
        resume = checkpoint.load(self.path, STAGE) if os.path.exists(self.path) else None

        self.dataset = self._dataset("train", views=model_config.views, shuffle=True, repeat=True)
        manifest = self.dataset.manifest
        check_stage1(manifest, train.shards)
        self.subjects = manifest.split("train")["subjects"]
        self.frames = FrameTable(manifest.doc["clips"])
        self.step = 0
        if resume is not None:
            self._check_compatible(resume, manifest)
            frame = CanonicalFrame.from_state(resume["canonical"])
            landmarks = torch.zeros(68, 3)
        else:
            mean = mean_head_landmarks(self.dataset.reader)
            frame = CanonicalFrame.from_landmarks(mean)
            landmarks = torch.tensor(frame.to_canonical(mean), dtype=torch.float32)  # P0: the mean, canonical
        torch.manual_seed(train.seed)
        self.model = GuidingModel(model_config, frame, landmarks, len(self.subjects), len(self.frames),
                                  initialise=resume is None).to(self.device)
        self.optimizer = torch.optim.Adam(self._param_groups())
        self.loader = StreamingLoader(self.dataset, num_workers=train.num_workers)
        if resume is not None:
            self._restore(resume)
        self.log = RunLog(train.out) if log else None
        self.history: list[dict[str, float]] = []
        self.on_eval: Callable[[int, dict[str, float]], None] | None = None

    # --------------------------------------------------------------------------------------- set-up
    def _dataset(self, use: str, views: int, shuffle: bool, repeat: bool, synth_ratio: float | None = None):
        t = self.train_config
        return ShardDataset(t.shards, split="train", sample="stage1", use=use, views=views,
                            synth_ratio=t.synth_ratio if synth_ratio is None else synth_ratio, seed=t.seed,
                            shuffle=shuffle, batch_size=self.config.batch_size, drop_last=use == "train",
                            repeat=repeat, decode_threads=t.decode_threads, cache_dir=t.cache_dir or None,
                            storage_options=t.storage_options or None)

    def _param_groups(self) -> list[dict]:
        m, c = self.model, self.config
        slow = {id(p) for p in m.pose_refine.parameters()}
        codes = {id(m.exp_codes)} if c.motion == "codes" else set()
        main = [p for p in m.parameters() if id(p) not in slow | codes]
        groups = [{"params": main, "lr": c.lr, "name": "networks, identity codes, P0"},
                  {"params": list(m.pose_refine.parameters()), "lr": c.lr_pose, "name": "head poses"}]
        if codes:
            groups.append({"params": [m.exp_codes], "lr": c.lr_exp_codes, "name": "expression codes"})
        return groups

    def _identity(self, manifest) -> dict:
        return {"shards": manifest.identity(), "subjects": self.subjects, "frames": len(self.frames),
                "model_config": as_dict(self.config), "seed": self.train_config.seed,
                "synth_ratio": self.train_config.synth_ratio}

    def _check_compatible(self, resume: dict, manifest) -> None:
        mine, theirs = self._identity(manifest), resume["identity"]
        diff = [k for k in mine if _plain(mine[k]) != _plain(theirs.get(k))]
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

    # --------------------------------------------------------------------------------------- the loop
    def train_step(self, batch: dict[str, torch.Tensor]) -> tuple[LossTerms, object, object]:
        self.model.train()
        with record_function("guiding/batch to tensors"):
            inputs, targets = prepare_batch(batch, self.config, self.frames, self.device)
        out = self.model(inputs)
        with record_function("guiding/losses"):
            terms = guiding_loss(self.config, out, targets.rgb, targets.alpha, targets.coarse_rgb, targets.lmk3d)
        with record_function("guiding/backward + Adam"):
            self.optimizer.zero_grad(set_to_none=True)
            terms.total.backward()
            self.optimizer.step()
        project_norm_(self.model.id_codes)
        if self.config.motion == "codes":
            project_norm_(self.model.exp_codes)
        self.step += 1
        return terms, out, targets

    @torch.no_grad()
    def evaluate(self, frames: int | None = None) -> dict[str, float]:
        """IoU of the rendered masks and PSNR of the fine images on held-out views (training views when the
        shard set holds none out), over the first `frames` frames of a fixed order."""
        self.model.eval()
        manifest = self.dataset.manifest
        heldout = manifest.split("train")["counts"]["heldout"]["rows"] > 0
        views = max(1, min(4, len(manifest.doc.get("holdout_views") or []) or self.config.views))
        data = self._dataset("heldout" if heldout else "train", views=views, shuffle=False, repeat=False,
                             synth_ratio=0.0)
        limit = frames or self.train_config.eval_frames
        ious, psnrs, seen = [], [], 0
        for batch in data:
            inputs, targets = prepare_batch(batch, self.config, self.frames, self.device)
            out = self.model(inputs)
            ious.append(iou(out.mask, targets.alpha > 0.5))
            psnrs.append(psnr(out.fine, targets.rgb))
            seen += batch["rgb"].shape[0]
            if seen >= limit:
                break
        return {"iou": float(torch.cat(ious).mean()), "psnr": float(torch.cat(psnrs).mean()),
                "views": float(sum(len(x) for x in ious)), "heldout": float(heldout)}

    def save_checkpoint(self) -> None:
        checkpoint.save(self.path, {
            "stage": STAGE, "preset": self.train_config.preset, "step": self.step,
            "identity": self._identity(self.dataset.manifest), "canonical": self.model.frame.state(),
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "loader": self.loader.state_dict(), "rng": checkpoint.rng_state(),
            # storage options may hold credentials: they stay out of the file
            "train_config": {**dataclasses.asdict(self.train_config), "storage_options": {}}})

    def preview(self, out, targets) -> None:
        """The first frame's views: ground truth, coarse (first 3 channels), fine, mask; at output size."""
        V, size = self.config.views, self.config.output_resolution
        rows = [targets.rgb[:V], out.coarse[:V], out.fine[:V], out.mask[:V, None].float()]
        rows = [torch.nn.functional.interpolate(r.float(), size=(size, size), mode="nearest") for r in rows]
        self.log.grid("train/gt_coarse_fine_mask", image_grid(rows), self.step)

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
            if t.minutes and time.monotonic() - start > t.minutes * 60:
                break
            tick = time.monotonic()
            terms, out, targets = self.train_step(next(batches))
            scalars = terms.scalars()
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
        metrics = self.evaluate()
        if self.on_eval:
            self.on_eval(self.step, metrics)
        if self.log:
            self.log.scalars("eval", {"iou": metrics["iou"], "psnr": metrics["psnr"]}, self.step)
        return metrics

    def close(self) -> None:
        if self.log:
            self.log.close()


def _plain(value):
    """Tuples and lists compare equal after a checkpoint round trip."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
