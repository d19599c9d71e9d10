"""The ``hamirror status`` document (design §4), built from the runners' last observation.

JSON: ``{"node", "cluster", "peer": {...}, "modules": [{"name", "state", "peer_state", "uptodate",
"resync": {"done_bytes", "total_bytes", ...}|null, "config": {...}, ...}], "versions": {...},
"config": {...}}`` (``versions`` and ``config``: how this node agrees with its peer,
:mod:`hamirror.agent.agreement`); the human table is rendered from the same document by the
CLI, so both always agree.
"""

from __future__ import annotations

from hamirror.agent.journal_info import to_wire
from hamirror.agent import verify
from hamirror.agent.agreement import status_lines
from hamirror.agent.module_runner import ModuleRunner
from hamirror.resync import failures

PROGRESS_KEYS = ("done_bytes", "total_bytes", "done_files", "total_files", "rate", "eta")


def resync_progress(runner: ModuleRunner) -> dict | None:
    """Sum of the resync progress of every directory (sender's mounts or receiver), or None."""
    obs = runner.obs
    if obs is None:
        return None
    parts = [s["resync"] for s in (*obs.mounts, *obs.receivers) if s and isinstance(s.get("resync"), dict)]
    if not parts:
        return None
    total = {key: 0 for key in ("done_bytes", "total_bytes", "done_files", "total_files")}
    for part in parts:
        for key in total:
            total[key] += int(part.get(key) or 0)
    total["rate"] = sum(float(p.get("rate") or 0) for p in parts)
    etas = [p.get("eta") for p in parts if p.get("eta") is not None]
    total["eta"] = max(etas) if etas else None
    return total


def last_resync(runner: ModuleRunner) -> dict | None:
    """What the last completed resync of this node's mounts copied (summed over directories)."""
    return runner.obs.last_resync if runner.obs else None


def resync_failures(runner: ModuleRunner) -> dict | None:
    """The mounts' failures in a row (the directory with the most), with ``alarm`` set from
    ``failures.ALARM_AFTER`` on: ``{"count", "error", "since", "last", "alarm"}`` or None."""
    obs = runner.obs
    record = failures.worst([m.get("resync_failures") for m in obs.mounts if m]) if obs else None
    return {**record, "alarm": failures.is_alarm(record)} if record else None


def module_status(runner: ModuleRunner) -> dict:
    peer = runner.peer
    obs = runner.obs
    return {
        "name": runner.name,
        "state": runner.state.value,
        "peer_state": peer.state.value if peer.alive and peer.state else None,
        "uptodate": bool(obs and obs.uptodate),
        "resync": resync_progress(runner),
        "last_resync": last_resync(runner),
        "verify": verify.running(obs),            # progress of a verify running here
        "last_verify": verify.last_verify(obs),   # when, result, out-of-sync bytes and ranges
        "resync_failures": resync_failures(runner),
        "peer_alive": peer.alive,
        "peer_uptodate": peer.uptodate if peer.alive else None,
        "relation": runner.relation.value,
        "generation": to_wire(obs.history) if obs else None,
        "peer_generation": runner.peer_generation(),
        "changed_paths": obs.changed if obs else 0,
        "swap": runner.swap.value,
        "busy": runner.task is not None,
        "serving": runner.serving,          # the health check's answer: follows the actions, not the state
        "target": runner.transition[0].value if runner.transition else None,   # where a running task leads
        "mounted": bool(obs and obs.mounted),
        # What the mounts really do (streaming, syncing, alone, fenced, refused, dead), never hidden
        # behind the state: ALONE or FENCED under PRIM is an alarm the decision acts on.
        "mirror": obs.mirror.value if obs and runner.state.is_primary else None,
        "fenced_since": min((m["fenced_since"] for m in obs.mounts if m and m.get("fenced_since")), default=None)
        if obs else None,
        "receiving": bool(obs and obs.receivers_alive),
        "checker": runner.checkers.failure,
        "restarts": runner.restarts_in_window(),
        # Automatic actions suspended by the operator; the failover count and whether failovers
        # are held back (flap damping, until `hamirror clear`).
        "maintenance": runner.maintenance,
        "failovers": failovers(runner),
        "warnings": list(runner.warnings),
        "error": runner.error,
    }


def failovers(runner: ModuleRunner) -> dict:
    health = runner.failovers()
    return {"recent": health.recent, "max": health.max, "window": health.window, "damped": health.damped}


def state_label(m: dict) -> str:
    """``PRIM``, ``PRIM -> SECOND`` while a task leads elsewhere, ``PRIM (busy)`` while one runs."""
    if m.get("target") and m["target"] != m["state"]:
        return f"{m['state']} -> {m['target']}"
    return m["state"] + (" (busy)" if m.get("busy") else "")


def render_table(doc: dict) -> str:
    """The human form of the status document."""
    peer = doc.get("peer") or {}
    lines = [f"node {doc.get('node')} (cluster {doc.get('cluster')}), peer {peer.get('name')}: "
             f"{'alive' if peer.get('alive') else 'not heard'}"
             + ("; this node is in STANDBY (`hamirror node online` to allow the service here)"
                if doc.get("standby") else "")]
    header = ("MODULE", "STATE", "PEER", "UPTODATE", "RESYNC")
    rows = []
    for m in doc.get("modules", []):
        resync = m.get("resync")
        progress = "-"
        if resync:
            total = resync.get("total_bytes") or 0
            pct = 100.0 * resync.get("done_bytes", 0) / total if total else 0.0
            progress = f"{pct:.0f}% of {total} B"
        rows.append((m["name"], state_label(m) + (" [maintenance]" if m.get("maintenance") else "")
                     + (" [damped]" if (m.get("failovers") or {}).get("damped") else ""), m.get("peer_state") or "-",
                     "yes" if m.get("uptodate") else "no", progress))
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        lines.append("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())
    lines.extend(status_lines(doc))     # configuration or release differences with the peer
    for m in doc.get("modules", []):
        if m.get("relation") == "diverged":
            lines.append(
                f"{m['name']}: SPLIT BRAIN: both nodes changed the data on their own. Here: generation "
                f"{(m.get('generation') or '-').split(',')[0]}, {m.get('changed_paths', 0)} path(s) changed; "
                f"peer: generation {(m.get('peer_generation') or '-').split(',')[0]}. Nothing is copied until "
                f"you choose: run 'hamirror second {m['name']}' on the node whose changes are to be set aside "
                f"(they are kept inside each directory, in .hamirror-conflicts/STAMP/).")
        if m.get("maintenance"):
            lines.append(f"{m['name']}: MAINTENANCE: checkers and automatic failover suspended, the application "
                         f"is left alone ('hamirror maintenance off {m['name']}' to resume)")
        if (m.get("failovers") or {}).get("damped"):
            f = m["failovers"]
            lines.append(f"{m['name']}: FAILOVER DAMPED: {f['recent']} failover(s) within {f['window']:g} s (limit "
                         f"{f['max']}): failovers held back ('hamirror clear {m['name']}' to allow them again)")
        if m.get("verify"):
            lines.append(f"{m['name']}: verify running: {m['verify']['done_files']} file(s), "
                         f"{m['verify']['done_bytes']} byte(s) compared so far")
        if m.get("last_verify"):
            lines.append(f"{m['name']}: last {verify.status_line(m['last_verify'])}")
        failed = m.get("resync_failures") or {}
        if failed.get("alarm"):
            lines.append(f"{m['name']}: ALARM: the resync to the peer failed {failed['count']} times in a row "
                         f"the same way, the peer has no up-to-date copy: {failed.get('error')}")
        for warning in m.get("warnings", []):
            lines.append(f"{m['name']}: warning: {warning}")
        if m.get("error"):
            lines.append(f"{m['name']}: error: {m['error']}")
    return "\n".join(lines)
