"""Measurements on a running lab, shared by ``lab demo`` and ``scripts/bench/failover.py``.

failover: power loss of the primary -> the first write acknowledged through the VIP (by the
survivor); failback: boot of the lost node -> it is SECOND up to date and the primary sees it as
SECOND (the mirror is synchronous again); swap: the longest time the client got no
acknowledgement while ``hamirror swap`` ran.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from hamirror.lab import agent, control, process
from hamirror.lab.kvclient import Writer
from hamirror.lab.naming import LabPaths
from hamirror.lab.shell import LabError

MODULE = "demo"


def module_status(paths: LabPaths, node: str, name: str = MODULE) -> dict | None:
    """The module's entry of ``hamirror status --json`` in node, or None while the node cannot answer."""
    doc = agent.node_status(paths, node)
    return next((m for m in (doc or {}).get("modules", []) if isinstance(m, dict) and m.get("name") == name), None)


def status_text(paths: LabPaths, node: str) -> str:
    """``hamirror status`` (the human table) as the node prints it."""
    try:
        result = process.exec_in(paths, node, [sys.executable, "-m", "hamirror", "status"], capture=True, timeout=20)
    except subprocess.TimeoutExpired:
        return f"{node}: status timed out"
    return (result.stdout or result.stderr).rstrip()


def wait_module(paths: LabPaths, node: str, predicate: Callable[[dict], bool], what: str, timeout: float = 60.0,
                each: Callable[[dict], None] | None = None, poll: float = 0.2) -> dict:
    """Poll node's module status until predicate holds (each(status) is called on every answer)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = module_status(paths, node)
        if last is not None:
            if each is not None:
                each(last)
            if predicate(last):
                return last
        if time.monotonic() > deadline:
            raise LabError(f"{node}: {what} not reached in {timeout:.0f} s (last status: {last})\n"
                           f"last lines of {node}'s agent log:\n{agent.log_tail(paths, node)}")
        time.sleep(poll)


def is_prim_with_second(m: dict) -> bool:
    return m["state"] == "PRIM" and m.get("peer_state") == "SECOND" and not m.get("busy")


def is_second_uptodate(m: dict) -> bool:
    return m["state"] == "SECOND" and m.get("uptodate") is True


def is_alone(m: dict) -> bool:
    return m["state"] == "ALONE" and not m.get("busy")


def failover(paths: LabPaths, writer: Writer, victim: str, survivor: str, timeout: float = 60.0) -> float:
    """Kill victim (power loss); seconds from the kill to the first write acknowledged after it.

    The clock starts once every process of the victim is gone: a request sent while the kill was
    still under way could have been answered by the victim itself.
    """
    control.kill(paths, victim)
    killed_at = time.monotonic()
    ack = writer.first_ack_after(killed_at, timeout)
    wait_module(paths, survivor, is_alone, "ALONE", timeout)
    return ack.done - killed_at


@dataclass
class Failback:
    seconds: float
    samples: list[dict]          # resync progress seen on the primary (its status's "resync" entries)
    states: list[str]            # the booted node's successive states
    last_resync: dict | None = None   # what the primary's finished resync copied (its "last_resync")


def failback(paths: LabPaths, node: str, primary: str, timeout: float = 120.0,
             progress: Callable[[dict], None] | None = None) -> Failback:
    """Boot node; seconds until it is SECOND up to date and primary is PRIM with a SECOND peer.

    The resync is driven by the primary, so its progress is read there while node is polled."""
    samples: list[dict] = []
    states: list[str] = []

    def seen(m: dict) -> None:
        if not states or states[-1] != m["state"]:
            states.append(m["state"])
        resync = (module_status(paths, primary) or {}).get("resync")
        if resync and (not samples or samples[-1].get("done_bytes") != resync.get("done_bytes")):
            samples.append(resync)
            if progress is not None:
                progress(resync)

    booted_at = time.monotonic()
    control.boot(paths, node)
    wait_module(paths, node, is_second_uptodate, "SECOND up to date", timeout, each=seen, poll=0.05)
    wait_module(paths, primary, is_prim_with_second, "PRIM with a SECOND peer", timeout)
    seconds = time.monotonic() - booted_at
    return Failback(seconds, samples, states, (module_status(paths, primary) or {}).get("last_resync"))


@dataclass
class Swap:
    seconds: float               # the command and the wait for the new PRIM/SECOND
    interruption: float          # the longest time without an acknowledged write meanwhile
    failed: int                  # failed client requests meanwhile


def swap(paths: LabPaths, writer: Writer, primary: str, secondary: str, timeout: float = 120.0,
         settle: float = 1.0) -> Swap:
    """``hamirror swap demo`` on primary; measured from the client's side."""
    start = time.monotonic()
    result = process.exec_in(paths, primary, [sys.executable, "-m", "hamirror", "swap", MODULE],
                             capture=True, timeout=timeout)
    if result.returncode != 0:
        raise LabError(f"hamirror swap {MODULE} on {primary} failed ({result.returncode}): {result.stderr.strip()}")
    wait_module(paths, secondary, is_prim_with_second, "PRIM with a SECOND peer", timeout)
    wait_module(paths, primary, is_second_uptodate, "SECOND up to date", timeout)
    done = time.monotonic()
    writer.first_ack_after(done, timeout)
    time.sleep(settle)
    end = time.monotonic()
    return Swap(done - start, writer.largest_gap(start, end), writer.failed_between(start, end))
