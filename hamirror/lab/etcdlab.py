"""``hamirror lab up --etcd``: a three-member etcd cluster, one member per host (network namespace
only, like the witness), that the nodes use as their quorum (``[quorum] etcd``).

Members listen on their host's address (198.18.0.251-253, ports 2379 for clients and 2380 between
members), keep their data in ``ROOT/etcdN/data`` and log to ``ROOT/etcdN/log/etcd.log``; ``lab kill
etcdN`` kills one, ``lab boot etcdN`` starts it again, ``lab down`` kills all. etcd's default timing (heartbeat 100 ms, election 1 s).
``--pre-vote`` (etcd 3.5's default; 3.4 needs it said): a member cut off alone does not raise its
term, so when it comes back it does not depose the majority's leader. Without it the cluster had
no leader for seconds after such a heal, and the new leader renewed every lease for a full TTL,
which delayed a takeover (campaign 1851, docs/reliability.md).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time

from hamirror.lab import process, state as lab_state
from hamirror.lab.naming import ADDRESSES, ETCD_CLIENT_PORT, ETCD_HOSTS, ETCD_PEER_PORT, LabPaths
from hamirror.lab.shell import LabError
from hamirror.lab.state import Started

HOSTS = ETCD_HOSTS
NAME = "etcd"


def client_url(host: str) -> str:
    return f"http://{ADDRESSES[host]}:{ETCD_CLIENT_PORT}"


def peer_url(host: str) -> str:
    return f"http://{ADDRESSES[host]}:{ETCD_PEER_PORT}"


def command(paths: LabPaths, host: str, state: str = "new") -> list[str]:
    binary = shutil.which("etcd")
    if binary is None:
        raise LabError("etcd is not installed (Debian: apt-get install etcd-server etcd-client)")
    return [binary, "--name", host, "--data-dir", paths.node_dir(host, "data"),
            "--listen-client-urls", client_url(host), "--advertise-client-urls", client_url(host),
            "--listen-peer-urls", peer_url(host), "--initial-advertise-peer-urls", peer_url(host),
            "--initial-cluster", ",".join(f"{h}={peer_url(h)}" for h in HOSTS),
            "--initial-cluster-state", state, "--initial-cluster-token", paths.prefix,
            "--logger", "zap", "--log-level", "warn", "--pre-vote"]


def start(paths: LabPaths, host: str, state: str = "new") -> Started:
    """Start the member of ``host``: it forms the cluster with the others (``new``), or rejoins it
    with its data (``existing``, after ``lab kill``)."""
    return process.start(paths, host, NAME, command(paths, host, state))


def wait_healthy(paths: LabPaths, timeout: float) -> None:
    """Until every member answers a read that needs a leader (``etcdctl endpoint health``)."""
    endpoints = ",".join(client_url(h) for h in HOSTS)
    deadline, last = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        try:
            result = process.exec_in(paths, HOSTS[0], ["etcdctl", f"--endpoints={endpoints}", "--command-timeout=2s",
                                                       "endpoint", "health"], capture=True, timeout=10)
            if result.returncode == 0:
                return
            last = (result.stderr or result.stdout).strip()
        except subprocess.TimeoutExpired:
            last = "etcdctl timed out"
        time.sleep(0.3)
    raise LabError(f"the lab's etcd cluster is not healthy after {timeout:.0f} s: {last} "
                   f"(logs: {paths.log_file(HOSTS[0], NAME)} and the others)")


def leader_in(status: str, urls: dict[str, str] | None = None) -> str | None:
    """The host whose member is leader, from ``etcdctl endpoint status -w json``'s output (the
    members that answered; a member that did not is left out, and etcdctl exits 1): the one
    whose own id is the leader it names. None: no member answered as leader. ``urls``: client
    URL -> host (default: the lab's members)."""
    try:
        answered = json.loads(status) if status.strip() else []
    except ValueError:
        return None
    by_url = urls or {client_url(h): h for h in HOSTS}
    for entry in answered if isinstance(answered, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("Status"), dict):
            continue
        found = entry["Status"]
        member = (found.get("header") or {}).get("member_id")
        if member and found.get("leader") == member and entry.get("Endpoint") in by_url:
            return by_url[entry["Endpoint"]]
    return None


def leader(paths: LabPaths) -> str | None:
    """The etcd host that leads now, asked from inside a running member's host (as
    :func:`wait_healthy` does); None when no member answers as leader."""
    running = [h for h in HOSTS if h not in down(paths)]
    if not running:
        return None
    endpoints = ",".join(client_url(h) for h in HOSTS)
    try:
        result = process.exec_in(paths, running[0], ["etcdctl", f"--endpoints={endpoints}", "--command-timeout=2s",
                                                     "endpoint", "status", "-w", "json"], capture=True, timeout=15)
    except subprocess.TimeoutExpired:
        return None
    return leader_in(result.stdout)


def down(paths: LabPaths) -> list[str]:
    """The etcd hosts of the lab with no live process (killed, not booted again)."""
    recorded = lab_state.load(paths)
    if recorded is None or not recorded.etcd:
        return []
    return [h for h in HOSTS if not [p for p in process.members(paths, h, recorded.started_in(h))
                                     if process.is_running(p)]]
