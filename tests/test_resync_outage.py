"""Online resync after an outage of the receiver, through real FUSE and real sockets.

Each test: mirror up, receiver killed (kill -9), changes made through the mount while it is ALONE,
receiver started again with its journal, ``hamirror mirror resync``, then the two trees must be
equal, the mount PRIM and the receiver's journal must say up to date.
"""

import os
import random
import shutil

import pytest

from tests.conftest import needs_root
from tests.mirror_fixtures import wait_for
from tests.test_resync_common import (assert_equal_trees, establish, go_alone, mount_state, receiver_status,
                                      receiver_uptodate_in_journal, resync, resync_modes)

pytestmark = needs_root


def _populate(p: str) -> None:
    os.makedirs(f"{p}/d/sub")
    for i in range(5):
        with open(f"{p}/d/f{i}", "wb") as f:
            f.write(f"file {i}\n".encode() * 100)
    with open(f"{p}/big", "wb") as f:
        f.write(random.Random(1).randbytes(3 * 1024 * 1024 + 123))
    with open(f"{p}/shrink", "wb") as f:
        f.write(b"s" * 200_000)
    for name in ("keep", "victim", "target", "hl"):
        with open(f"{p}/{name}", "wb") as f:
            f.write(name.encode() * 10)
    os.symlink("keep", f"{p}/sl")
    os.symlink("keep", f"{p}/sl2")
    os.makedirs(f"{p}/olddir/inner")
    with open(f"{p}/olddir/inner/x", "wb") as f:
        f.write(b"x" * 5000)
    os.mkdir(f"{p}/emptydir")
    os.setxattr(f"{p}/keep", "user.old", b"1")


def _change_while_alone(p: str) -> None:
    """Every kind of change the issue lists, through the mount."""
    with open(f"{p}/big", "r+b") as f:                     # overwrite scattered ranges
        for off in (4096 * 10, 1024 * 1024 + 7, 3 * 1024 * 1024 - 100):
            f.seek(off)
            f.write(os.urandom(3000))
    with open(f"{p}/d/f0", "ab") as f:                    # append
        f.write(b"appended\n")
    os.truncate(f"{p}/shrink", 1234)                       # truncate down
    os.truncate(f"{p}/d/f1", 100_000)                      # truncate up (sparse tail)
    with open(f"{p}/d/sub/new", "wb") as f:               # create
        f.write(b"new file\n" * 1000)
    os.unlink(f"{p}/d/f2")                                  # delete
    with open(f"{p}/newer", "wb") as f:
        f.write(b"replacement")
    os.rename(f"{p}/newer", f"{p}/target")                 # rename over an existing file
    os.rename(f"{p}/d/f3", f"{p}/d/f3-moved")              # plain rename
    os.chmod(f"{p}/keep", 0o600)                           # chmod
    os.setxattr(f"{p}/keep", "user.colour", b"blue")       # xattrs
    os.removexattr(f"{p}/keep", "user.old")
    os.link(f"{p}/hl", f"{p}/d/hl-second")                 # hard link
    os.unlink(f"{p}/sl2")                                   # symlink retargeted
    os.symlink("d/f0", f"{p}/sl2")
    os.symlink("nowhere", f"{p}/dangling")                 # new symlink
    os.mkdir(f"{p}/newdir")                                 # mkdir
    os.makedirs(f"{p}/newdir/deep/er")
    os.rmdir(f"{p}/emptydir")                               # rmdir
    os.rename(f"{p}/olddir", f"{p}/renameddir")            # rename of a directory
    with open(f"{p}/renameddir/inner/x", "r+b") as f:      # ...and a write beneath it
        f.write(b"Y" * 10)
    os.unlink(f"{p}/victim")


def _unacknowledged_on_returning_side(s: str, anywhere: bool) -> None:
    """Writes that reached the secondary but were never acknowledged (made directly while down).

    An unacknowledged operation is one the primary applied and recorded too, so these touch
    paths the primary changed. ``anywhere``: also a change on a path the primary never touched,
    which only a scan (or --full) resync can find (docs/resync.md).
    """
    with open(f"{s}/d/f0", "wb") as f:                    # a file the primary changed too
        f.write(b"junk that the primary never saw")
    os.makedirs(f"{s}/d/sub/new")                          # the primary created a file there
    with open(f"{s}/d/sub/new/inside", "wb") as f:
        f.write(b"x")
    with open(f"{s}/victim", "ab") as f:                  # the primary deleted it
        f.write(b"more")
    if anywhere:
        with open(f"{s}/d/extra", "wb") as f:             # an extra entry the primary never saw
            f.write(b"extra")
        with open(f"{s}/d/f4", "ab") as f:
            f.write(b"!")
    os.chmod(f"{s}/keep", 0o666)
    with open(f"{s}/big", "r+b") as f:                     # a block the primary overwrote too
        f.seek(4096 * 10)
        f.write(b"\0" * 3000)


def _outage_cycle(pair, unacked: bool, anywhere: bool = False) -> None:
    p, s = pair.primary, pair.secondary
    go_alone(pair)
    _change_while_alone(p)
    assert mount_state(pair) == "ALONE"
    if unacked:
        _unacknowledged_on_returning_side(s, anywhere)
    pair.start_receiver()
    resync(pair)
    assert mount_state(pair) == "PRIM"
    assert_equal_trees(pair)
    wait_for(lambda: receiver_status(pair)["uptodate"], 5, what="receiver status uptodate")
    assert receiver_uptodate_in_journal(pair)
    # The mirror streams again: a write after the resync arrives synchronously.
    with open(f"{p}/after", "wb") as f:
        f.write(b"after the resync")
    with open(f"{s}/after", "rb") as f:
        assert f.read() == b"after the resync"
    assert_equal_trees(pair)


@pytest.mark.parametrize("unacked", [False, True], ids=["clean", "unacked-on-returning-side"])
def test_first_outage_resyncs_by_scan(mirror_factory, unacked):
    """A pair that never completed a resync has no common generation: the resync scans."""
    pair = mirror_factory("m", timeout=3).start()
    _populate(pair.primary)
    _outage_cycle(pair, unacked, anywhere=True)
    assert resync_modes(pair) == ["scan"]


@pytest.mark.parametrize("unacked", [False, True], ids=["clean", "unacked-on-returning-side"])
def test_later_outage_resyncs_incrementally(mirror_factory, unacked):
    pair = mirror_factory("m", timeout=3).start()
    _populate(pair.primary)
    establish(pair)
    _outage_cycle(pair, unacked)
    assert resync_modes(pair) == ["scan", "incremental"]


def test_only_changed_bytes_travel(mirror_factory):
    """A 48 MiB file with a few scattered changed pages: the resync sends about those bytes."""
    pair = mirror_factory("m", timeout=3).start()
    p = pair.primary
    size = 48 * 1024 * 1024
    rnd = random.Random(7)
    with open(f"{p}/large", "wb") as f:
        for _ in range(size // (1 << 20)):
            f.write(rnd.randbytes(1 << 20))
    establish(pair)
    go_alone(pair)
    changed = 0
    with open(f"{p}/large", "r+b") as f:
        for i, page in enumerate(sorted(rnd.sample(range(0, size // 4096), 24))):
            if i % 2:                                   # a database page
                f.seek(page * 4096)
                f.write(rnd.randbytes(4096))
                changed += 4096
            else:                                       # a record at no particular alignment
                f.seek(page * 4096 + rnd.randrange(0, 1000))
                f.write(rnd.randbytes(3000))
                changed += 3000
    pair.start_receiver()
    before = receiver_status(pair)["bytes_applied"]
    resync(pair)
    wait_for(lambda: receiver_status(pair)["bytes_applied"] > before, 5, what="receiver counters")
    sent = pair.status()["bytes_sent"]           # the resync's link only (a new client)
    applied = receiver_status(pair)["bytes_applied"] - before
    assert_equal_trees(pair)
    assert resync_modes(pair)[-1] == "incremental"
    metadata = 64 * 1024                         # queries, checksums, attributes: generous
    assert applied <= 2 * changed, f"data applied {applied} for {changed} changed bytes"
    assert sent <= 2 * changed + metadata, f"link sent {sent} for {changed} changed bytes"


def test_full_resync_to_an_empty_secondary(mirror_factory):
    pair = mirror_factory("m", timeout=3).start()
    _populate(pair.primary)
    _change_while_alone(pair.primary)
    go_alone(pair)
    shutil.rmtree(pair.secondary)                 # a new, empty disk on the secondary
    os.mkdir(pair.secondary)
    shutil.rmtree(pair.rstate)
    pair.start_receiver()
    resync(pair, "--full")
    assert resync_modes(pair) == ["full"]
    assert_equal_trees(pair)
    assert receiver_uptodate_in_journal(pair)
