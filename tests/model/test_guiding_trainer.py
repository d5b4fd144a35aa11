"""The stage-1 trainer on a small shard set of rendered heads (model/head_shards.py)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

from datasets.config import override
from model.guiding.config import preset
from model.head_shards import make_head_shards
from model.train.checkpoint import CheckpointError
from model.train.config import TrainConfig
from model.train.data import ShardSetError
from model.train.guiding_trainer import GuidingTrainer

# tiny, made smaller still: a 16^3 grid and 32 px renders keep a step well under a second
SMALL = {"grid_resolution": 16, "init_steps": 60, "mean_width": 32, "feature_dim": 16, "width": 32, "id_dim": 8,
         "exp_dim": 8, "nf_dim": 8, "encoder_channels": "4,4,8,8", "encoder_input": 32, "render_resolution": 32,
         "output_resolution": 32, "refine_width": 8, "batch_size": 2, "views": 2}


@pytest.fixture(scope="module")
def head_shards(tmp_path_factory):
    return make_head_shards(str(tmp_path_factory.mktemp("heads")))


def _trainer(shards: str, out: str, steps: int, **model) -> GuidingTrainer:
    train = TrainConfig(shards=shards, out=out, steps=steps, eval_every=0, checkpoint_every=0, image_every=0,
                        eval_frames=4, threads=1)
    return GuidingTrainer(train, override(preset("tiny"), {**SMALL, **model}), log=False)


def test_resumed_training_continues_with_the_same_losses(head_shards, tmp_path):
    straight = _trainer(head_shards, str(tmp_path / "a"), 6)
    straight.fit()
    first = _trainer(head_shards, str(tmp_path / "b"), 3)
    first.fit()  # ends with a checkpoint at step 3, as a killed run's last checkpoint
    del first
    resumed = _trainer(head_shards, str(tmp_path / "b"), 6)
    assert resumed.step == 3
    resumed.fit()
    expected = [h["total"] for h in straight.history[3:]]
    got = [h["total"] for h in resumed.history]
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-7)
    assert [h["step"] for h in resumed.history] == [4, 5, 6]
    for name, value in straight.model.state_dict().items():
        assert torch.allclose(value, resumed.model.state_dict()[name], atol=1e-6), name


def test_loss_decreases_and_evaluation_uses_held_out_views(head_shards, tmp_path):
    trainer = _trainer(head_shards, str(tmp_path / "run"), 40, lr=3e-3)
    metrics = trainer.fit()
    totals = [h["total"] for h in trainer.history]
    assert sum(totals[-5:]) < sum(totals[:5])
    assert metrics["heldout"] == 1.0 and metrics["views"] > 0
    assert 0.5 < metrics["iou"] <= 1.0 and metrics["psnr"] > 5
    assert (tmp_path / "run" / "checkpoint.pt").exists()


def test_a_checkpoint_of_other_options_is_refused(head_shards, tmp_path):
    _trainer(head_shards, str(tmp_path / "run"), 1).fit()
    with pytest.raises(CheckpointError, match="model_config"):
        _trainer(head_shards, str(tmp_path / "run"), 2, width=48)


def test_missing_product_is_one_clear_error_before_training(head_shards, tmp_path):
    broken = tmp_path / "no_landmarks"
    shutil.copytree(head_shards, broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    del manifest["arrays"]["lmk3d"]
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ShardSetError, match=r"lmk3d \(fitting \(3D landmarks\)\)"):
        _trainer(str(broken), str(tmp_path / "run"), 1)

    import cli

    result = CliRunner().invoke(cli.app, ["train", str(broken), "--out", str(tmp_path / "cli_run"), "--steps", "1"])
    assert result.exit_code == 2
    assert "lacks what stage 1 needs: lmk3d" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "cli_run" / "checkpoint.pt").exists()


def test_cli_trains_and_resumes(head_shards, tmp_path):
    import cli

    out = str(tmp_path / "cli")
    args = ["train", head_shards, "--out", out, "--eval-every", "0", "--image-every", "2", "--threads", "1"]
    args += [x for k, v in SMALL.items() for x in ("--set", f"{k}={v}")]
    result = CliRunner().invoke(cli.app, args + ["--steps", "2"])
    assert result.exit_code == 0, result.output
    assert "mask IoU" in result.output and "held-out views" in result.output
    result = CliRunner().invoke(cli.app, args + ["--steps", "3"])
    assert result.exit_code == 0, result.output
    assert "resuming at step 2" in result.output
    assert list((tmp_path / "cli" / "previews").glob("*.png"))
    assert list((tmp_path / "cli" / "tensorboard").glob("events.*"))
    bad = CliRunner().invoke(cli.app, ["train", head_shards, "--out", out, "--stage", "nope"])
    assert bad.exit_code == 2 and "unknown stage" in bad.output
