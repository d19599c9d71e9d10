"""``hamirror node standby|online``: keep every module off this node, like ``pcs node standby``.

Standby is a setting of the node, kept on disk (``STATE_DIR/standby.json``) so that it survives an
agent restart or a reboot. Going to standby swaps every module this node runs as primary to its
peer (a module whose peer is not an up-to-date SECOND stays, and the answer says why) and, from
then on, :mod:`hamirror.cluster.restraint` holds every automatic promotion here: no takeover, no
cold start, no return from WAIT. A swap an operator types and a forced ``prim`` still work.
``online`` lifts it; nothing moves back by itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os

from hamirror.agent.module_runner import ModuleRunner
from hamirror.durablefile import write_json
from hamirror.cluster.view import Command

log = logging.getLogger(__name__)

FILENAME = "standby.json"


def load(state_dir: str) -> bool:
    """The persisted setting; an unreadable file counts as *online* and is said in the log."""
    path = os.path.join(state_dir, FILENAME)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f).get("standby") is True
    except FileNotFoundError:
        return False
    except (OSError, ValueError, AttributeError) as exc:
        log.error("%s unreadable (%s): the node is online", path, exc)
        return False


def save(state_dir: str, on: bool) -> None:
    """Durably, before anything moves."""
    write_json(os.path.join(state_dir, FILENAME), {"standby": on})


async def apply(runners: dict[str, ModuleRunner], on: bool, timeout: float) -> dict[str, dict]:
    """Set every runner's flag; with ``on``, swap each primary away and wait (at most ``timeout``)
    for the outcomes. Per module: ``{"ok", "state", "moved", "error"}``."""
    for runner in runners.values():
        runner.standby = on
    waiting = {name: runner.submit(Command.SWAP) for name, runner in runners.items()
               if on and runner.state.is_primary}
    if waiting:
        await asyncio.wait(waiting.values(), timeout=timeout)
    result = {}
    for name, runner in runners.items():
        future = waiting.get(name)
        if future is None:
            result[name] = {"ok": True, "state": runner.state.value, "moved": False, "error": None}
        elif not future.done():
            result[name] = {"ok": False, "state": runner.state.value, "moved": False,
                            "error": f"the swap did not end within {timeout:g} s"}
        else:
            outcome = future.result()
            reason = outcome.error or "; ".join(outcome.warnings) or None
            result[name] = {"ok": outcome.ok, "state": outcome.state, "moved": outcome.ok,
                            "error": None if outcome.ok else reason}
    return result
