"""What an interrupted resync partly copied is copied again by the next one (issue 15, finding 3).

A resync copies a file in pieces; live writes to it stream meanwhile with the primary's times.
Killed partway, the peer may hold a file of the right size whose last change carried the
primary's mtime, yet half of it is still the old content: a scan that trusts size and mtime
then calls the pair up to date while the copies differ (the campaign found 1.5 MB of
``kv.sqlite3-wal`` so). Children the resync discovered by listing a directory are in no journal,
so an incremental resync after a lost peer never looked at them again. Both are checked here
byte for byte, with real processes: kill -9 of the sender (then a takeover with a new
generation, as the agent does after a power loss) and of the receiver.
"""

import os
import random

from tests.conftest import needs_root
from tests.mirror_fixtures import wait_for
from tests.test_resync_common import (assert_equal_trees, control, establish, go_alone, kill9, mount_state, resync,
                                      resync_modes)

pytestmark = needs_root

MIB = 1 << 20


def _progress(pair) -> int:
    resync_status = control(pair, {"cmd": "status"})["status"].get("resync") or {}
    return resync_status.get("done_bytes", 0)


def _slow_resync(pair, at_least: int) -> None:
    """Start a resync at 1 MB/s and return once ``at_least`` bytes are done (mid-way)."""
    resync(pair, "--bandwidth", "1", "--no-wait")
    wait_for(lambda: mount_state(pair) == "SYNCING", 10, what="the resync to start")
    wait_for(lambda: _progress(pair) >= at_least, 30, what=f"{at_least} bytes resynced")


def test_a_file_partly_copied_when_the_sender_died_is_copied_again(mirror_factory):
    rnd = random.Random(15)
    pair = mirror_factory("m", timeout=5).start()
    p = pair.primary
    with open(f"{p}/kv.sqlite3-wal", "wb") as f:
        f.write(rnd.randbytes(8 * MIB))
    establish(pair)
    go_alone(pair)
    with open(f"{p}/kv.sqlite3-wal", "r+b") as f:        # a new WAL generation, same size, while ALONE
        f.write(rnd.randbytes(8 * MIB))
    pair.start_receiver()
    _slow_resync(pair, 2 * MIB)
    with open(f"{p}/kv.sqlite3-wal", "r+b") as f:        # a live commit: streams with the primary's times
        f.write(b"live frame")
    kill9(pair.mounter)                                    # power loss of the sender mid-copy
    pair.umount()
    pair.mount(("--alone",))                               # it comes back primary: a new generation
    resync(pair)
    assert resync_modes(pair)[-1] == "scan"
    assert_equal_trees(pair)


def test_children_a_resync_created_are_visited_again_after_the_receiver_died(mirror_factory):
    rnd = random.Random(16)
    pair = mirror_factory("m", timeout=5).start()
    p = pair.primary
    os.makedirs(f"{p}/old")
    with open(f"{p}/old/table", "wb") as f:
        f.write(rnd.randbytes(8 * MIB))
    establish(pair)
    go_alone(pair)
    os.rename(f"{p}/old", f"{p}/new")                     # recorded: "old" and "new", not "new/table"
    pair.start_receiver()
    _slow_resync(pair, 2 * MIB)                            # "new/table" is being created and copied
    pair.kill_receiver()
    wait_for(lambda: mount_state(pair) == "ALONE", 15, what="ALONE after the receiver died")
    pair.start_receiver()
    wait_for(lambda: "already running" not in resync(pair, check=False).stderr, 30,
             what="the interrupted resync's thread to end and a new resync to run")
    assert mount_state(pair) == "PRIM"
    assert resync_modes(pair)[-1] == "incremental"
    assert_equal_trees(pair)


def test_a_crash_during_a_resync_still_folds_the_activity_log_for_the_scan():
    """The scan that follows compares the logged paths by blocks: a write in flight at the crash
    leaves size and mtime alike within one clock tick. The journal is still not complete."""
    from hamirror.resync.crash import decide
    for saved, lost_from in (("ALONE", None), ("FENCED", "SYNCING"), ("REFUSED", "SYNCING")):
        result = decide(saved, lost_from, saved == "ALONE", frozenset({"kv.sqlite3-wal"}))
        assert (result.fold, result.covered) == (True, False), saved
        assert decide(saved, lost_from, saved == "ALONE", None).fold is False
