"""Configuration of a preprocessing run: one dataclass per component, TOML file + CLI overrides.

    [source]            dataset kind, raw root, sequence patterns, focal of monocular clips
    [runner]            workers / scheduler, retries, recompute, strict
    [stages.<name>]     each stage's own config dataclass (e.g. [stages.ingest] resolution = 512)
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from typing import Any

from datasets.raw import DEFAULT_FOCAL
from pipeline.stage import load_stages


@dataclass
class SourceConfig:
    dataset: str = "nersemble"  # raw layout: nersemble, nersemble-v1, nersemble-v2, vfhq, video, images
    root: str = ""  # raw capture root (path or fsspec URL)
    include: list[str] = field(default_factory=list)  # sequence patterns to take (fnmatch); empty = all
    exclude: list[str] = field(default_factory=list)  # sequence patterns to skip, e.g. '*tongue*'
    focal: float = DEFAULT_FOCAL  # monocular default camera: focal in units of the longer image side
    subject: str | None = None  # subject name for a single video / image folder


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


def _update(obj: Any, values: dict[str, Any], where: str) -> None:
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in values.items():
        if key not in names:
            raise ValueError(f"unknown setting {where}.{key}; known: {', '.join(sorted(names))}")
        setattr(obj, key, value)
    if hasattr(obj, "__post_init__"):
        obj.__post_init__()


def load_toml(path: str, cfg: PreprocessConfig | None = None) -> PreprocessConfig:
    """Read a TOML config into `cfg` (a new default config when None)."""
    cfg = cfg or PreprocessConfig()
    with open(path, "rb") as f:
        data = tomllib.load(f)
    for key in ("store", "storage_options", "stages"):
        if key in data:
            setattr(cfg, key, data.pop(key))
    if "source" in data:
        _update(cfg.source, data.pop("source"), "source")
    if "runner" in data:
        _update(cfg.runner, data.pop("runner"), "runner")
    for name, values in data.pop("stages", {}).items():
        if name not in load_stages():
            raise ValueError(f"unknown stage [stages.{name}] in {path}; known: {', '.join(load_stages())}")
        _update(cfg.stage_config(name), values, f"stages.{name}")
    if data:
        raise ValueError(f"unknown section(s) in {path}: {', '.join(data)}")
    return cfg


def apply_overrides(obj: Any, **values: Any) -> None:
    """Set the fields given (None means: leave as is) and re-validate."""
    _update(obj, {k: v for k, v in values.items() if v is not None}, type(obj).__name__)


def parse_value(text: str, current: Any) -> Any:
    """A CLI string as the type of the field's current value (bool, int, float, list or str)."""
    if isinstance(current, bool):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected true or false, got {text!r}")
    if isinstance(current, int):
        return int(text)
    if isinstance(current, float):
        return float(text)
    if isinstance(current, list):
        return [t for t in text.split(",") if t]
    return text


def apply_settings(cfg: PreprocessConfig, settings: list[str]) -> None:
    """`stage.field=value` overrides (e.g. landmarks.mode=static, matting.backend=rembg)."""
    for item in settings:
        key, sep, value = item.partition("=")
        stage, dot, field_name = key.partition(".")
        if not sep or not dot:
            raise ValueError(f"--set takes STAGE.FIELD=VALUE, got {item!r}")
        if stage not in load_stages():
            raise ValueError(f"--set {item}: unknown stage {stage!r}; known: {', '.join(load_stages())}")
        target = cfg.stage_config(stage)
        if field_name not in {f.name for f in dataclasses.fields(target)}:
            names = ", ".join(f.name for f in dataclasses.fields(target))
            raise ValueError(f"--set {item}: {stage} has no setting {field_name!r}; it has: {names}")
        _update(target, {field_name: parse_value(value, getattr(target, field_name))}, stage)
