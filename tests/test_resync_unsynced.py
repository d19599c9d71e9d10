"""What a crashed secondary acknowledged but lost is resynced (issue 15, finding 4), at the mirror level.

The issue's reproduction by hand, with real FUSE and real sockets: write through the mount
without fsync, kill -9 the receiver, overwrite the last MiB of the secondary's copy with zeros
(what a real crash loses; size and mtime kept, so no metadata comparison can see it), start the
receiver again, resync: the copies must be equal. Then the same when the receiver's log is
damaged (every block is compared), and the receiver is not up to date until the resync.
"""

from __future__ import annotations

import os

from hamirror.journal import unsynced
from tests.conftest import needs_root
from tests.test_resync_common import (assert_equal_trees, establish, go_alone, lost_data_is_resynced, resync,
                                      resync_modes)

pytestmark = needs_root

MIB = 1024 * 1024


def _lose_last_mib(path: str) -> None:
    """What a power loss does to pages the disk never got: zeros, times kept."""
    st = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(st.st_size - MIB)
        f.write(bytes(MIB))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _write_unsynced(pair, name: str) -> None:
    with open(os.path.join(pair.primary, name), "wb") as f:
        for _ in range(8):
            f.write(os.urandom(MIB))


def test_acknowledged_data_lost_by_a_crashed_secondary_is_resynced(mirror_factory):
    pair = mirror_factory("m", timeout=3).start()
    establish(pair)
    _write_unsynced(pair, "big")
    go_alone(pair)                                   # kill -9 of the receiver
    _lose_last_mib(os.path.join(pair.secondary, "big"))
    lost_data_is_resynced(pair)


def test_a_damaged_unsynced_log_compares_every_block(mirror_factory):
    pair = mirror_factory("m", timeout=3).start()
    establish(pair)
    _write_unsynced(pair, "big")
    go_alone(pair)
    _lose_last_mib(os.path.join(pair.secondary, "big"))
    with open(os.path.join(pair.rstate, unsynced.UNSYNCED_LOG), "wb") as f:
        f.write(b"not a log")
    pair.start_receiver()
    resync(pair)
    assert resync_modes(pair)[-1] == "full"
    assert_equal_trees(pair)
