"""benchmarks/gpu_check.py, the one-table GPU check, run here with --device cpu --quick: every row is there,
the CUDA-only rows say so, the checks that run on the CPU pass, and the markdown table is written. (The CUDA
rows themselves can only be exercised on a GPU: `make gpu-check`.)"""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS = ("environment", "gsplat kernels (JIT build)", "gsplat vs torch", "batched render (torch) vs per-scene calls",
        "mesh rasterizers", "CUDA tests (pytest -m gpu)", "render 0.5k Gaussians 32 px, torch: fwd",
        "render 0.5k Gaussians 32 px, torch: fwd+bwd", "render 0.5k Gaussians 32 px, torch: fwd + Psi",
        "stage 1 train_step (tiny)", "stage 2 train_step (tiny)", "amp stage 2 (bf16 autocast)",
        "amp stage 1 (bf16 autocast)")


def _rows(table: str) -> dict[str, list[str]]:
    """Markdown table -> {check: [result, figure, reference]}."""
    out = {}
    for line in table.splitlines()[2:]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            out[cells[0]] = cells[1:]
    return out


def test_cpu_quick_run_prints_every_row_and_passes(tmp_path):
    md = tmp_path / "gpu-check.md"
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--quick", "--out", str(md)],
                          check=False, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| check" in proc.stdout and "all run checks passed" in proc.stdout
    rows = _rows(md.read_text())
    assert set(ROWS) <= set(rows), sorted(set(ROWS) - set(rows))
    for name in ("gsplat kernels (JIT build)", "gsplat vs torch", "mesh rasterizers"):
        assert rows[name][0] == "skipped: no CUDA", name
    for name in ("batched render (torch) vs per-scene calls", "CUDA tests (pytest -m gpu)", "stage 1 train_step (tiny)",
                 "stage 2 train_step (tiny)"):
        assert rows[name][0] == "pass", (name, rows[name])
    assert "s/step" in rows["stage 2 train_step (tiny)"][1]
    assert rows["amp stage 2 (bf16 autocast)"][0].startswith("skipped")


def test_a_failing_check_is_a_row_and_the_exit_code_is_1(monkeypatch, capsys):
    sys.path.insert(0, ROOT)
    from benchmarks import gpu_check

    def broken(ctx):
        raise RuntimeError("boom")

    monkeypatch.setattr(gpu_check, "CHECKS", [gpu_check.Check("env", "environment", broken, lambda ctx: 0)])
    assert gpu_check.main(["--device", "cpu", "--only", "env"]) == 1
    rows = _rows(capsys.readouterr().out.split("\n\n")[0])
    assert rows["environment"][:2] == ["FAIL", "RuntimeError: boom"]


def test_checks_are_skipped_when_the_budget_would_not_cover_them(capsys):
    sys.path.insert(0, ROOT)
    from benchmarks import gpu_check

    assert gpu_check.main(["--device", "cpu", "--quick", "--budget", "0.5", "--only", "render"]) == 0
    rows = _rows(capsys.readouterr().out.split("\n\n")[0])
    assert rows["render benchmark"][0] == "skipped: time budget"
