"""A real three-member etcd cluster (Debian's etcd-server) on 127.0.0.1, for the quorum tests.

Each member is a subprocess with its own ports and data folder under a temporary directory;
:meth:`EtcdCluster.close` kills every one of them (the fixture calls it whatever happens).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.request

import pytest

from tests.ports import free_ports  # noqa: F401 - the tests import it from here

ETCD = shutil.which("etcd")
needs_etcd = pytest.mark.skipif(ETCD is None, reason="needs etcd (Debian package etcd-server)")


class EtcdCluster:
    """Three etcd members; ``urls`` are their client URLs, index i for member i."""

    def __init__(self, base: str, members: int = 3, scheme: str = "http", extra: tuple[str, ...] = (),
                 tls: ssl.SSLContext | None = None) -> None:
        """``extra``: more etcd options for every member; ``tls``: the context of the health checks."""
        self.base, self.count, self.extra, self.tls = base, members, list(extra), tls
        ports = free_ports(2 * members)
        self.client_ports, self.peer_ports = ports[:members], ports[members:]
        self.urls = [f"{scheme}://127.0.0.1:{p}" for p in self.client_ports]
        self.initial = ",".join(f"m{i}=http://127.0.0.1:{p}" for i, p in enumerate(self.peer_ports))
        self.procs: dict[int, subprocess.Popen] = {}

    def start_member(self, i: int, state: str = "new") -> None:
        data = os.path.join(self.base, f"m{i}")
        log = open(os.path.join(self.base, f"m{i}.log"), "ab")
        self.procs[i] = subprocess.Popen(
            [ETCD, "--name", f"m{i}", "--data-dir", data,
             "--listen-client-urls", self.urls[i], "--advertise-client-urls", self.urls[i],
             "--listen-peer-urls", f"http://127.0.0.1:{self.peer_ports[i]}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer_ports[i]}",
             "--initial-cluster", self.initial, "--initial-cluster-state", state,
             "--initial-cluster-token", os.path.basename(self.base), "--logger", "zap", "--log-level", "warn",
             *self.extra],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()

    def start(self) -> EtcdCluster:
        for i in range(self.count):
            self.start_member(i)
        self.wait_leader()
        return self

    def status(self, i: int) -> dict | None:
        request = urllib.request.Request(self.urls[i] + "/v3/maintenance/status", b"{}", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=1, context=self.tls) as answer:
                return json.load(answer)
        except OSError:
            return None

    def leader(self) -> int | None:
        """The index of the member that is leader now (None: no leader seen)."""
        for i in self.procs:
            status = self.status(i)
            if status and status.get("leader") and status["leader"] == status["header"]["member_id"]:
                return i
        return None

    def wait_leader(self, timeout: float = 20.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.leader()
            if leader is not None:
                return leader
            time.sleep(0.1)
        raise AssertionError(f"no etcd leader within {timeout} s; logs in {self.base}")

    def wait_member(self, i: int, timeout: float = 20.0) -> None:
        """Until member i answers and follows a leader (a restarted member has caught up)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status(i)
            if status and status.get("leader") and status.get("raftAppliedIndex") == status.get("raftIndex"):
                return
            time.sleep(0.1)
        raise AssertionError(f"etcd member {i} not in the cluster within {timeout} s; logs in {self.base}")

    def kill(self, i: int) -> None:
        proc = self.procs.pop(i, None)
        if proc is not None:
            proc.kill()
            proc.wait()

    def signal(self, i: int, sig: signal.Signals) -> None:
        self.procs[i].send_signal(sig)

    def restart(self, i: int) -> None:
        self.kill(i)
        self.start_member(i, state="existing")

    def close(self) -> None:
        for i in list(self.procs):
            proc = self.procs[i]
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
            self.kill(i)


@pytest.fixture
def etcd_cluster(tmp_path):
    cluster = EtcdCluster(str(tmp_path / "etcd"))
    os.makedirs(cluster.base)
    try:
        yield cluster.start()
    finally:
        cluster.close()
