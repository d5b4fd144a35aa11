"""The import direction of the packages (../shared/DESIGN.md): datasets never imports pipeline or model
(the synthetic captures' renderer aside), model never imports pipeline, and nothing but the tests imports
cli.py or tests/. Every import counts, those inside functions included."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = {  # importer -> packages it must not import
    "datasets": ("pipeline", "model", "cli", "tests"),
    "pipeline": ("cli", "tests"),
    "model": ("pipeline", "cli", "tests"),
    "benchmarks": ("cli", "tests"),
}
ALLOWED = {("datasets/synthhead/render.py", "model.render"),  # the synthetic heads are drawn by the rasterizer
           ("datasets/scans/render.py", "model.render")}  # and so are the NPHM / FaceVerse scans


def imported_modules(source: str) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in a file, at any depth."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
    return out


def forbidden_imports(root: Path) -> list[str]:
    """'file:line imports module' for each import against the direction, in the packages under root."""
    problems = []
    for package, banned in FORBIDDEN.items():
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            for line, module in imported_modules(path.read_text()):
                top = module.split(".")[0]
                if top in banned and not any(rel == f and module.startswith(m) for f, m in ALLOWED):
                    problems.append(f"{rel}:{line} imports {module} ({package} must not import {top})")
    return problems


def test_the_tree_keeps_the_import_direction():
    assert forbidden_imports(REPO) == []


def test_a_forbidden_import_is_found_even_inside_a_function(tmp_path):
    (tmp_path / "model" / "fitting").mkdir(parents=True)
    (tmp_path / "model" / "fitting" / "x.py").write_text(
        "import numpy\n\ndef f():\n    from pipeline.runner import preprocess\n    return preprocess\n")
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "y.py").write_text("import model.render.mesh\n")
    assert forbidden_imports(tmp_path) == [
        "datasets/y.py:1 imports model.render.mesh (datasets must not import model)",
        "model/fitting/x.py:4 imports pipeline.runner (model must not import pipeline)",
    ]
