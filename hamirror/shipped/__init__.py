"""Files the package ships for a server, and where ``hamirror install`` puts them.

They live inside the package (package data, read with importlib.resources) so that a wheel
installed with pip carries them: a server needs no checkout. This module is only the list; the
installing is ``hamirror.cli.install``.
"""

from __future__ import annotations

import dataclasses
from importlib import resources


@dataclasses.dataclass(frozen=True)
class Shipped:
    """One shipped file: its name in this package, its path on the server (below the root), its mode."""

    name: str
    target: str
    mode: int = 0o644


FILES = (
    Shipped("hamirror.service", "etc/systemd/system/hamirror.service"),
    Shipped("hamirror-witness.service", "etc/systemd/system/hamirror-witness.service"),
    Shipped("hamirror.logrotate", "etc/logrotate.d/hamirror"),
    Shipped("hamirror-alerts.yml", "etc/hamirror/prometheus/hamirror-alerts.yml"),
)

# Directories made when missing (an existing one keeps its mode and owner). The keys directory
# holds the node's CURVE secret key: root only. The modules directory stays readable: the shipped
# PostgreSQL module has the server, running as postgres, read its configuration files there.
DIRECTORIES = (
    ("etc/hamirror", 0o755),
    ("etc/hamirror/keys", 0o700),
    ("etc/hamirror/modules", 0o755),
    ("etc/hamirror/prometheus", 0o755),
)

# Where the unit files expect the command (ExecStart); ``hamirror install`` links it when free.
COMMAND_LINK = "usr/local/bin/hamirror"


def read(name: str) -> str:
    """The text of a shipped file, from the installed package."""
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")
