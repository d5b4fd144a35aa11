"""Validation of subject and sequence names before they become store paths or file names."""

from __future__ import annotations

import re

from datasets.errors import UserError

# Letters, digits and _ + = - . ; no leading dot, no separators, at most 128 characters.
# YouTube ids (VFHQ) may start with '-' or '_'; NeRSemble sequences use '+' (EMO-1-shout+laugh).
_NAME = re.compile(r"[A-Za-z0-9_+=-][A-Za-z0-9_.+=-]{0,127}")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.+=-]")


class InvalidNameError(UserError, ValueError):
    """A subject or sequence name that cannot safely become a path component."""


def validate_name(name: str, what: str = "name") -> str:
    """Return `name` unchanged if it is a safe single path component, else raise InvalidNameError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidNameError(
            f"refused {what} {name!r}: names must be 1-128 characters of letters, digits and _ + = - . "
            "and must not start with '.' (no '/', '..' or spaces)"
        )
    return name


def sanitize_name(text: str, fallback: str = "clip") -> str:
    """Turn free text (a file stem) into a valid name: unsafe characters become '_'."""
    name = _UNSAFE.sub("_", text).lstrip(".")[:128]
    return name if name and _NAME.fullmatch(name) else fallback


def clip_key(subject: str, sequence: str) -> str:
    """The store path of a clip group: '<subject>/<sequence>' (both validated)."""
    return f"{validate_name(subject, 'subject')}/{validate_name(sequence, 'sequence')}"


def clip_subject(key: str) -> str:
    """The subject of a clip key 'subject/sequence'."""
    return split_clip_key(key)[0]


def split_clip_key(key: str) -> tuple[str, str]:
    parts = key.split("/")
    if len(parts) != 2:
        raise InvalidNameError(f"a clip is written 'subject/sequence', got {key!r}")
    return validate_name(parts[0], "subject"), validate_name(parts[1], "sequence")
