"""``hamirror lab up --etcd``: a three-member etcd cluster, one member per host (network namespace
only, like the witness), that the nodes use as their quorum (``[quorum] etcd``).

Members listen on their host's address (198.18.0.251-253, ports 2379 for clients and 2380 between
members), keep their data in ``ROOT/etcdN/data`` and log to ``ROOT/etcdN/log/etcd.log``; ``lab kill
etcdN`` kills one, ``lab boot etcdN`` starts it again, ``lab down`` kills all. etcd's default timing (heartbeat 100 ms, election 1 s).
"""

from __future__ import annotations

import shutil
import subprocess
import time

from hamirror.lab import process
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
            "--logger", "zap", "--log-level", "warn"]


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
