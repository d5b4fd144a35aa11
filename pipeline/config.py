"""Configuration of a preprocessing run: one dataclass per component, TOML file + CLI overrides, through
the one mechanism of datasets/config.py.

    store, storage_options, stages   top-level TOML keys (stages: the list of stages to run)
    [source]            dataset kind, raw root, sequence patterns, focal of monocular clips
    [runner]            workers / scheduler, retries, recompute, strict
    [<stage>]           each stage's own config dataclass (e.g. [ingest] resolution = 512)

`--set SECTION.FIELD=VALUE` reaches the same sections by the same names (source, runner, a stage's name).
A file without a top-level stage list may also write stage tables as [stages.<name>].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from datasets.config import apply_assignments, apply_tables, read_toml, update
from datasets.errors import ConfigError
from datasets.raw import DEFAULT_FOCAL
from pipeline.stage import load_stages


@dataclass
class SourceConfig:
    dataset: str = "nersemble"  # raw layout: nersemble[-v1|-v2], vfhq, video, images, scans, nphm, faceverse
    root: str = ""  # raw capture root (path or fsspec URL)
    include: list[str] = field(default_factory=list)  # sequence patterns to take (fnmatch); empty = all
    exclude: list[str] = field(default_factory=list)  # sequence patterns to skip, e.g. '*tongue*'
    focal: float = DEFAULT_FOCAL  # monocular default camera: focal in units of the longer image side
    subject: str | None = None  # subject name for a single video / image folder
    scan_views: int = 80  # scans (nphm, faceverse): cameras of the rig rendered (80 as the paper; fewer for tests)


@dataclass
class RunnerConfig:
    workers: int = 1  # local worker processes; 0 runs every task in this process
    scheduler: str | None = None  # address of an existing Dask scheduler (tcp://host:8786)
    retries: int = 2  # extra attempts of a task that raised
    recompute: bool = False  # redo blocks finished under another config (otherwise refused)
    strict: bool = False  # exit non-zero when any item failed, not only when a task did
    segment_blocks: int = 0  # blocks per task; 0 = automatic (long runs for decoders, one otherwise)
    threads: int = 0  # CPU threads per task; 0 = cores / workers


@dataclass
class PreprocessConfig:
    store: str = ""  # output store: a path or fsspec URL (s3://bucket/name.zarr)
    storage_options: dict[str, Any] = field(default_factory=dict)  # fsspec options of the store
    stages: list[str] = field(default_factory=lambda: ["ingest"])
    source: SourceConfig = field(default_factory=SourceConfig)
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    stage_configs: dict[str, Any] = field(default_factory=dict)  # stage name -> its config dataclass

    def stage_config(self, name: str) -> Any:
        if name not in self.stage_configs:
            self.stage_configs[name] = load_stages()[name].config_class()
        return self.stage_configs[name]

    def section(self, name: str) -> Any | None:
        """The config of a `--set`/TOML section: source, runner or a stage's name (None: no such)."""
        if name in ("source", "runner"):
            return getattr(self, name)
        return self.stage_config(name) if name in load_stages() else None

    @staticmethod
    def section_names() -> list[str]:
        return ["source", "runner", *load_stages()]


def load_toml(path: str, cfg: PreprocessConfig | None = None) -> PreprocessConfig:
    """Read a TOML config into `cfg` (a new default config when None): top-level store, storage_options
    and stages (a list), then the [source], [runner] and [<stage>] tables."""
    cfg = cfg or PreprocessConfig()
    data = read_toml(path)
    stage_tables = data.pop("stages") if isinstance(data.get("stages"), dict) else {}
    top = {key: data.pop(key) for key in ("store", "storage_options", "stages") if key in data}
    if top:
        update(cfg, top, path)
    for name in list(data):
        if isinstance(data[name], dict) and name in load_stages():
            stage_tables[name] = data.pop(name)
    tables = {name: data.pop(name) for name in ("source", "runner") if name in data}
    if data:
        raise ConfigError(f"{path}: unknown entries {', '.join(data)}; it takes store, storage_options, stages, "
                          f"[source], [runner] and a table per stage ({', '.join(load_stages())})")
    apply_tables(tables, cfg.section, ["source", "runner"], path)
    apply_tables(stage_tables, lambda name: cfg.stage_config(name) if name in load_stages() else None,
                 list(load_stages()), path)
    return cfg


def apply_overrides(obj: Any, **values: Any) -> None:
    """Set the fields given (None means: leave as is) and re-validate."""
    update(obj, {k: v for k, v in values.items() if v is not None}, type(obj).__name__)


def apply_settings(cfg: PreprocessConfig, settings: list[str]) -> None:
    """`SECTION.FIELD=VALUE` assignments: a stage's setting (landmarks.mode=static, matting.backend=rembg),
    or the source's and runner's (runner.retries=0)."""
    apply_assignments(settings, cfg.section, cfg.section_names())
