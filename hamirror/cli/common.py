"""Helpers shared by the command modules, and the exit codes every command uses.

Exit codes (docs/admin-guide.md, "Exit codes"), so that a script can tell a refusal from a typo
from a stopped agent without parsing messages.
"""

from __future__ import annotations

import argparse
import json
import os

OK = 0
FAILED = 1          # the operation failed or was refused (by the agent, a script, the system)
USAGE = 2           # bad command line or configuration, unknown module (argparse's own code is 2 too)
DIFFERENT = 3       # verify: the two copies differ
UNREACHABLE = 4     # no agent to ask: not running, or its control socket cannot be reached (not root)
TIMEOUT = 5         # the agent did not answer in time
INTERRUPTED = 130   # Ctrl-C


class CommandError(Exception):
    """An error meant for the operator: printed as one line, without a traceback."""

    def __init__(self, message: str, exit_code: int = FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def default_keys_dir() -> str:
    """Where ``keygen`` writes and the link reads CURVE keys unless told otherwise."""
    return os.environ.get("HAMIRROR_KEYS", "/etc/hamirror/keys")


def add_json(parser: argparse.ArgumentParser) -> None:
    """The ``--json`` switch of a command that reports: one JSON document on stdout instead of text."""
    parser.add_argument("--json", action="store_true", help="machine-readable output (one JSON document)")


def print_json(doc: object) -> None:
    print(json.dumps(doc, indent=1, sort_keys=True))
