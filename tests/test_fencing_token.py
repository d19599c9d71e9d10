"""The fencing token on the data path (issue 18, link/fencing.py): a holder whose quorum lease was
taken over writes nothing to the peer, however late everything else is.

The process-level test is the issue's case without the etcd lab around it: a primary streams
with its token, loses its peer, and goes on alone (frozen, then woken: its mount believes it is
still the holder); meanwhile the peer took the lease with a newer token and its receiver is
listening again (an agent restart puts a node in WAIT with its receiver up). The stale primary's
resync, the only way its changes can reach the peer, is refused at the HELLO and the peer's copy
keeps every byte it had. The same resync with the newer token goes through, so the refusal is
the token's doing. test_etcd_lab checks that the agents record the tokens of real etcd tenures.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest

from hamirror.agent.datapath import DataPath
from hamirror.config import load_cluster, load_modules
from hamirror.link import fencing, protocol
from hamirror.link.protocol import HELLO_RESYNC, HELLO_TOKEN, VERSION, Op
from tests.configfiles import write_cluster, write_module
from tests.conftest import HAMIRROR, needs_root
from tests.mirror_fixtures import MirrorPair, diff_snapshots, tree_snapshot, wait_for

STALE, NEWER = 5, 7


def _hello(ints: tuple[int, ...]) -> protocol.Message:
    return protocol.decode([protocol.encode(Op.HELLO, 1, 1, ints)])


def test_a_hello_carries_a_token_only_with_its_flag():
    """0.2.0's HELLO (two integers) still decodes; a third integer is the token."""
    assert _hello((VERSION, 0)).ints == (VERSION, 0)
    assert _hello((VERSION, HELLO_TOKEN | HELLO_RESYNC, 9)).ints == (VERSION, HELLO_TOKEN | HELLO_RESYNC, 9)
    with pytest.raises(protocol.ProtocolError, match="HELLO: expected 2 to 3 integers, got 4"):
        _hello((VERSION, HELLO_TOKEN, 9, 9))


def test_only_an_older_token_is_stale(tmp_path):
    state = str(tmp_path)
    assert fencing.read(os.path.join(state, fencing.FLOOR_FILE)) is None
    assert fencing.stale(STALE, None) is None             # no floor: nothing is refused
    assert fencing.stale(None, NEWER) is None             # no token: not judged (no etcd on the sender)
    assert fencing.raise_floor(state, NEWER) == NEWER
    assert fencing.raise_floor(state, STALE) == NEWER     # never lowered
    floor = fencing.read(os.path.join(state, fencing.FLOOR_FILE))
    assert fencing.stale(NEWER, floor) is None
    assert fencing.stale(STALE, floor) == (
        "stale fencing token 5: this node has seen token 7, a newer holder of the quorum lease; "
        "the sender lost its lease and must not write")
    with open(os.path.join(state, fencing.TOKEN_FILE), "w") as f:
        f.write("garbage\n")
    assert fencing.read(os.path.join(state, fencing.TOKEN_FILE)) is None
    fencing.forget(state)
    assert not os.path.exists(os.path.join(state, fencing.FLOOR_FILE))


def _resync(pair: MirrorPair) -> subprocess.CompletedProcess:
    return subprocess.run(HAMIRROR + ["mirror", "resync", "--dir", pair.primary, "--peer", pair.endpoint,
                                      "--state-dir", pair.state],
                          capture_output=True, text=True, timeout=60)


@needs_root
def test_a_holder_whose_lease_was_taken_over_writes_nothing_to_the_peer(tmp_path):
    pair = MirrorPair(str(tmp_path))
    fencing.write(os.path.join(pair.state, fencing.TOKEN_FILE), STALE)    # the primary's tenure
    try:
        pair.start()
        with open(os.path.join(pair.primary, "before"), "wb") as f:
            f.write(b"acknowledged by both\n")
            os.fsync(f.fileno())
        assert fencing.read(os.path.join(pair.rstate, fencing.FLOOR_FILE)) == STALE   # the peer saw it

        # The peer is lost; the primary goes on alone (its mount still thinks it holds the lease).
        pair.kill_receiver()
        with open(os.path.join(pair.primary, "before"), "r+b") as f:
            f.write(b"OVERWRITTEN")
            os.fsync(f.fileno())
        with open(os.path.join(pair.primary, "after"), "wb") as f:
            f.write(b"written alone by a holder that lost its lease\n")
            os.fsync(f.fileno())
        wait_for(lambda: pair.status()["state"] == "ALONE", 15, what="the mount to go on ALONE")

        # The peer took the lease over (its agent raises its floor) and listens again.
        fencing.raise_floor(pair.rstate, NEWER)
        pair.start_receiver()
        peer_before = tree_snapshot(pair.secondary)
        done = _resync(pair)
        assert done.returncode != 0, done
        assert ("stale fencing token 5: this node has seen token 7, a newer holder of the quorum lease; "
                "the sender lost its lease and must not write") in done.stdout + done.stderr
        assert diff_snapshots(peer_before, tree_snapshot(pair.secondary)) == []
        with open(os.path.join(pair.secondary, "before"), "rb") as f:
            assert f.read() == b"acknowledged by both\n"
        assert pair.receiver.poll() is None, "the receiver died"

        # The same resync from the newer holder goes through: the token made the difference.
        fencing.write(os.path.join(pair.state, fencing.TOKEN_FILE), NEWER)
        done = _resync(pair)
        assert done.returncode == 0, done
        assert diff_snapshots(tree_snapshot(pair.primary), tree_snapshot(pair.secondary)) == []
    finally:
        pair.stop()


def test_a_mount_joining_its_peer_waits_for_this_nodes_tenure(tmp_path):
    """Campaigns 4306-4307 (etcd): a swap's hand-over mounted before its node held the lease, sent
    the token of an earlier tenure, was refused as stale by the old primary's receiver, and the
    swap waited 5 s for the retry. With etcd, a mount that joins its peer now waits for a tick that
    finds this node holding a tenure (and records its token first)."""
    data = tmp_path / "data"
    data.mkdir()
    cluster = load_cluster(write_cluster(tmp_path))                  # its state under tmp_path
    write_module(tmp_path, replace={"/srv/app": str(data)})
    datapath = DataPath(load_modules(cluster)[0], cluster)
    state = datapath.dir_states[0]
    assert state.startswith(str(tmp_path))
    os.makedirs(state)
    assert datapath.wait_for_tenure(timeout=0.0)                     # no etcd: at once
    datapath.numbered = True                                         # as with [quorum] etcd
    datapath.record_fencing_token(4)                                 # an earlier tenure ...
    datapath.record_fencing_token(None)                              # ... lapsed (SECOND since)
    started = time.monotonic()
    assert datapath.wait_for_tenure(timeout=0.2) is False            # no tick holds one
    assert time.monotonic() - started >= 0.2
    ticks = [threading.Timer(0.1, datapath.record_fencing_token, (None,)),
             threading.Timer(0.3, datapath.record_fencing_token, (10,))]
    for tick in ticks:
        tick.start()
    started = time.monotonic()
    try:
        assert datapath.wait_for_tenure(timeout=5.0)
    finally:
        for tick in ticks:
            tick.join()
    assert 0.3 <= time.monotonic() - started < 2.0
    assert fencing.read(os.path.join(state, fencing.TOKEN_FILE)) == 10     # recorded before the mount
