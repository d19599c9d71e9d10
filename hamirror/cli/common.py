"""Helpers shared by the command modules."""

from __future__ import annotations

import os


class CommandError(Exception):
    """An error meant for the operator: printed as one line, without a traceback."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def default_keys_dir() -> str:
    """Where ``keygen`` writes and the link reads CURVE keys unless told otherwise."""
    return os.environ.get("HAMIRROR_KEYS", "/etc/hamirror/keys")
