"""One configuration mechanism for every command.

A component's settings are one dataclass (a comment per field) whose `__post_init__` validates it: the one
validation hook, run when a config is made and again after every change made here. Presets are named
functions in a table per component (`pick_preset`). A command builds its configs in one order: dataclass
defaults < preset < TOML file < its own options < `--set` assignments.

The value grammar, the same for `--set`, TOML strings and command options, by the field's type:

    bool          true false yes no on off 1 0
    int, float    7   1e-4
    str           as written (empty allowed: "no path")
    list, tuple   a,b,c  or  [a, b, c]  (quotes around items are dropped; [] or nothing: empty)
    dict          a JSON object: {"anon": false}
    X | None      none / null (or nothing) for None, else X's grammar

`--set` takes SECTION.FIELD=VALUE (a command with a default section also takes FIELD=VALUE for it).
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from datasets.errors import ConfigError

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def field_types(obj: Any) -> dict[str, Any]:
    """{field: type} of a config dataclass (its annotations resolved)."""
    return typing.get_type_hints(type(obj))


def parse_value(text: str, hint: Any, where: str) -> Any:
    """A command-line or TOML string as a value of type `hint`; ConfigError naming `where` when it is not."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and text.strip().lower() in ("", "none", "null"):
            return None
        return parse_value(text, next(a for a in args if a is not type(None)), where)
    try:
        if hint is bool:
            word = text.strip().lower()
            if word not in _TRUE + _FALSE:
                raise ValueError
            return word in _TRUE
        if hint in (int, float):
            if not text.strip():
                raise ConfigError(f"{where}: empty value, expected {'an integer' if hint is int else 'a number'}")
            return hint(text.strip())
        if hint is str or hint is Any:
            return text
        if origin in (list, tuple) or hint in (list, tuple):
            body = text.strip()
            if body.startswith("[") and body.endswith("]"):
                body = body[1:-1]
            element = args[0] if args else str
            items = [_unquote(t.strip()) for t in body.split(",")]
            values = [parse_value(t, element, where) for t in items if t]
            return tuple(values) if (origin or hint) is tuple else values
        if origin is dict or hint is dict:
            value = json.loads(text)
            if not isinstance(value, dict):
                raise ValueError
            return value
    except ConfigError:
        raise
    except (ValueError, json.JSONDecodeError):
        raise ConfigError(f"{where}: {text!r} is not {_describe(hint)}") from None
    return text


def _unquote(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"" else text


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if hint is bool:
        return "true or false"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if origin in (list, tuple) or hint in (list, tuple):
        return "a list (a,b or [a, b])"
    if origin is dict or hint is dict:
        return "a JSON object"
    return f"a {getattr(hint, '__name__', hint)}"


def convert(value: Any, hint: Any, where: str) -> Any:
    """A value from TOML or Python as type `hint` (strings go through the grammar)."""
    if isinstance(value, str):
        return parse_value(value, hint, where)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return convert(value, next(a for a in args if a is not type(None)), where)
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif origin in (list, tuple) or hint in (list, tuple):
        ok = isinstance(value, (list, tuple))
        if ok:
            element = args[0] if args else Any
            items = [convert(v, element, where) for v in value] if element is not Any else list(value)
            value = tuple(items) if (origin or hint) is tuple else items
    elif origin is dict or hint is dict:
        ok = isinstance(value, dict)
    else:
        ok = True
    if not ok:
        raise ConfigError(f"{where}: {value!r} is not {_describe(hint)}")
    return value


def validate(obj: Any, where: str = "") -> None:
    """Run the config's validation hook (its __post_init__); a ValueError becomes a ConfigError."""
    post = getattr(obj, "__post_init__", None)
    if post is None:
        return
    try:
        post()
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(f"{where}: {e}" if where else str(e)) from None


def update(obj: Any, values: Mapping[str, Any], where: str) -> None:
    """Set fields of a config dataclass from `values` (converted to their types), then validate it."""
    hints = field_types(obj)
    names = [f.name for f in dataclasses.fields(obj)]
    for key, value in values.items():
        if key not in names:
            raise ConfigError(f"unknown setting {where}.{key}; {where} has: {', '.join(names)}")
        setattr(obj, key, convert(value, hints[key], f"{where}.{key}"))
    validate(obj, where)


def override(obj: Any, values: Mapping[str, Any], where: str | None = None) -> Any:
    """A copy of a config dataclass with `values` set (converted, validated)."""
    out = dataclasses.replace(obj)
    update(out, values, where or type(obj).__name__)
    return out


def parse_assignment(item: str, where: str = "--set") -> tuple[str | None, str, str]:
    """'SECTION.FIELD=VALUE' (or 'FIELD=VALUE') -> (section or None, field, value text)."""
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"{where} takes SECTION.FIELD=VALUE, got {item!r}")
    section, dot, name = key.partition(".")
    return (section, name, value) if dot else (None, key, value)


def apply_assignments(items: list[str], sections: Mapping[str, Any] | Callable[[str], Any],
                      known: list[str], default: str | None = None, where: str = "--set") -> None:
    """Apply `--set` assignments to the config of each section (a mapping, or a lookup returning None for
    an unknown name); FIELD=VALUE goes to `default` when there is one. A section is validated once, after
    all of its assignments (fields that must agree can be changed together)."""
    lookup = sections.get if isinstance(sections, Mapping) else sections
    grouped: dict[str, dict[str, str]] = {}
    for item in items:
        section, name, value = parse_assignment(item, where)
        section = section or default
        if section is None:
            raise ConfigError(f"{where} {item}: say which section, SECTION.FIELD=VALUE; sections: {', '.join(known)}")
        if lookup(section) is None:
            raise ConfigError(f"{where} {item}: unknown section {section!r}; sections: {', '.join(known)}")
        grouped.setdefault(section, {})[name] = value
    for section, values in grouped.items():
        update(lookup(section), values, section)


def read_toml(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read the config file {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None


def apply_tables(doc: Mapping[str, Any], sections: Mapping[str, Any] | Callable[[str], Any], known: list[str],
                 where: str) -> None:
    """Apply the tables of a TOML document ({section: {field: value}}) to the sections' configs."""
    lookup = sections.get if isinstance(sections, Mapping) else sections
    for name, table in doc.items():
        target = lookup(name)
        if target is None or not isinstance(table, dict):
            raise ConfigError(f"{where}: unknown table [{name}]; tables: {', '.join(f'[{k}]' for k in known)}")
        update(target, table, f"[{name}]")


def parse_pairs(items: list[str], where: str) -> dict[str, Any]:
    """KEY=VALUE options (e.g. fsspec storage options): values as JSON where they parse (numbers, true,
    false, objects), else as text."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{where} takes KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def pick_preset(presets: Mapping[str, Callable[[], Any]], name: str, what: str) -> Any:
    """A fresh config of preset `name` from a component's table."""
    if name not in presets:
        raise ConfigError(f"{what} has no preset {name!r}; choose one of {', '.join(sorted(presets))}")
    return presets[name]()


def as_dict(config: Any) -> dict:
    return dataclasses.asdict(config)
