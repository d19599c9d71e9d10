"""``verify``: the agent's side of the online verify (the work itself: hamirror/resync/verify.py).

The primary's agent checks the module is a live, up-to-date mirror, asks each of its mounts to
verify (and repair) its directory, waits for them, records the outcome in the event timeline and
answers with every out-of-sync range. The last outcome stays in each mount (and its journal):
``hamirror status`` and the metrics read it from there. On the secondary, the request goes to the
primary's agent through the peer's HTTP API when the cluster has one (``[http]`` with
``token_file`` and ``console_actions``), else the answer says where to run it.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from hamirror.cluster.states import NodeState
from hamirror.cluster.view import MirrorHealth

if TYPE_CHECKING:   # for the hints only: runtime imports this module
    from hamirror.agent.datapath import DataPath
    from hamirror.agent.module_runner import ModuleRunner, Observation
    from hamirror.agent.runtime import Agent

POLL = 0.2   # seconds between two looks at a running verify


def refusal(runner: ModuleRunner) -> str | None:
    """Why ``runner``'s module cannot be verified from this node now, or None (pure)."""
    peer = runner.peer
    here = runner.state.value
    there = peer.state.value if peer.alive and peer.state else "not heard"
    if peer.alive and peer.state is NodeState.SECOND and not peer.uptodate:
        there += " (not up to date)"
    mirror = runner.obs.mirror if runner.obs else MirrorHealth.NONE
    live = (runner.state is NodeState.PRIM and peer.alive and peer.state is NodeState.SECOND and peer.uptodate
            and mirror is MirrorHealth.STREAMING)
    if live:
        return None
    why = f"; its mirror is {mirror.value}" if runner.state is NodeState.PRIM and mirror is not MirrorHealth.STREAMING \
        else ""
    return (f"verify needs {runner.name} PRIM on one node and SECOND up to date on the other: it is {here} here "
            f"and {there} on the peer{why}; nothing was compared")


def merge(parts: list[dict | None], dirs: list[str]) -> dict | None:
    """One module's outcome from its directories' (each path prefixed by its directory when
    the module has several); None when no directory has one."""
    found = [(d, p) for d, p in zip(dirs, parts) if isinstance(p, dict)]
    if not found:
        return None

    def paths(d: str, items: list[dict]) -> list[dict]:
        return [{**i, "dir": d} for i in items]

    results = {p.get("result") for _, p in found}
    result = next((r for r in ("failed", "differences", "repaired") if r in results), "clean")
    return {
        "result": result,
        "finished_at": max(float(p.get("finished_at") or 0) for _, p in found),
        "seconds": max(float(p.get("seconds") or 0) for _, p in found),
        "differences": [x for d, p in found for x in paths(d, p.get("differences") or [])],
        "remaining": [x for d, p in found for x in paths(d, p.get("remaining") or [])],
        "difference_count": sum(int(p.get("difference_count") or 0) for _, p in found),
        "remaining_count": sum(int(p.get("remaining_count") or 0) for _, p in found),
        "out_of_sync_bytes": sum(int(p.get("out_of_sync_bytes") or 0) for _, p in found),
        "remaining_bytes": sum(int(p.get("remaining_bytes") or 0) for _, p in found),
        "repaired": any(p.get("repaired") for _, p in found),
        "error": "; ".join(f"{d}: {p['error']}" for d, p in found if p.get("error")) or None,
    }


def last_verify(obs: Observation | None) -> dict | None:
    """The last verify of this node's mounts (status: when, result, out-of-sync bytes)."""
    if obs is None or not obs.mounts:
        return None
    return merge([m.get("last_verify") if m else None for m in obs.mounts],
                 [str((m or {}).get("dir") or i) for i, m in enumerate(obs.mounts)])


def running(obs: Observation | None) -> dict | None:
    """A verify's progress while one runs on this node's mounts."""
    parts = [m["verify"] for m in (obs.mounts if obs else ()) if m and isinstance(m.get("verify"), dict)]
    if not parts:
        return None
    return {key: sum(int(p.get(key) or 0) for p in parts) for key in ("done_files", "done_bytes")}


def describe(outcome: dict) -> str:
    """One line for the timeline and the CLI."""
    n = outcome["difference_count"]
    if outcome["result"] == "clean":
        return f"verify: the copies are identical ({outcome['seconds']:.1f} s)"
    if outcome["result"] == "failed":
        return f"verify failed: {outcome.get('error')}"
    text = f"verify: {n} difference(s), {outcome['out_of_sync_bytes']} byte(s) out of sync"
    if outcome["repaired"]:
        left = outcome["remaining_count"]
        text += "; repaired, verified again: " + ("identical" if not left else
                                                   f"{left} difference(s) remain ({outcome['remaining_bytes']} bytes)")
    return text


def status_line(last: dict) -> str:
    """``verify 2026-12-04 14:55:01 UTC: ...`` for ``hamirror status``."""
    when = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(float(last.get("finished_at") or 0)))
    return f"{describe(last).replace('verify', f'verify {when}', 1)}"


async def answer(agent: Agent, runner: ModuleRunner, request: dict) -> dict:
    """The control answer to ``{"cmd": "verify", "module", "repair", "timeout"}`` (with the keys
    every module command answers: state, warnings, error)."""
    repair, timeout = bool(request.get("repair")), float(request.get("timeout") or 3600.0)
    if runner.state is NodeState.SECOND and runner.peer.is_primary:
        result = await forward(agent, runner.name, repair, timeout)
    else:
        result = await run(runner, repair, timeout)
    return {"state": runner.state.value, "warnings": [], **result}


async def forward(agent: Agent, module: str, repair: bool, timeout: float) -> dict:
    """From the secondary: the primary's agent runs it, asked through its HTTP API."""
    from hamirror.agent.console import peer

    if not peer.can_ask(agent.cluster.http):
        return {"ok": False, "error": f"{module} is primary on {agent.peer_node.name}: run 'hamirror verify "
                                      f"{module}' there (to run it from either node, give both nodes [http] with "
                                      "a listen address on the cluster network, token_file and console_actions = true)"}
    answer = await peer.ask(agent.cluster, {"module": module, "action": "verify-repair" if repair else "verify"},
                            timeout)
    error = answer.get("error")
    return {"ok": bool(answer.get("ok")), "verify": answer.get("verify"), "via": agent.peer_node.name,
            "error": f"{agent.peer_node.name}, the primary, answered: {error}" if error else None}


async def run(runner: ModuleRunner, repair: bool, timeout: float) -> dict:
    """Verify (and repair) every directory of ``runner``'s module on this node (the primary)."""
    problem = refusal(runner)
    if problem is not None:
        return {"ok": False, "error": problem}
    datapath = runner.datapath
    count = len(datapath.dirs)
    runner.emit("verify-start", f"verify{' --repair' if repair else ''} started on {count} directory(ies)",
                repair=repair)
    try:
        outcome = await _wait_all(datapath, repair, timeout)
    except Exception as exc:  # noqa: BLE001 - a mount that does not answer: said, recorded
        runner.emit("verify-end", f"verify failed: {exc}", result="failed", repair=repair)
        return {"ok": False, "error": f"verify failed: {exc}"}
    runner.emit("verify-end", describe(outcome), result=outcome["result"], repair=repair,
                out_of_sync_bytes=outcome["out_of_sync_bytes"], ranges=outcome["differences"][:100],
                remaining_bytes=outcome["remaining_bytes"])
    return {"ok": outcome["result"] != "failed", "verify": outcome, "error": outcome.get("error")}


async def _wait_all(datapath: DataPath, repair: bool, timeout: float) -> dict:
    count = len(datapath.dirs)
    jobs = []
    for i in range(count):
        started = await asyncio.to_thread(datapath.control, i, {"cmd": "verify", "repair": repair})
        jobs.append(int(started["id"]))
    deadline = time.monotonic() + timeout
    parts: list[dict | None] = [None] * count
    while any(p is None for p in parts):
        if time.monotonic() > deadline:
            raise TimeoutError(f"still running after {timeout:g} s (see 'hamirror status')")
        await asyncio.sleep(POLL)
        for i in range(count):
            if parts[i] is None:
                st = await asyncio.to_thread(datapath.control, i, {"cmd": "verify_status"})
                last = st.get("last_verify")
                if not st.get("verify_running") and isinstance(last, dict) and last.get("id") == jobs[i]:
                    parts[i] = last
    outcome = merge(parts, datapath.dirs)
    assert outcome is not None
    return outcome


def metric_families(modules: list[dict]) -> list[tuple[str, str, str, list[tuple[dict, int]]]]:
    """The verify's Prometheus families from the status document (name, type, help, samples)."""
    def value(m: dict, key: str) -> int:
        return int(float((m.get("last_verify") or {}).get(key) or 0))

    return [
        ("hamirror_verify_out_of_sync_bytes", "gauge",
         "Bytes out of sync found by the last verify on this node (before any repair).",
         [({"module": m["name"]}, value(m, "out_of_sync_bytes")) for m in modules]),
        ("hamirror_verify_remaining_bytes", "gauge",
         "Bytes still out of sync after the last verify (and its repair, if asked).",
         [({"module": m["name"]}, value(m, "remaining_bytes") if (m.get("last_verify") or {}).get("repaired")
           else value(m, "out_of_sync_bytes")) for m in modules]),
        ("hamirror_verify_differences", "gauge", "Differences (ranges and entries) the last verify found.",
         [({"module": m["name"]}, value(m, "difference_count")) for m in modules]),
        ("hamirror_verify_last_timestamp_seconds", "gauge", "When the last verify ended (Unix time; 0: never).",
         [({"module": m["name"]}, value(m, "finished_at")) for m in modules]),
        ("hamirror_verify_failed", "gauge", "1 when the last verify could not complete.",
         [({"module": m["name"]}, int((m.get("last_verify") or {}).get("result") == "failed")) for m in modules]),
    ]
