"""``lab status``: what exists of a lab, gathered from the system rather than trusted from lab.json."""

from __future__ import annotations

import json

import psutil

from hamirror.lab import agent, mountns, netns, partition, process, state
from hamirror.lab.naming import NODE_MOUNTS, NODES, SWITCH, LabPaths, hosts_for


def _command_line(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline())[:120]
    except psutil.Error:
        return "?"


def _host_lines(paths: LabPaths, host: str, recorded: state.LabState | None) -> list[str]:
    ns = paths.netns(host)
    if not netns.exists(ns):
        return [f"{host}: namespace {ns} missing"]
    cut = " [partitioned]" if host != SWITCH and partition.is_cut(paths, host) else ""
    lines = [f"{host}: netns {ns}, addresses {', '.join(netns.addresses(ns)) or '-'}{cut}"]
    if host in NODES:
        if mountns.exists(paths, host):
            targets = set(NODE_MOUNTS.values())
            mounted = sorted({t for _, t, _ in mountns.inside_mounts(paths, host) if t in targets})
            others = [f"{t} ({fs})" for _, t, fs in mountns.inside_mounts(paths, host) if fs.startswith("fuse")]
            lines.append(f"  mount ns {paths.mntns_file(host)}: "
                         f"{', '.join(mounted) or 'no node mounts'}")
            if others:
                lines.append(f"  fuse mounts: {', '.join(others)}")
        else:
            lines.append("  mount ns: none (node down; 'lab boot' makes one)")
    recorded_here = recorded.started_in(host) if recorded else []
    for pid in process.members(paths, host, recorded_here):
        lines.append(f"  pid {pid}: {_command_line(pid)}")
    return lines


def text(paths: LabPaths) -> str:
    """A human-readable picture of the lab; agents' own status is appended when they run."""
    recorded = state.load(paths)
    hosts = recorded.hosts if recorded else hosts_for(witness=True, etcd=True)
    header = f"lab {paths.root} (prefix {paths.prefix}): " + ("recorded in lab.json" if recorded else "no lab.json")
    lines = [header]
    if recorded and recorded.partitions:
        lines.append("partitions: " + ", ".join("-".join(pair) for pair in recorded.partitions))
    for host in (SWITCH,) + hosts:
        lines += _host_lines(paths, host, recorded)
    for node in NODES:
        agents = [p for p in (recorded.started_in(node) if recorded else []) if p.name == agent.AGENT]
        if any(process.is_alive(a) for a in agents):
            lines.append(f"{node} hamirror status: {json.dumps(agent.node_status(paths, node))}")
    return "\n".join(lines)
