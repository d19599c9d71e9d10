"""A hung mount daemon is a dead one (issue 15, finding 9).

A real ``hamirror mirror mount`` frozen with SIGSTOP: alive, its directory mounted, its last
``status.json`` saying all is well, and nobody served. Before, the agent read that file when its
status request timed out and saw a healthy mount (no repair, no failover). Now the data path's
watchdog SIGKILLs a mounted daemon that answers nothing for ``MOUNT_HUNG_AFTER`` seconds, and the
mount reads as dead: the agent's dead-mount repair takes it from there.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

import pytest

from hamirror.agent import datapath as dp_module
from hamirror.agent.datapath import DataPath
from hamirror.config import load_cluster, load_modules
from tests.configfiles import write_cluster, write_module
from tests.mirror_fixtures import is_fuse_mounted, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/fuse"), reason="needs root and FUSE")


@pytest.fixture
def mounted(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    path = write_cluster(tmp_path)
    write_module(tmp_path, replace={"/srv/app": str(data)})
    cluster = load_cluster(path)
    datapath = DataPath(load_modules(cluster)[0], cluster)
    try:
        datapath.mount(alone=True)
        status = datapath.mount_status(0)
        assert status is not None and status["state"] == "ALONE"
        yield datapath, int(status["pid"])
    finally:
        # Whatever happened (a failed assertion, a daemon the watchdog killed, a failed unmount):
        # no daemon and no mount are left behind.
        for pid in {int(s["pid"]) for s in datapath.mount_statuses() if s and s.get("pid")}:
            if dp_module._alive(pid):
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            datapath.unmount(force=True)
        if is_fuse_mounted(str(data)):   # a dead FUSE mount fails lstat: ismount() says False
            subprocess.run(["umount", "-l", str(data)], check=False)
        assert not is_fuse_mounted(str(data)), f"{data} still mounted"


def test_a_frozen_mount_daemon_is_killed_and_reads_as_dead(mounted):
    datapath, pid = mounted
    (open(os.path.join(datapath.dirs[0], "before"), "w")).close()
    os.kill(pid, signal.SIGSTOP)
    began = time.monotonic()
    # The watchdog runs in its own thread (started by the first look at the mounts above).
    wait_for(lambda: not dp_module._alive(pid), dp_module.MOUNT_HUNG_AFTER + 3 * dp_module.MOUNT_ANSWER + 2,
             what="the hung daemon killed")
    assert time.monotonic() - began >= dp_module.MOUNT_HUNG_AFTER    # a bound, not a hair trigger
    assert datapath.mount_status(0) is None                             # dead: the repair path runs
    assert datapath.dead_mounts() == [0]
    datapath.mount(alone=False)                                        # detach, remount from the journal
    assert datapath.mount_status(0) is not None
    assert os.path.exists(os.path.join(datapath.dirs[0], "before"))


def test_a_mount_that_answers_is_never_killed(mounted):
    datapath, pid = mounted
    for _ in range(3):
        assert not datapath.check_hung(0)
    assert dp_module._alive(pid) and datapath.mount_status(0) is not None


def test_a_short_silence_is_not_a_hang(mounted, monkeypatch):
    """Stopped for less than the bound: answered again, forgiven."""
    datapath, pid = mounted
    monkeypatch.setattr(dp_module, "MOUNT_ANSWER", 0.2)
    os.kill(pid, signal.SIGSTOP)
    try:
        assert not datapath.check_hung(0) and 0 in datapath._silent_since
    finally:
        os.kill(pid, signal.SIGCONT)
    assert not datapath.check_hung(0) and 0 not in datapath._silent_since
    assert dp_module._alive(pid)
