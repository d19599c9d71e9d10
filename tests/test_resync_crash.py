"""Failback after a power-kill of the primary: incremental over (the survivor's changes ∪ the crashed
primary's activity log), never a scan of the whole tree, through real FUSE mounts and processes.

The receiver is frozen (SIGSTOP) so that operations are applied on the primary and never reach
the peer, then the primary's mount daemon and the receiver are killed with SIGKILL; the old
secondary takes over (``mount --alone``) and writes on its own; the old primary comes back as
receiver and the new primary resyncs it.
"""

import os
import signal
import threading

import pytest

from tests.conftest import needs_root
from tests.mirror_fixtures import failback_pair, wait_for
from tests.test_resync_common import (assert_equal_trees, control, establish, kill9, lower_dir, resync,
                                      resync_modes)

pytestmark = needs_root


def _populate(p: str) -> None:
    os.makedirs(f"{p}/d/sub")
    for name in ("hot", "diverge", "both", "r/old-name", "l/linked", "u/plain"):
        os.makedirs(os.path.dirname(f"{p}/d/{name}"), exist_ok=True)
        with open(f"{p}/d/{name}", "wb") as f:
            f.write(name.encode() * 3000)
    os.makedirs(f"{p}/d/m")
    os.makedirs(f"{p}/d/c")
    for i in range(200):                         # the cold part of the tree
        with open(f"{p}/d/sub/c{i}", "wb") as f:
            f.write(b"cold %d\n" % i)


def _in_flight(p: str) -> list[threading.Thread]:
    """Operations that reach the primary's disk but never the (frozen) receiver (one directory
    each: the kernel holds a directory's lock while a name in it changes)."""
    def write(name: str, data: bytes, offset: int = 100) -> None:
        with open(f"{p}/d/{name}", "r+b") as f:
            f.seek(offset)
            f.write(data)

    ops = [lambda: write("diverge", b"ONLY ON THE CRASHED PRIMARY"),
           lambda: write("both", b"crashed primary's version"),
           lambda: os.rename(f"{p}/d/r/old-name", f"{p}/d/r/new-name"),
           lambda: os.link(f"{p}/d/l/linked", f"{p}/d/l/hard"),
           lambda: os.mkdir(f"{p}/d/m/newdir"),
           lambda: os.unlink(f"{p}/d/u/plain"),
           lambda: open(f"{p}/d/c/created", "wb").close()]
    threads = []
    for op in ops:
        def run(op=op) -> None:
            try:
                op()
            except OSError:       # the mount dies under the call: ENOTCONN
                pass
        t = threading.Thread(target=run, daemon=True)
        t.start()
        threads.append(t)
    return threads


def _applied_on_primary(lower: str) -> bool:
    try:
        with open(f"{lower}/d/diverge", "rb") as f:
            f.seek(100)
            diverged = f.read(27) == b"ONLY ON THE CRASHED PRIMARY"
        with open(f"{lower}/d/both", "rb") as f:
            f.seek(100)
            both = f.read(25) == b"crashed primary's version"
        return (diverged and both and os.path.exists(f"{lower}/d/r/new-name") and os.path.exists(f"{lower}/d/l/hard")
                and os.path.isdir(f"{lower}/d/m/newdir") and not os.path.exists(f"{lower}/d/u/plain")
                and os.path.exists(f"{lower}/d/c/created"))
    except OSError:
        return False


@pytest.mark.parametrize("activity_log", [True, False], ids=["activity-log", "no-log"])
def test_failback_after_power_kill_of_the_primary_is_incremental(mirror_factory, activity_log):
    """With the activity log: incremental, and every divergent path repaired. Without it (the
    mount's ``--no-activity-log``): a scan of the whole tree, as before; a resync that trusted the
    journal without the log would leave every operation in flight divergent (checked by hand)."""
    pair = mirror_factory("m", timeout=30).start()
    p, s = pair.primary, pair.secondary
    _populate(p)
    establish(pair)                                   # both journals share a generation
    if not activity_log:
        pair.umount()
        pair.mount(extra=("--no-activity-log",))
    for i in range(20):                               # streaming: a hot file, acknowledged writes
        with open(f"{p}/d/hot", "r+b") as f:
            f.write(b"hot %d" % i)
    lower = lower_dir(pair)
    os.kill(pair.receiver.pid, signal.SIGSTOP)        # from here nothing reaches the peer
    threads = _in_flight(p)
    wait_for(lambda: _applied_on_primary(lower), 10, what="the operations in flight on the primary's disk")
    kill9(pair.mounter)                               # power-kill of the primary...
    kill9(pair.receiver)                              # ...and its peer's receiver never saw them
    pair.umount()
    for t in threads:
        t.join(10)
    assert not os.path.exists(f"{s}/d/c/created") and os.path.exists(f"{s}/d/u/plain")

    back = failback_pair(pair)                        # the secondary takes over, on its own
    try:
        back.mount(extra=("--alone",))
        q = back.primary
        with open(f"{q}/d/both", "r+b") as f:         # the survivor's own writes
            f.write(b"survivor's version")
        with open(f"{q}/d/survivor-new", "wb") as f:
            f.write(b"made after the takeover")
        os.rename(f"{q}/d/sub/c1", f"{q}/d/sub/c1-moved")
        os.unlink(f"{q}/d/sub/c2")
        back.start_receiver()                         # the old primary returns as secondary
        resync(back)
        assert resync_modes(back) == (["incremental"] if activity_log else ["scan"])
        assert_equal_trees(back)
        with open(f"{p}/d/diverge", "rb") as f:       # repaired from the survivor's copy
            assert b"ONLY ON THE CRASHED PRIMARY" not in f.read()
    finally:
        back.stop()


def test_a_primary_killed_while_streaming_that_restarts_as_primary_resyncs_incrementally(mirror_factory):
    """The other way back: the mount daemon dies, the agent remounts it (FENCED, then granted
    ALONE); its activity log, folded into its journal, makes the resync to the peer incremental."""
    pair = mirror_factory("m", timeout=30).start()
    p = pair.primary
    _populate(p)
    establish(pair)
    lower = lower_dir(pair)
    os.kill(pair.receiver.pid, signal.SIGSTOP)
    threads = _in_flight(p)
    wait_for(lambda: _applied_on_primary(lower), 10, what="the operations in flight on the primary's disk")
    kill9(pair.mounter)
    kill9(pair.receiver)
    pair.umount()
    for t in threads:
        t.join(10)
    pair.start_receiver()
    pair.mount(("--fence", "30"))
    assert control(pair, {"cmd": "status"})["status"]["state"] == "FENCED"
    control(pair, {"cmd": "alone", "reason": "test: the peer is not primary"})
    with open(f"{p}/d/after", "wb") as f:
        f.write(b"written ALONE after the restart")
    resync(pair)
    assert resync_modes(pair)[-1] == "incremental"
    assert_equal_trees(pair)


def test_new_files_log_their_directory_and_a_failback_makes_both_copies_identical(mirror_factory):
    """A burst of new files enters its directory in the activity log (a directory entry), not
    each file. The primary is power-killed with one more file on its disk only; the crash also
    took one acknowledged file and one acknowledged write from its disk (a power loss takes the
    page cache: done by hand here, a kill does not). The fold lists the directory, and the
    failback resync leaves both copies byte-identical: the file only the survivor has is copied
    back, the one only the crashed primary has goes."""
    from hamirror.journal.activity import read_log
    from hamirror.lab.compare import compare_paths

    pair = mirror_factory("m", timeout=30).start()
    p = pair.primary
    os.makedirs(f"{p}/keep")
    with open(f"{p}/keep/base", "wb") as f:
        f.write(b"base" * 1000)
    establish(pair)
    os.makedirs(f"{p}/burst")
    for i in range(40):                               # acknowledged new files
        with open(f"{p}/burst/f{i}", "wb") as f:
            f.write(os.urandom(4096))
    lower = lower_dir(pair)
    os.kill(pair.receiver.pid, signal.SIGSTOP)        # from here nothing reaches the peer

    def unacked() -> None:
        try:
            with open(f"{p}/burst/only-on-the-crashed-primary", "wb") as f:
                f.write(b"never acknowledged")
        except OSError:
            pass
    thread = threading.Thread(target=unacked, daemon=True)
    thread.start()
    wait_for(lambda: os.path.exists(f"{lower}/burst/only-on-the-crashed-primary"), 10, what="the create on disk")
    kill9(pair.mounter)
    kill9(pair.receiver)
    pair.umount()
    thread.join(10)
    logged = read_log(os.path.join(pair.state, "activity.log"))
    assert "burst" in logged.dirs and not any(x.startswith("burst/") for x in logged.paths), logged
    os.unlink(f"{p}/burst/f3")                        # what the power loss took from this disk
    with open(f"{p}/burst/f5", "r+b") as f:
        f.write(b"\0" * 4096)
    with open(f"{pair.secondary}/burst/f7", "rb") as f:
        f7 = f.read()

    back = failback_pair(pair)
    try:
        back.mount(extra=("--alone",))
        with open(f"{back.primary}/burst/survivor-new", "wb") as f:
            f.write(b"made after the takeover")
        back.start_receiver()
        resync(back)
        assert resync_modes(back) == ["incremental"]
        assert compare_paths(lower_dir(back), p, ("survivor", "crashed primary")) == []
        assert_equal_trees(back)
        assert not os.path.exists(f"{p}/burst/only-on-the-crashed-primary")
        with open(f"{p}/burst/f7", "rb") as f:
            assert f.read() == f7
        assert os.path.getsize(f"{p}/burst/f3") == 4096
    finally:
        back.stop()
