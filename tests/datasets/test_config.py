"""datasets/config.py: one value grammar for --set, TOML strings and options, one validation hook."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from datasets.config import apply_assignments, parse_value, pick_preset, update
from datasets.errors import ConfigError


@dataclass
class Render:
    size: int = 64
    out: int = 64  # must be size or twice it
    views: list[str] = field(default_factory=list)
    grid: tuple[int, ...] = (2, 2)
    scale: float | None = None
    fast: bool = False

    def __post_init__(self):
        if self.out not in (self.size, 2 * self.size):
            raise ValueError("out must equal size or twice it")


@pytest.mark.parametrize("text, hint, value", [
    ("[222200036, 222200037]", list[str], ["222200036", "222200037"]),  # the README's list form
    ("a,b", list[str], ["a", "b"]),
    ('["a", "b"]', list[str], ["a", "b"]),
    ("[]", list[str], []),
    ("[4, 4, 8]", tuple[int, ...], (4, 4, 8)),
    ("1e-4", float, 1e-4),
    ("yes", bool, True),
    ("off", bool, False),
    ("none", float | None, None),
    ("0.5", float | None, 0.5),
    ('{"anon": false}', dict, {"anon": False}),
])
def test_the_value_grammar(text, hint, value):
    assert parse_value(text, hint, "x") == value


@pytest.mark.parametrize("text, hint, message", [
    ("", int, "empty value"),
    ("seven", int, "x"),
    ("maybe", bool, "x"),
    ("[1, two]", tuple[int, ...], "x"),
    ("[1, 2]", dict, "x"),
])
def test_a_bad_value_is_a_config_error_naming_the_setting(text, hint, message):
    with pytest.raises(ConfigError, match=message):
        parse_value(text, hint, "x")


def test_assignments_to_one_section_are_validated_together():
    cfg = Render()
    apply_assignments(["render.size=128", "render.out=256", "fast=on"], {"render": cfg}, ["render"],
                      default="render")
    assert (cfg.size, cfg.out, cfg.fast) == (128, 256, True)
    with pytest.raises(ConfigError, match="out must equal size"):
        apply_assignments(["render.out=100"], {"render": cfg}, ["render"])
    with pytest.raises(ConfigError, match="unknown section 'camera'"):
        apply_assignments(["camera.size=1"], {"render": cfg}, ["render"])
    with pytest.raises(ConfigError, match="SECTION.FIELD=VALUE"):
        apply_assignments(["size"], {"render": cfg}, ["render"])


def test_update_names_an_unknown_field_and_converts_toml_values():
    cfg = Render()
    update(cfg, {"views": ["a"], "grid": [3, 3], "scale": 2}, "render")
    assert cfg.views == ["a"] and cfg.grid == (3, 3) and cfg.scale == 2.0
    with pytest.raises(ConfigError, match="unknown setting render.colour"):
        update(cfg, {"colour": 1}, "render")


def test_presets_are_picked_by_name_or_refused():
    presets = {"small": lambda: Render(size=32, out=32)}
    assert pick_preset(presets, "small", "render").size == 32
    with pytest.raises(ConfigError, match="small"):
        pick_preset(presets, "huge", "render")
