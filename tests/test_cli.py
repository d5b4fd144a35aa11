import json
import os
import subprocess
import sys

import pytest

from datasets.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(*args, check=True):
    return subprocess.run([sys.executable, "cli.py", *args], cwd=REPO, capture_output=True, text=True, check=check)


COMMANDS = ["preprocess", "info", "report", "inspect", "synth-data", "build-shards", "verify", "train", "evaluate",
            "render"]


def test_the_list_of_commands_is_complete():
    import cli

    assert sorted(c.name or c.callback.__name__ for c in cli.app.registered_commands) == sorted(
        c.replace("-", "_") if c not in ("synth-data", "build-shards") else c for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS + ["avatar fit", "avatar evaluate"])
def test_every_command_has_help_with_an_example(command):
    out = _cli(*command.split(), "--help").stdout
    assert "Examples" in out and f"python cli.py {command}" in out


def test_info_and_report_on_a_preprocessed_store(tmp_path, small_capture):
    root, _ = small_capture
    store = str(tmp_path / "s.zarr")
    run = _cli("preprocess", "nersemble", "--root", root, "--store", store, "--workers", "0", "--resolution", "32",
               "--stride", "2", "--include", "*EXP-1*")
    assert "ingest" in run.stderr
    data = json.loads(_cli("info", store, "--json").stdout)
    assert [c["clip"] for c in data["clips"]] == ["001/EXP-1-markers"]
    clip = data["clips"][0]
    assert clip["frames"] == 4 and clip["views"] == 16 and clip["stages"]["ingest"]["done"] == 1
    assert clip["arrays"]["rgb"]["shape"] == [4, 16, 32, 32, 3] and clip["arrays"]["rgb"]["codec"] == "jpeg q95"
    assert data["stages"]["ingest"]["config"]["frame_stride"] == 2
    assert data["sources"][0]["dataset"] == "nersemble" and "licence" in data["sources"][0]
    assert "numpy" in data["software"]
    text = _cli("info", store).stdout
    assert "001/EXP-1-markers" in text and "1/1" in text
    assert "no failures recorded" in _cli("report", store).stdout
    missing = _cli("info", str(tmp_path / "none.zarr"), check=False)
    assert missing.returncode == 2 and "no store" in missing.stderr


def _invoke(*args: str):
    from typer.testing import CliRunner

    import cli

    return CliRunner().invoke(cli.app, list(args))


@pytest.mark.parametrize("args, says", [
    (["preprocess", "video", "--root", "x.mp4", "--set", "ingest.resolution="], "ingest.resolution: empty value"),
    (["preprocess", "video", "--root", "x.mp4", "--set", "ingest.resolution=big"], "is not an integer"),
    (["preprocess", "video", "--root", "x.mp4", "--set", "landmarks.fallback=maybe"], "fallback must be one of"),
    (["preprocess", "video", "--root", "x.mp4", "--set", "nosuch.x=1"], "unknown section 'nosuch'"),
    (["preprocess", "video", "--root", "x.mp4", "--set", "ingest.nosuch=1"], "unknown setting ingest.nosuch"),
    (["preprocess", "video", "--root", "x.mp4", "--set", "resolution=512"], "say which section"),
    (["preprocess", "video", "--root", "x.mp4", "--set", "=3"], "takes SECTION.FIELD=VALUE"),
    (["preprocess", "video", "--root", "x.mp4", "--config", "nowhere.toml"], "cannot read the config file"),
    (["preprocess", "video", "--root", "x.mp4", "--storage-option", "anon"], "takes KEY=VALUE"),
    (["preprocess", "nosuchkind", "--root", "x"], "unknown dataset kind"),
    (["info", "nowhere.zarr", "--storage-option", "=1"], "takes KEY=VALUE"),
    (["report", "nowhere.zarr"], "no store at"),
    (["inspect", "nowhere.zarr", "--views", "a,b"], "--views"),
    (["synth-data", "out_x", "--kind", "pictures"], "--kind must be heads or markers"),
    (["build-shards", "nowhere.zarr", "--out", "shards_x", "--holdout-frames", "1.5"], "--holdout-frames"),
    (["verify", "nowhere_shards"], "manifest"),
    (["train", "nowhere_shards", "--set", "lr=fast"], "lr: 'fast' is not a number"),
    (["train", "nowhere_shards", "--set", "model.batch_size="], "empty value"),
    (["train", "nowhere_shards", "--set", "train.nosuch=1"], "unknown setting train.nosuch"),
    (["train", "nowhere_shards", "--preset", "huge"], "has no preset 'huge'"),
    (["evaluate", "nowhere_run"], "no checkpoint"),
    (["render", "nowhere_run", "--grid", "g.png", "--identities", "random:many"], "random:N"),
    (["avatar", "fit", "nowhere.mp4", "--model", "run", "--out", "a"], "does not exist"),
    (["avatar", "fit", "x.mp4", "--model", "run", "--out", "a", "--few-shot", "maybe"], "few_shot must be"),
    (["avatar", "fit", "x.mp4", "--model", "run", "--out", "a", "--holdout", "1.5"], "--holdout must be"),
    (["avatar", "fit", "--store", "nowhere.zarr", "--model", "run", "--out", "a"], "no store at"),
    (["avatar", "evaluate", "nowhere_avatar"], "no checkpoint at"),
])
def test_a_bad_value_is_one_clear_line_with_exit_2(args, says, tmp_path, monkeypatch):
    """Every command: an empty, malformed or unknown value (or a missing input) is one line naming what is
    wrong, exit code 2, no traceback."""
    monkeypatch.chdir(tmp_path)
    result = _invoke(*args)
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert says in result.output and "Traceback" not in result.output, result.output


def test_train_takes_train_and_model_settings_from_toml_and_set(tmp_path):
    from model.train.cli_run import build_configs

    config = tmp_path / "train.toml"
    config.write_text('[train]\nsteps = 7\neval_frames = 3\n[model]\nencoder_channels = "8,8,16,16"\nlr = 0.01\n')
    train, model = build_configs({"shards": "s"}, str(config), ["train.eval_frames=5", "lr=0.02",
                                                              "model.encoder_channels=[4, 4, 8, 8]"], {})
    assert (train.steps, train.eval_frames) == (7, 5)  # TOML, then --set (train settings reach --set too)
    assert model.lr == 0.02 and model.encoder_channels == (4, 4, 8, 8)


def test_preprocess_toml_and_set_share_one_grammar(tmp_path):
    from pipeline.config import apply_settings, load_toml

    config = tmp_path / "pre.toml"
    config.write_text('stages = ["ingest", "synthesis"]\n[runner]\nretries = 0\n'
                      '[synthesis]\nfrontal_views = ["222200036"]\n')
    cfg = load_toml(str(config))
    assert cfg.stages == ["ingest", "synthesis"] and cfg.runner.retries == 0
    assert cfg.stage_config("synthesis").frontal_views == ["222200036"]
    apply_settings(cfg, ["synthesis.frontal_views=[222200036, 222200037]", "runner.strict=yes"])
    assert cfg.stage_config("synthesis").frontal_views == ["222200036", "222200037"] and cfg.runner.strict


def test_preprocess_toml_takes_stage_tables_under_stages_when_no_stage_list(tmp_path):
    from pipeline.config import load_toml

    config = tmp_path / "pre.toml"
    config.write_text('[stages.ingest]\nresolution = 256\n')
    assert load_toml(str(config)).stage_config("ingest").resolution == 256
    config.write_text('[nosuchstage]\nx = 1\n')
    with pytest.raises(ConfigError, match="unknown entries nosuchstage"):
        load_toml(str(config))


def test_preprocess_runs_the_stages_and_settings_of_its_config_file(tmp_path, small_capture):
    root, _ = small_capture
    store, config = str(tmp_path / "s.zarr"), tmp_path / "run.toml"
    config.write_text(f'store = "{store}"\nstages = ["ingest", "matting"]\n[source]\ninclude = ["*EXP-1*"]\n'
                      '[runner]\nworkers = 0\n[ingest]\nresolution = 32\nframe_stride = 2\n')
    _cli("preprocess", "nersemble", "--root", root, "--config", str(config), "--set", "ingest.jpeg_quality=90")
    data = json.loads(_cli("info", store, "--json").stdout)
    clip = data["clips"][0]
    assert [c["clip"] for c in data["clips"]] == ["001/EXP-1-markers"] and clip["frames"] == 4
    assert clip["stages"]["matting"]["done"] == 1 and clip["arrays"]["alpha"]["shape"] == [4, 16, 32, 32]
    assert clip["arrays"]["rgb"]["codec"] == "jpeg q90"
