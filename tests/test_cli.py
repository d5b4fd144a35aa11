import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(*args, check=True):
    return subprocess.run([sys.executable, "cli.py", *args], cwd=REPO, capture_output=True, text=True, check=check)


@pytest.mark.parametrize("command", ["preprocess", "info", "report", "synth-data"])
def test_every_command_has_help_with_an_example(command):
    out = _cli(command, "--help").stdout
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
