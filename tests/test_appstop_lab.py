"""PostgreSQL on a mount daemon that dies, then on one that hangs, in the lab (issue 15, findings 2
and 9): the primary's own repair brings the service back on the same node, with the old server
stopped by its own stop_prim and nothing of it left.

Before: stop_prim read ``postmaster.pid`` through the dead mount, said "not running" while the
postmaster lived, and start_prim then failed ("another postgres (pid N) uses ... port 5432"); a
daemon frozen with SIGSTOP read as healthy (the last status.json) and nothing was repaired.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from hamirror.lab import appclient
from hamirror.lab.testing import temporary_lab
from tests.agent_lab import LAB_MARKS, tail
from tests.test_modules_lab import Postgres, wait_state

pytestmark = LAB_MARKS + [pytest.mark.slow]


def mount_pid(lab, node: str) -> int:
    with open(os.path.join(lab.paths.node_dir(node, "state"), "modules", "postgresql", "0", "status.json")) as f:
        return int(json.load(f)["pid"])


def postmaster_pid(lab, node: str) -> int:
    with open(os.path.join(lab.paths.node_dir(node, "run"), "postgresql", ".s.PGSQL.5432.lock")) as f:
        return int(f.readline())


def scripts_log(lab, node: str) -> str:
    with open(os.path.join(lab.paths.node_dir(node, "state"), "modules", "postgresql", "scripts.log")) as f:
        return f.read()


def commit_again(lab, app: Postgres, key: str, timeout: float = 120.0) -> float:
    """Seconds until an INSERT through the VIP commits."""
    began = time.monotonic()
    while True:
        try:
            appclient.run(lab.paths, [c.replace(appclient.KEY, key) for c in app.command()], timeout=20)
            return time.monotonic() - began
        except Exception:  # noqa: BLE001 - not yet: the service is coming back
            if time.monotonic() - began > timeout:
                raise
            time.sleep(0.2)


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


def test_postgresql_survives_a_dead_then_a_hung_mount_daemon_on_the_primary(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab-appstop")
    app = Postgres()
    with temporary_lab(str(root / "lab"), "--module", "postgresql", "--timeout", "240", agents=True) as lab:
        app.prepare(lab, "node1")
        commit_again(lab, app, "before")
        for fault, key in ((signal.SIGKILL, "after-kill"), (signal.SIGSTOP, "after-stop")):
            wait_state(lab, "node2", "postgresql", lambda m: m["state"] == "SECOND" and m["uptodate"], "SECOND")
            daemon, postmaster = mount_pid(lab, "node1"), postmaster_pid(lab, "node1")
            os.kill(daemon, fault)
            took = commit_again(lab, app, key)
            print(f"{signal.Signals(fault).name} of the mount daemon: a commit through the VIP again after {took:.1f} s")
            log = scripts_log(lab, "node1")
            # stop_prim ends the old server through the dead mount; or, on a slow machine, the
            # server already ended itself (PANIC on the lost mount) and start_prim found its pid
            # file stale. Never "another postgres" on the port (finding 2's failure).
            stopped = f"immediate shutdown of {postmaster}" in log and f"stopped (pid {postmaster})" in log
            ended_itself = f"stale postmaster.pid (pid {postmaster} is no postgres" in log
            assert (stopped or ended_itself) and "another postgres" not in log, log[-3000:]
            assert gone(postmaster) and gone(daemon)
            assert postmaster_pid(lab, "node1") != postmaster              # a new server, on node1 still
            status = next(m for m in json.loads(lab.exec("node1", "hamirror", "status", "--json").stdout)["modules"])
            assert status["state"] in ("PRIM", "ALONE"), tail(lab, "node1")
        with open(lab.paths.log_file("node1", "agent")) as f:
            assert "has not answered for" in f.read()                     # the hung one was found as such
        assert {"before", "after-kill", "after-stop"} <= app.present(lab, [])
