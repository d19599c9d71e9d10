"""The lab's record on disk (``ROOT/lab.json``): what was asked for and which processes were started.

It is written before each resource is created, so a crash in the middle of ``up`` leaves enough
behind for ``down``; ``down`` also works without it because every name derives from the root.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

from hamirror import durablefile
from hamirror.lab.naming import LabPaths, hosts_for


@dataclass
class Started:
    """A process the lab started: the pid plus its start time, to never kill a reused pid."""

    host: str
    name: str
    pid: int
    create_time: float
    command: list[str]
    started: float | None = None      # seconds since boot (processes.boot_start); None: an older lab's record


@dataclass
class LabState:
    root: str
    prefix: str
    witness: bool = False
    etcd: bool = False
    lease: int | None = None      # the quorum's lease, seconds (witness --timeout or etcd_ttl); None: default
    modules: list[str] = field(default_factory=list)
    processes: list[Started] = field(default_factory=list)
    partitions: list[list[str]] = field(default_factory=list)

    @property
    def hosts(self) -> tuple[str, ...]:
        return hosts_for(self.witness, self.etcd)

    def started_in(self, host: str) -> list[Started]:
        return [p for p in self.processes if p.host == host]

    def forget(self, host: str) -> None:
        self.processes = [p for p in self.processes if p.host != host]


def load(paths: LabPaths) -> LabState | None:
    """The recorded state, or None when there is none (or it is unreadable after a crash)."""
    try:
        with open(paths.state_file, encoding="utf-8") as f:
            data = json.load(f)
        data["processes"] = [Started(**p) for p in data.get("processes", [])]
        return LabState(**data)
    except (OSError, ValueError, TypeError):
        return None


def save(paths: LabPaths, state: LabState) -> None:
    """Write atomically and durably so a crash never leaves half a file."""
    os.makedirs(paths.root, exist_ok=True)
    durablefile.replace(paths.state_file, json.dumps(asdict(state), indent=2), 0o666)


def remove(paths: LabPaths) -> None:
    """The record and any temporary a crash left beside it (the lab is down: no writer is left;
    ``lab.json.tmp``: an older version's)."""
    for path in (paths.state_file, paths.state_file + ".tmp", *durablefile.leftovers(paths.state_file)):
        if os.path.exists(path):
            os.unlink(path)
