"""Avatars from a trained Gaussian head model (GPHMv2 section 3.5) on the rendered-heads shard set: a short
stage-1 and stage-2 run trained on one subject, an avatar fitted to one camera of the other subject's clip
(never seen in training) and evaluated on its held-out frames."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from datasets.config import override
from model.avatar.evaluate import evaluate_avatar
from model.avatar.fit import AvatarConfig, AvatarFit, load_avatar
from model.avatar.frames import AvatarDataError, AvatarFrames
from model.gaussian.config import preset as gaussian_preset
from model.head_shards import make_head_shards
from model.train.config import TrainConfig
from model.train.gaussian_trainer import GaussianTrainer
from tests.model.test_guiding_trainer import _trainer as guiding_trainer

CLIP = "000/SEQ-0"  # the validation subject of the shard set: the model never trained on it


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(store of the rendered heads, stage-2 run directory)."""
    root = tmp_path_factory.mktemp("avatar")
    shards = make_head_shards(str(root / "heads"), frames=6)
    guiding_trainer(shards, str(root / "stage1"), 20).fit()
    train = TrainConfig(shards=shards, out=str(root / "stage2"), init=str(root / "stage1" / "checkpoint.pt"),
                        preset="tiny", steps=30, eval_every=0, checkpoint_every=0, image_every=0, eval_frames=4,
                        threads=1)
    GaussianTrainer(train, override(gaussian_preset("tiny"), {"batch_size": 2, "backend": "torch"}), log=False).fit()
    return str(root / "heads" / "store.zarr"), str(root / "stage2")


def _fit(trained, out, **kw) -> AvatarFit:
    store, model = trained
    frames = AvatarFrames.load(store, CLIP, view=0, holdout=kw.pop("holdout", 0.2))
    config = AvatarConfig(model=model, out=str(out), **{"fit_iters": 8, "finetune_iters": 30, "few_shot": "off",
                                                       "threads": 1, **kw})
    return AvatarFit(config, frames, log=False)


def test_the_prior_beats_the_template_start_at_equal_steps(trained, tmp_path):
    results = {}
    for prior in (True, False):
        fit = _fit(trained, tmp_path / str(prior), prior=prior)
        avatar, payload = load_avatar(fit.run())
        results[prior] = evaluate_avatar(avatar, fit.frames)
        assert results[prior]["on"] == "held-out frames" and results[prior]["frames"] == 1
    print(f"held-out PSNR with the prior {results[True]['psnr']:.2f} dB (coarse {results[True]['psnr_coarse']:.2f}), "
          f"without {results[False]['psnr']:.2f} dB (coarse {results[False]['psnr_coarse']:.2f})")
    assert results[True]["psnr"] > results[False]["psnr"] + 0.5
    assert results[True]["ssim"] > results[False]["ssim"]


def test_the_held_out_frames_are_the_last_and_never_fitted(trained, tmp_path):
    fit = _fit(trained, tmp_path / "a", fit_iters=20, finetune_iters=20)
    assert fit.frames.heldout.tolist() == [5] and fit.frames.train.tolist() == [0, 1, 2, 3, 4]
    drawn = set()
    for phase in ("fit", "finetune"):
        fit.phase = phase
        for fit.step in range(200):
            drawn.add(fit._frame())
    assert drawn == {0, 1, 2, 3, 4}


def test_a_resumed_fit_gives_the_same_avatar(trained, tmp_path):
    straight = _fit(trained, tmp_path / "straight", fit_iters=6, finetune_iters=8, checkpoint_every=3)
    straight.run()

    class Killed(Exception):
        pass

    def kill_at(phase, step, total, terms):
        if phase == "finetune" and step == 5:
            raise Killed

    killed = _fit(trained, tmp_path / "killed", fit_iters=6, finetune_iters=8, checkpoint_every=3)
    killed.progress = kill_at
    with pytest.raises(Killed):
        killed.run()
    resumed = _fit(trained, tmp_path / "killed", fit_iters=6, finetune_iters=8, checkpoint_every=3)
    assert (resumed.phase, resumed.step) == ("finetune", 3)
    resumed.run()
    assert resumed.history == straight.history  # the same losses, step for step
    a, _ = load_avatar(str(tmp_path / "straight"))
    b, _ = load_avatar(str(tmp_path / "killed"))
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name
    # another config in the same directory is refused, not mixed in
    with pytest.raises(Exception, match="other finetune_iters"):
        _fit(trained, tmp_path / "killed", fit_iters=6, finetune_iters=9)


def test_the_avatar_file_holds_only_what_driving_needs(trained, tmp_path):
    fit = _fit(trained, tmp_path / "a", fit_iters=2, finetune_iters=2)
    path = fit.run()
    payload = torch.load(path, weights_only=True)
    names = set(payload["state"])
    assert {"X_id", "C_id", "S_id", "Q_id", "A_id", "H_id"} <= names
    assert not any(n.split(".")[0] in ("f_inj", "f_id", "f_col", "f_att", "id_codes") for n in names)
    assert any(n.startswith("f_dyn.") for n in names) and any(n.startswith("E_exp.") for n in names)
    avatar, _ = load_avatar(str(tmp_path / "a"))
    inputs, _ = fit.frames.batch([0], avatar.config, torch.device("cpu"))
    with torch.no_grad():
        np.testing.assert_allclose(avatar(inputs).fine.numpy(), fit.avatar(inputs).fine.numpy(), atol=1e-6)


def test_one_image_is_a_few_shot_fit(trained, tmp_path):
    store, model = trained
    frames = AvatarFrames.load(store, CLIP, view=2, holdout=0.0)
    frames.train = frames.train[:1]  # one image
    fit = AvatarFit(AvatarConfig(model=model, out=str(tmp_path / "one"), fit_iters=2, finetune_iters=2000,
                                 few_shot_iters_per_image=5, threads=1), frames, log=False)
    assert fit.few_shot and fit.finetune_iters == 5
    fit.run()
    assert not any(p.requires_grad for p in fit.avatar.f_exp.parameters())  # frozen when few-shot
    assert not any(p.requires_grad for p in fit.avatar.refine.parameters())


def test_the_avatar_commands(trained, tmp_path):
    import cli

    store, model = trained
    out = str(tmp_path / "cli")
    runner = CliRunner()
    run = runner.invoke(cli.app, ["avatar", "fit", "--store", store, "--clip", CLIP, "--model", model, "--out", out,
                                  "--fit-iters", "2", "--finetune-iters", "2", "--threads", "1"])
    assert run.exit_code == 0, run.output
    assert os.path.exists(os.path.join(out, "avatar.pt"))
    run = runner.invoke(cli.app, ["avatar", "evaluate", out, "--json", "--no-face-distance"])
    assert run.exit_code == 0, run.output
    metrics = json.loads(run.stdout)
    assert metrics["frames"] == 1 and np.isfinite(metrics["psnr"]) and metrics["prior"] is True
    assert not np.isfinite(metrics["lpips"])  # no weight files given
    half = runner.invoke(cli.app, ["avatar", "evaluate", out, "--vgg-weights", "vgg.pth"])
    assert half.exit_code == 2 and "needs both" in half.output
    both = runner.invoke(cli.app, ["avatar", "fit", "clip.mp4", "--store", store, "--model", model, "--out", out])
    assert both.exit_code == 2 and "not both" in both.output
    stage1 = runner.invoke(cli.app, ["avatar", "fit", "--store", store, "--model", os.path.join(
        os.path.dirname(model), "stage1"), "--out", str(tmp_path / "x")])
    assert stage1.exit_code == 2 and "stage-1" in stage1.output
    with pytest.raises(AvatarDataError, match="has 6 camera"):
        AvatarFrames.load(store, CLIP, view=9)


def _posed_frames(R: np.ndarray, t: np.ndarray, s: np.ndarray, E: np.ndarray) -> AvatarFrames:
    T = len(R)
    pose = np.tile(np.eye(4, dtype=np.float32), (T, 1, 1))
    pose[:, :3, :3], pose[:, :3, 3] = R, t
    arrays = {"pose": pose, "scale": s.astype(np.float32), "world_to_cam": np.repeat(E[None], T, 0).astype(np.float32)}
    return AvatarFrames("", "", 0, np.arange(T), np.arange(T), np.zeros(0, int), arrays)


def test_driven_poses_carry_the_drivers_motion_relative_to_its_mean():
    from scipy.spatial.transform import Rotation

    from model.avatar.drive import driven_poses

    rng = np.random.default_rng(0)
    turns = Rotation.from_rotvec(rng.normal(0, 0.2, (5, 3)))
    E_driver = np.eye(4)
    E_avatar = np.eye(4)
    E_avatar[:3, :3] = Rotation.from_rotvec([0, 0.5, 0]).as_matrix()  # another camera placement
    E_avatar[:3, 3] = [0.1, 0, 1.0]
    driver = _posed_frames(turns.as_matrix(), rng.normal(0, 0.01, (5, 3)) + [0, 0, 1], np.full(5, 2.0), E_driver)
    base = Rotation.from_rotvec([0.1, -0.2, 0.0]).as_matrix()
    avatar = _posed_frames(np.repeat(base[None], 3, 0), np.zeros((3, 3)), np.ones(3), E_avatar)
    pose, scale = driven_poses(avatar, driver, np.arange(5))
    Rc = E_avatar[:3, :3] @ pose[:, :3, :3]  # in the avatar camera's frame
    from model.fitting.geometry import project_to_rotation

    mean_d = project_to_rotation(turns.as_matrix().mean(0))
    expected = turns.as_matrix() @ mean_d.T @ (E_avatar[:3, :3] @ base)
    np.testing.assert_allclose(Rc, expected, atol=1e-5)
    # the translation moves by the driver's offsets from its mean, in head sizes (scale 2 -> 1: halved)
    tc = np.einsum("ij,tj->ti", E_avatar[:3, :3], pose[:, :3, 3]) + E_avatar[:3, 3]
    td = driver.arrays["pose"][:, :3, 3]
    np.testing.assert_allclose(tc - tc.mean(0), (td - td.mean(0)) / 2, atol=1e-6)
    assert np.allclose(scale, 1.0)


def test_driving_an_avatar_writes_the_driven_video(trained, tmp_path):
    import cli
    from model.render.video import read_mp4_frames

    store, model = trained
    out = str(tmp_path / "a")
    _fit(trained, out, fit_iters=2, finetune_iters=2).run()
    runner = CliRunner()
    run = runner.invoke(cli.app, ["avatar", "drive", out, "--self", "--out", str(tmp_path / "self.mp4")])
    assert run.exit_code == 0, run.output
    assert read_mp4_frames(tmp_path / "self.mp4").shape[0] == 1  # the one held-out frame
    run = runner.invoke(cli.app, ["avatar", "drive", out, "--driver-store", store, "--driver-clip", "001/SEQ-0",
                                  "--driver-view", "3", "--side-by-side", "--fixed-non-face", "--mouth-check",
                                  "--out", str(tmp_path / "other.mp4")])
    assert run.exit_code == 0, run.output
    assert "mouth" in run.output and ("no face re-detected" in run.output or "correlation" in run.output)
    assert "own lip landmarks" in run.output and "mouth and jaw:" in run.output
    video = read_mp4_frames(tmp_path / "other.mp4")
    usable = len(AvatarFrames.load(store, "001/SEQ-0", view=3, holdout=0.0))  # one frame of it was not fitted
    assert video.shape[0] == usable == 5 and video.shape[2] == 2 * video.shape[1]  # driver | avatar
    none = runner.invoke(cli.app, ["avatar", "drive", out, "--out", str(tmp_path / "x.mp4")])
    assert none.exit_code == 2 and "give one driver" in none.output
    run = runner.invoke(cli.app, ["avatar", "render", out, "--turntable", str(tmp_path / "t.gif"), "--frames", "3",
                                  "--size", "32"])
    assert run.exit_code == 0, run.output
    from model.render.video import read_gif_frames

    assert read_gif_frames(tmp_path / "t.gif").shape == (3, 32, 32, 3)


def test_a_real_video_in_an_avatar_and_a_driven_video_out(trained, tmp_path):
    """The whole path a user runs: `avatar fit VIDEO` preprocesses it with the training data's settings, and
    `avatar drive --driver VIDEO` preprocesses the driver the same way (the real clips beside the checkout)."""
    import cli
    from model.render.video import read_mp4_frames
    from tests.realdata import CUT, FRONTAL

    if not FRONTAL.exists() or not CUT.exists():
        pytest.skip(f"the real clips are not in {FRONTAL.parent}")
    _, model = trained
    out = str(tmp_path / "me")
    runner = CliRunner()
    run = runner.invoke(cli.app, ["avatar", "fit", str(FRONTAL), "--model", model, "--out", out, "--fit-iters", "2",
                                  "--finetune-iters", "2", "--threads", "1", "--workers", "0"])
    assert run.exit_code == 0, run.output
    assert "with the settings the training data of" in run.output and "58 frame(s) fitted, 14 held out" in run.output
    run = runner.invoke(cli.app, ["avatar", "drive", out, "--driver", str(CUT), "--frames", "4", "--workers", "0",
                                  "--out", str(tmp_path / "driven.mp4")])
    assert run.exit_code == 0, run.output
    assert read_mp4_frames(tmp_path / "driven.mp4").shape[0] == 4
    assert os.path.isdir(os.path.join(out, "drivers", "cartoon_then_face.zarr"))
