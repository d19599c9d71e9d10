"""Starting the nodes' agents and waiting until the cluster is mirrored (design §4 status JSON)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable

from hamirror.lab import nodeconfig, process
from hamirror.lab.naming import ADDRESSES, WITNESS, WITNESS_PORT, LabPaths
from hamirror.lab.shell import LabError
from hamirror.lab.state import Started

AGENT = "agent"
AGENT_COMMAND = [sys.executable, "-m", "hamirror", "agent"]


def start(paths: LabPaths, node: str) -> Started:
    return process.start(paths, node, AGENT, AGENT_COMMAND)


def start_witness(paths: LabPaths, lease: int | None = None) -> Started:
    """``hamirror witness`` in the witness host, with the config ``nodeconfig`` wrote for it
    (``lease``: its ``--timeout``, else the default)."""
    config = os.path.join(paths.node_dir(WITNESS, "etc"), "hamirror.toml")
    state = os.path.join(paths.node_dir(WITNESS, "state"), "witness-lease.json")
    return process.start(paths, WITNESS, WITNESS, [sys.executable, "-m", "hamirror", "witness", "--bind",
                                                    f"{ADDRESSES[WITNESS]}:{WITNESS_PORT}", "-c", config,
                                                    "--state", state,
                                                    *(["--timeout", str(lease)] if lease else [])])


def node_status(paths: LabPaths, node: str, timeout: float = 10.0) -> dict | None:
    """``hamirror status --json`` inside node, or None while it cannot answer."""
    try:
        result = process.exec_in(paths, node, [sys.executable, "-m", "hamirror", "status", "--json"],
                                 capture=True, timeout=timeout)
    except (subprocess.TimeoutExpired, LabError):
        return None
    if result.returncode != 0:
        return None
    try:
        data = json.loads(result.stdout)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _module(status: dict | None, name: str) -> dict | None:
    for entry in (status or {}).get("modules", []) or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            return entry
    return None


def not_ready(primary: dict | None, secondary: dict | None, modules: list[str]) -> str | None:
    """Why the cluster is not yet mirrored (None once every module is PRIM / SECOND up to date)."""
    for name in modules:
        prim, second = _module(primary, name), _module(secondary, name)
        if prim is None or second is None:
            return f"module {name}: not reported yet by {'node1' if prim is None else 'node2'}"
        if prim.get("state") != "PRIM":
            return f"module {name}: node1 is {prim.get('state')}, waiting for PRIM"
        if second.get("state") != "SECOND" or second.get("uptodate") is not True:
            return f"module {name}: node2 is {second.get('state')} (uptodate={second.get('uptodate')}), waiting for SECOND up to date"
    return None


def log_tail(paths: LabPaths, node: str, lines: int = 15) -> str:
    try:
        with open(paths.log_file(node, AGENT), encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:]).rstrip()
    except OSError:
        return "(no log)"


def wait_ready(paths: LabPaths, agents: list[Started], modules: list[str], timeout: float,
               status: Callable[[LabPaths, str], dict | None] = node_status, poll: float = 0.5) -> None:
    """Return once node1 is PRIM and node2 SECOND up to date for every module; raise with the logs otherwise.

    ``modules`` are what ``lab up --module`` got (names or folders); the agents report each module
    under its configured name, which a folder need not carry."""
    modules = [nodeconfig.module_name(module) for module in modules]
    deadline = time.monotonic() + timeout
    reason = "no status yet"
    while True:
        for agent in agents:
            if not process.is_alive(agent):
                raise LabError(f"the agent on {agent.host} exited; last lines of {paths.log_file(agent.host, AGENT)}:\n"
                               + log_tail(paths, agent.host))
        reason = not_ready(status(paths, "node1"), status(paths, "node2"), modules)
        if reason is None:
            return
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {a.host} ({paths.log_file(a.host, AGENT)}):\n{log_tail(paths, a.host)}" for a in agents)
            raise LabError(f"cluster not ready after {timeout:.0f} s: {reason}\n{tails}")
        time.sleep(poll)
