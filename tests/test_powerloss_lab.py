"""Acknowledged writes survive a real power loss of either node (issue 15, finding 4), in the lab.

Real agents, real FUSE, real ZeroMQ; the power loss is :func:`hamirror.lab.powerloss.power_loss`
(the node's unsynced pages become zeros). Each test ends with both copies byte-identical.

1. Secondary: 8 MiB written on node1 without fsync (acknowledged by node2, in its page cache
   only), node2 loses power, fsync on node1, node2 boots and resyncs: node2's copy equals node1's.
2. Secondary, after a burst of new files: node2 made none of their paths durable one by one (the
   primary delegated: its unsynced log holds only the mark), loses power right after they were
   acknowledged, boots and is resynced from what node1 recorded: the copies are byte-identical.
3. Primary: the same 8 MiB on node1, then enough other paths that the file leaves the activity
   log's LRU (before the fix: acknowledged was enough to leave), then 8 MiB more; node1 loses
   power, node2 takes over, node1 boots as secondary and resyncs: node1's copy equals node2's.
"""

from __future__ import annotations

import glob
import hashlib
import os
import sys

import pytest

from hamirror.journal import durability, unsynced
from hamirror.journal.activity import read_log
from hamirror.lab import pagecache, powerloss
from hamirror.link.protocol import CONFLICT_DIR
from tests.agent_lab import LAB_MARKS, agents_lab, module, wait_for

pytestmark = [*LAB_MARKS, pytest.mark.skipif(bool(pagecache.unsupported()), reason=pagecache.unsupported() or "ok")]

DIR = "/srv/hamirror-demo"
# 64 KiB writes: below the receiver's early-writeback size, so the pages stay dirty for a while.
WRITE_8MIB = """
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
for i in range(128):
    os.write(fd, os.urandom(65536))
os.close(fd)
"""
BURST = """
import os, sys
os.makedirs(sys.argv[1], exist_ok=True)
for i in range(int(sys.argv[2])):
    fd = os.open(os.path.join(sys.argv[1], str(i)), os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, os.urandom(4096))
    os.close(fd)
"""
FSYNC = "import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd); os.close(fd)"
# One directory each: a new name enters its directory in the activity log, so new files in one
# directory would fill one entry, not the log.
TOUCH_MANY = """
import os, sys
for i in range(int(sys.argv[2])):
    d = os.path.join(sys.argv[1], str(i))
    os.makedirs(d, exist_ok=True)
    os.close(os.open(os.path.join(d, "f"), os.O_WRONLY | os.O_CREAT, 0o644))
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    # Both nodes share the host's filesystem: a background sync of either node would make the
    # other's unsynced pages durable too. A long interval keeps them unsynced for the test (the
    # syncs a full activity log asks for still happen).
    saved = os.environ.get(durability.INTERVAL_ENV)
    os.environ[durability.INTERVAL_ENV] = "600"
    try:
        yield from agents_lab(tmp_path_factory, "powerlosslab")
    finally:
        if saved is None:
            os.environ.pop(durability.INTERVAL_ENV, None)
        else:
            os.environ[durability.INTERVAL_ENV] = saved


def run(lab, node: str, script: str, *args: str, timeout: float = 120) -> None:
    result = lab.exec(node, sys.executable, "-c", script, *args, timeout=timeout)
    assert result.returncode == 0, f"{node}: {result.stderr}"


def tree_digest(root: str) -> dict[str, tuple]:
    """Every entry of a copy (seen from the host, beneath any mount): kind, mode, size, sha256."""
    out: dict[str, tuple] = {}
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not (dirpath == root and d == os.fsdecode(CONFLICT_DIR))]
        for name in dirs + files:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            digest = ""
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
            out[os.path.relpath(path, root)] = (st.st_mode, st.st_size if digest else 0, digest)
    return out


def assert_identical(lab) -> None:
    one, two = (tree_digest(lab.paths.node_dir(n, "srv") + DIR[len("/srv"):]) for n in ("node1", "node2"))
    differing = sorted(p for p in set(one) | set(two) if one.get(p) != two.get(p))
    assert not differing, f"copies differ at {differing[:10]}"


def test_power_loss_of_the_secondary_loses_no_acknowledged_write(lab):
    run(lab, "node1", WRITE_8MIB, f"{DIR}/big-secondary")
    lost = powerloss.power_loss(lab.paths, "node2")
    assert lost.bytes_lost > 0, f"nothing was unsynced on node2: the test proves nothing ({lost.summary()})"
    run(lab, "node1", FSYNC, f"{DIR}/big-secondary")
    assert lab.cli("boot", "node2").returncode == 0
    wait_for(lab, "node2", lambda m: m["state"] == "SECOND" and m["uptodate"], timeout=90, what="SECOND up to date")
    wait_for(lab, "node1", lambda m: m["state"] == "PRIM" and m["peer_state"] == "SECOND", what="PRIM")
    assert_identical(lab)


def test_power_loss_of_the_secondary_after_a_burst_of_new_files(lab):
    run(lab, "node1", BURST, f"{DIR}/burst", "300")      # every file acknowledged, none fsynced
    lost = powerloss.power_loss(lab.paths, "node2")
    assert lost.bytes_lost > 0, f"nothing was unsynced on node2: the test proves nothing ({lost.summary()})"
    logs = glob.glob(os.path.join(lab.paths.node_dir("node2", "state"), "**", unsynced.UNSYNCED_LOG), recursive=True)
    replays = [read_log(path) for path in logs]
    # No fdatasync per new path on node2: its log names none of them, only the delegated mark.
    assert any(r.marked for r in replays) and not any(r.paths for r in replays), replays
    assert lab.cli("boot", "node2").returncode == 0
    wait_for(lab, "node2", lambda m: m["state"] == "SECOND" and m["uptodate"], timeout=90, what="SECOND up to date")
    wait_for(lab, "node1", lambda m: m["state"] == "PRIM" and m["peer_state"] == "SECOND", what="PRIM")
    assert_identical(lab)


def test_power_loss_of_the_primary_loses_no_acknowledged_write(lab):
    run(lab, "node1", WRITE_8MIB, f"{DIR}/big-primary")
    run(lab, "node1", TOUCH_MANY, f"{DIR}/many", "4200", timeout=300)   # more than the log's 4,096 entries
    # The big file left the log before the fix (and lost its pages); with it, it stays in the log or
    # is durable. A last unsynced file makes sure the power loss takes something either way.
    run(lab, "node1", WRITE_8MIB, f"{DIR}/big-last")
    lost = powerloss.power_loss(lab.paths, "node1")
    assert lost.bytes_lost > 0, f"nothing was unsynced on node1: the test proves nothing ({lost.summary()})"
    wait_for(lab, "node2", lambda m: m["state"] == "ALONE" and not m["busy"], timeout=60, what="ALONE")
    assert lab.cli("boot", "node1").returncode == 0
    wait_for(lab, "node1", lambda m: m["state"] == "SECOND" and m["uptodate"], timeout=120, what="SECOND up to date")
    wait_for(lab, "node2", lambda m: m["state"] == "PRIM" and m["peer_state"] == "SECOND", what="PRIM")
    assert_identical(lab)
