"""The one base of every error a user can fix: bad input, a missing weight file, a stale or unknown setting,
a corrupt or missing shard. The command line reports these in one line and exits 2; anything else is a
bug and keeps its traceback."""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix; its message says what and how."""


class ConfigError(UserError, ValueError):
    """A setting that does not exist, or a value that does not parse or is not allowed."""
