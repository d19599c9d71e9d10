"""``lab kill NODE --power-loss``: the node's processes die and its unsynced writes are lost.

Real processes in a real lab node: a writer inside node1 writes 1 MiB and fsyncs it, then writes
1 MiB more without fsync; after the power loss the node's disk (seen from the host) holds the
first MiB and zeros for the second, with the file's mtime unchanged.
"""

from __future__ import annotations

import os
import sys

import pytest

from hamirror.lab import pagecache, process
from hamirror.lab.testing import temporary_lab, unavailable

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(unavailable() is not None, reason=str(unavailable())),
              pytest.mark.skipif(bool(pagecache.unsupported()), reason=pagecache.unsupported() or "ok")]

MIB = 1024 * 1024
WRITER = """
import os, sys
os.makedirs("/srv/pl", exist_ok=True)
fd = os.open("/srv/pl/data", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, bytes([1]) * %d)
os.fsync(fd)
os.write(fd, bytes([2]) * %d)       # never synced
os.close(fd)
print("written", flush=True)
""" % (MIB, MIB)


def test_power_loss_zeroes_unsynced_pages_and_keeps_synced_ones(tmp_path):
    with temporary_lab(str(tmp_path / "lab")) as lab:
        started = process.start(lab.paths, "node1", "sleeper", ["sleep", "300"])
        written = lab.exec("node1", sys.executable, "-c", WRITER)
        assert written.returncode == 0, written.stderr
        host_path = os.path.join(lab.paths.node_dir("node1", "srv"), "pl", "data")
        mtime = os.stat(host_path).st_mtime_ns

        result = lab.cli("kill", "node1", "--power-loss")

        assert result.returncode == 0, result.stderr
        assert "power loss" in result.stdout and "unsynced byte(s) lost" in result.stdout, result.stdout
        assert not process.is_alive(started)
        with open(host_path, "rb") as f:
            data = f.read()
        assert len(data) == 2 * MIB
        assert data[:MIB] == bytes([1]) * MIB, "fsynced data must survive a power loss"
        assert data[MIB:] == bytes(MIB), "unsynced data must be lost (zeros)"
        assert os.stat(host_path).st_mtime_ns == mtime


def test_power_loss_refuses_a_host_that_is_not_a_node(tmp_path):
    with temporary_lab(str(tmp_path / "lab")) as lab:
        result = lab.cli("kill", "client", "--power-loss")
        assert result.returncode != 0
        assert "unknown node 'client'" in result.stderr
