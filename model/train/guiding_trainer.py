"""The stage-1 trainer: streams a shard set into the guiding geometry model.

    trainer = GuidingTrainer(TrainConfig(shards=..., out=...), preset("tiny"))
    trainer.fit()          # a loop of train_step / evaluate / save_checkpoint, resumable (trainer_base.py)
"""

from __future__ import annotations

import torch

from datasets.config import as_dict, validate
from model.guiding.canonical import CanonicalFrame
from model.guiding.config import GuidingConfig
from model.guiding.losses import LossTerms, guiding_loss
from model.guiding.model import GuidingModel
from model.train.config import TrainConfig
from model.train.data import mean_head_landmarks, prepare_batch
from model.train.run_log import image_grid
from model.train.trainer_base import Trainer

STAGE = "guiding"


class GuidingTrainer(Trainer):
    STAGE = STAGE
    SAMPLE = "stage1"

    def __init__(self, train: TrainConfig, model_config: GuidingConfig, log: bool = True):
        validate(model_config)
        self.config = model_config
        super().__init__(train, log)
        resume = self.resume
        self._open_data(views=model_config.views, batch_size=model_config.batch_size)
        if resume is not None:
            self._check_compatible(resume)
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
        if resume is not None:
            self._restore(resume)
        self._ready()

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

    def identity(self) -> dict:
        return {**super().identity(), "model_config": as_dict(self.config)}

    # --------------------------------------------------------------------------------------- the loop
    def prepare(self, batch: dict[str, torch.Tensor]) -> tuple[object, object]:
        return prepare_batch(batch, self.config, self.frames, self.device)

    def loss(self, out, targets) -> LossTerms:
        return guiding_loss(self.config, out, targets.rgb, targets.alpha, targets.coarse_rgb, targets.lmk3d)

    def preview(self, out, targets) -> None:
        """The first frame's views: ground truth, coarse (first 3 channels), fine, mask; at output size."""
        V, size = self.config.views, self.config.output_resolution
        rows = [targets.rgb[:V], out.coarse[:V], out.fine[:V], out.mask[:V, None].float()]
        rows = [torch.nn.functional.interpolate(r.float(), size=(size, size), mode="nearest") for r in rows]
        self.log.grid("train/gt_coarse_fine_mask", image_grid(rows), self.step)
