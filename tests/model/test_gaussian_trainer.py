"""The stage-2 trainer and the commands around it (train --stage gaussian, evaluate, render) on a small
shard set of rendered heads, started from a short stage-1 run."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from datasets.config import override
from model.gaussian.config import preset as gaussian_preset
from model.head_shards import make_head_shards
from model.render.video import read_gif_frames
from model.train import checkpoint
from model.train.checkpoint import CheckpointError
from model.train.config import TrainConfig
from model.train.gaussian_trainer import GaussianTrainer
from tests.model.test_guiding_trainer import _trainer as guiding_trainer

STAGE2 = {"batch_size": 2, "backend": "torch"}


@pytest.fixture(scope="module")
def head_shards(tmp_path_factory):
    return make_head_shards(str(tmp_path_factory.mktemp("heads")))


@pytest.fixture(scope="module")
def stage1(head_shards, tmp_path_factory):
    """A stage-1 run of 3 steps: its checkpoint path."""
    out = tmp_path_factory.mktemp("stage1")
    guiding_trainer(head_shards, str(out), 3).fit()
    return str(out / "checkpoint.pt")


def _trainer(shards: str, stage1_path: str, out: str, steps: int, preset: str = "tiny", **model) -> GaussianTrainer:
    train = TrainConfig(shards=shards, out=out, init=stage1_path, preset=preset, steps=steps, eval_every=0,
                        checkpoint_every=0, image_every=0, eval_frames=4, threads=1)
    return GaussianTrainer(train, override(gaussian_preset(preset), {**STAGE2, **model}), log=False)


def test_resumed_training_continues_with_the_same_losses(head_shards, stage1, tmp_path):
    straight = _trainer(head_shards, stage1, str(tmp_path / "a"), 4)
    straight.fit()
    first = _trainer(head_shards, stage1, str(tmp_path / "b"), 2)
    first.fit()  # ends with a checkpoint at step 2, as a killed run's last checkpoint
    del first
    resumed = _trainer(head_shards, "", str(tmp_path / "b"), 4)  # a resumed run needs no --init
    assert resumed.step == 2
    resumed.fit()
    assert [h["total"] for h in resumed.history] == pytest.approx([h["total"] for h in straight.history[2:]],
                                                                  rel=1e-6, abs=1e-7)
    for name, value in straight.model.state_dict().items():
        assert torch.allclose(value, resumed.model.state_dict()[name], atol=1e-6), name


def test_stage2_starts_from_the_stage1_networks_and_learns(head_shards, stage1, tmp_path):
    trainer = _trainer(head_shards, stage1, str(tmp_path / "run"), 8)
    stage1_state = checkpoint.load(stage1, "guiding")["model"]
    for name in ("f_inj.point.weight", "f_col.out.weight", "id_codes", "landmarks"):
        assert torch.equal(trainer.model.state_dict()[name], stage1_state[name]), name
    # the Adam groups carry the paper's (here: tiny's) learning rates
    lrs = {g["name"]: g["lr"] for g in trainer.optimizer.param_groups}
    c = trainer.gaussian_config
    assert lrs == {"identity codes": c.lr_codes, "P0": c.lr_landmarks, "X0": c.lr_positions, "Gamma0": c.lr_features,
                   "S0": c.lr_scales, "Q0": c.lr_rotations, "A0": c.lr_opacities, "head poses": c.lr_pose,
                   "networks": c.lr_networks}
    assert sum(len(g["params"]) for g in trainer.optimizer.param_groups) == len(list(trainer.model.parameters()))
    before = trainer.evaluate()
    trainer.fit()
    after = trainer.evaluate()
    assert after["psnr"] > before["psnr"] and after["heldout"] == 1.0
    losses = [h["fine"] for h in trainer.history]
    assert sum(losses[-3:]) < sum(losses[:3])


def test_template_initialisation_keeps_only_the_architecture(head_shards, stage1, tmp_path):
    trainer = _trainer(head_shards, stage1, str(tmp_path / "run"), 1, init="template")
    assert torch.count_nonzero(trainer.model.features) == 0
    stage1_state = checkpoint.load(stage1, "guiding")["model"]
    assert not torch.equal(trainer.model.f_inj.point.weight, stage1_state["f_inj.point.weight"])
    assert trainer.model.f_inj.point.weight.shape == stage1_state["f_inj.point.weight"].shape
    assert trainer.source["strategy"] == "template"


def test_unusable_stage1_checkpoints_are_refused_clearly(head_shards, stage1, tmp_path):
    with pytest.raises(CheckpointError, match="stage-1 checkpoint of preset 'tiny'.*--preset tiny"):
        _trainer(head_shards, stage1, str(tmp_path / "a"), 1, preset="paper")
    payload = torch.load(stage1, weights_only=True)
    payload["version"] = checkpoint.VERSION + 1
    old = tmp_path / "future.pt"
    torch.save(payload, old)
    with pytest.raises(CheckpointError, match="version"):
        _trainer(head_shards, str(old), str(tmp_path / "b"), 1)
    with pytest.raises(CheckpointError, match="give --init"):
        _trainer(head_shards, "", str(tmp_path / "c"), 1)
    stage2 = _trainer(head_shards, stage1, str(tmp_path / "d"), 1)
    stage2.fit()
    with pytest.raises(CheckpointError, match="'gaussian' checkpoint, not 'guiding'"):
        _trainer(head_shards, str(tmp_path / "d" / "checkpoint.pt"), str(tmp_path / "e"), 1)


def test_cli_trains_evaluates_and_renders(head_shards, stage1, tmp_path):
    import cli

    out = str(tmp_path / "gaussian")
    args = ["train", head_shards, "--stage", "gaussian", "--init", stage1, "--out", out, "--eval-every", "0",
            "--image-every", "1", "--threads", "1", "--steps", "2", "--set", "batch_size=2"]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    assert "Gaussians, initialised from stage1" in result.output and "SSIM" in result.output
    assert list((tmp_path / "gaussian" / "previews").glob("*.png"))

    result = CliRunner().invoke(cli.app, ["evaluate", stage1, out, "--frames", "2", "--json", str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.output
    assert "guiding" in result.output and "gaussian" in result.output and "held-out" in result.output

    gif, grid, transfer = (str(tmp_path / name) for name in ("turn.gif", "grid.png", "transfer.gif"))
    result = CliRunner().invoke(cli.app, ["render", out, "--turntable", gif, "--frames", "3", "--size", "32",
                                          "--grid", grid, "--identities", "random:2", "--expressions", "random:2",
                                          "--transfer", transfer, "--driver", "1"])
    assert result.exit_code == 0, result.output
    frames = read_gif_frames(gif)
    assert frames.shape[1:] == (32, 32, 3) and frames.max() > 0  # a head in front of the camera
    assert read_gif_frames(transfer).shape[2] == 64  # driving crop | render
    from PIL import Image

    assert Image.open(grid).size[0] > 2 * 32

    refused = CliRunner().invoke(cli.app, ["render", stage1, "--turntable", gif])
    assert refused.exit_code == 2 and "render needs a stage-2 run" in refused.output
    bad = CliRunner().invoke(cli.app, args[:4] + ["--init", stage1, "--out", str(tmp_path / "x"), "--preset",
                                                  "paper"])
    assert bad.exit_code == 2 and "preset 'tiny'" in bad.output and "Traceback" not in bad.output
    assert not (tmp_path / "x").exists()  # a run that cannot start leaves nothing behind
