"""A resync resumed after a lost peer leaves the peer byte-identical (issue 15, "what remains" 1).

The campaign (PostgreSQL, seed 1602 trial 3) saw ``resync done (scan): 11599872 bytes, 3 file(s)``
while the target lacked ``data/pg_xact``, ``data/postgresql.conf``... : a scan had set the peer's
``data`` aside and was copying it back in path order when the link was lost; the next resync had
the same id, so it *resumed*, and it skipped every path the first one had marked done, ``data``
included, and with it everything beneath it. A done mark says "this entry was right on the peer
when it was marked", never "its subtree is" nor "it still is": a path written while ALONE between
the two runs was skipped the same way. Real processes, real FUSE, every byte compared.
"""

import glob
import os
import random
import sqlite3

from tests.conftest import needs_root
from tests.mirror_fixtures import wait_for
from tests.test_resync_common import (alone_on_secondary, assert_equal_trees, control, files, go_alone, mount_state,
                                      resync, resync_modes)

pytestmark = needs_root

MIB = 1 << 20


def _journal_paths(pair, table: str) -> set[str]:
    """Paths of a table of the mount's journal (``resync_done``, ``changed_paths``), read beside it."""
    db = sqlite3.connect(f"file:{os.path.join(pair.state, 'journal.db')}?mode=ro", uri=True)
    try:
        return {os.fsdecode(row[0]) for row in db.execute(f"SELECT path FROM {table}")}
    finally:
        db.close()


def _interrupt_after(pair, marked: str, *extra: str) -> None:
    """Start a resync at 1 MB/s, wait until ``marked`` is done, then lose the link (the receiver
    lives on, as in the campaign's one-way loss: no unclean stop makes it report lost paths).
    A path is marked once the peer acknowledged it, in a batch after the next path's copy."""
    resync(pair, "--bandwidth", "1", "--no-wait", *extra)
    wait_for(lambda: mount_state(pair) == "SYNCING", 10, what="the resync to start")
    wait_for(lambda: marked in _journal_paths(pair, "resync_done"), 30, what=f"{marked} marked done")
    control(pair, {"cmd": "alone", "reason": "test: link lost"})
    wait_for(lambda: mount_state(pair) == "ALONE", 15, what="the mount to go ALONE")


def _resume(pair, *extra: str) -> None:
    wait_for(lambda: "already running" not in resync(pair, *extra, check=False).stderr, 30,
             what="the interrupted resync's thread to end and a new resync to run")
    assert mount_state(pair) == "PRIM"
    assert resync_modes(pair) == ["scan", "scan"]


def _tree(p: str, rnd: random.Random) -> None:
    """In path order: a directory whose children take seconds to copy at 1 MB/s."""
    os.makedirs(f"{p}/data/sub")
    with open(f"{p}/data/a", "wb") as f:
        f.write(rnd.randbytes(MIB))
    for name in ("b", "z"):
        with open(f"{p}/data/{name}", "wb") as f:
            f.write(rnd.randbytes(3 * MIB))
    for name in ("c.conf", "sub/e"):
        with open(f"{p}/data/{name}", "wb") as f:
            f.write(name.encode() * 100)


def _first_outage(pair, rnd: random.Random) -> None:
    """The pair never completed a resync (no common generation): the resyncs are scans."""
    go_alone(pair)
    _tree(pair.primary, rnd)


def test_a_resumed_scan_visits_what_is_beneath_a_directory_marked_done(mirror_factory):
    pair = mirror_factory("m", timeout=3).start()
    _first_outage(pair, random.Random(1602))
    pair.start_receiver()
    _interrupt_after(pair, "data")            # "data" done; "data/b" partly copied
    assert "data/c.conf" not in _journal_paths(pair, "resync_done")
    _resume(pair)
    assert_equal_trees(pair)


def test_a_path_written_after_it_was_marked_done_is_resynced(mirror_factory):
    rnd = random.Random(1603)
    pair = mirror_factory("m", timeout=3).start()
    _first_outage(pair, rnd)
    pair.start_receiver()
    _interrupt_after(pair, "data/a")          # "data/a" done; "data/z" partly copied
    with open(f"{pair.primary}/data/a", "r+b") as f:   # the application writes on while ALONE
        f.write(rnd.randbytes(4096))
    _resume(pair)
    assert_equal_trees(pair)


def test_keep_aside_sets_aside_what_the_peer_changed_once_and_never_a_whole_directory(mirror_factory):
    """The campaign's shape: the peer changed files beneath ``data`` on its own (a split brain, or
    a crashed primary's logged writes) and the resync that sets them aside is interrupted. The
    scan used to set the peer's whole ``data`` aside and copy ours back file by file (all of a
    database, kept twice on the peer); it sets aside only what the peer changed, and the resumed
    run does not set aside again what is now our copy."""
    rnd = random.Random(1604)
    pair = mirror_factory("m", timeout=3).start()
    p, s = pair.primary, pair.secondary
    _tree(p, rnd)                                       # through the mount: on both sides
    go_alone(pair)
    for name in ("b", "z"):                             # ours: 3 MiB each to send at 1 MB/s
        with open(f"{p}/data/{name}", "r+b") as f:
            f.write(rnd.randbytes(3 * MIB))
    with alone_on_secondary(pair):                      # B takes over too and changes data
        with open(f"{s}/data/a", "r+b") as f:
            f.write(b"B's version of a")
        with open(f"{s}/data/own", "wb") as f:
            f.write(b"B's own\n")
    own = {path: data for path, data in files(s).items() if path in ("data/a", "data/own")}
    pair.start_receiver()
    _interrupt_after(pair, "data/a", "--keep-aside")    # "data/a" set aside, ours copied; "data/z" partly
    _resume(pair, "--keep-aside")
    assert_equal_trees(pair)
    conflicts = glob.glob(f"{s}/.hamirror-conflicts/*")
    assert len(conflicts) == 1, conflicts
    assert files(conflicts[0]) == own
