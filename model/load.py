"""A trained model back from its checkpoint, without the shard set it was trained on:

    trained = load_trained("runs/demo-gaussian")        # a run directory or a checkpoint file
    trained.model(inputs).fine                          # GuidingModel or GaussianModel, in eval mode
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from datasets.config import override
from model.gaussian.config import GaussianConfig
from model.gaussian.init import POINT_TENSORS
from model.gaussian.model import GaussianModel
from model.guiding.canonical import CanonicalFrame
from model.guiding.config import GuidingConfig
from model.guiding.model import GuidingModel
from model.train import checkpoint
from model.train.frames import FrameTable


@dataclass
class Trained:
    stage: str  # guiding | gaussian
    model: torch.nn.Module
    config: GuidingConfig  # the networks' config (stage 1's, also for a stage-2 model)
    payload: dict  # the checkpoint (step, identity, train_config, ...)
    path: str

    @property
    def subjects(self) -> list[str]:
        return list(self.payload["identity"]["subjects"])

    @property
    def shards(self) -> str:
        return self.payload["train_config"]["shards"]

    @property
    def step(self) -> int:
        return int(self.payload["step"])


def checkpoint_path(path: str) -> str:
    return os.path.join(path, "checkpoint.pt") if os.path.isdir(path) else path


def load_trained(path: str, device: torch.device | str = "cpu") -> Trained:
    path = checkpoint_path(path)
    payload = checkpoint.load(path, None)
    identity, state = payload["identity"], payload["model"]
    config = override(GuidingConfig(), identity["model_config"])
    frame = CanonicalFrame.from_state(payload["canonical"])
    n_id, n_frames = len(identity["subjects"]), int(identity["frames"])
    landmarks = torch.zeros_like(state["landmarks"])
    if payload["stage"] == "guiding":
        model = GuidingModel(config, frame, landmarks, n_id, n_frames, initialise=False)
    else:
        gaussian = override(GaussianConfig(), payload["gaussian_config"])
        points = {k: state[k] for k in POINT_TENSORS}
        model = GaussianModel(config, gaussian, frame, points, landmarks, n_id, n_frames)
    model.load_state_dict(state)
    return Trained(payload["stage"], model.to(device).eval(), config, payload, path)


def frame_table(trained: Trained, manifest) -> FrameTable:
    """The per-frame table of the shard set, checked against the model's (same clips, same frame count)."""
    frames = FrameTable(manifest.doc["clips"])
    if len(frames) != int(trained.payload["identity"]["frames"]):
        raise checkpoint.CheckpointError(f"the shard set has {len(frames)} frames but {trained.path} was trained on "
                         f"{trained.payload['identity']['frames']}: evaluate on the shard set it was trained on")
    return frames
