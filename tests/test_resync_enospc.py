"""A resync that fails the same way again and again is an alarm, not a silent retry (issue 15,
finding 12): the secondary's disk is full (a real ENOSPC: its directory is a small tmpfs).

Each try fails with the receiver's refusal; the mount counts the failures in a row in its journal
(a restart of the mount keeps the count) and its status says so from the third on, with the
failure's text, which the agent turns into the alarm of ``hamirror status``, the events and the
metrics (tests/test_agent_*.py). The secondary is stale (not up to date) and the primary keeps
serving writes meanwhile.
"""

import os
import random

from tests.conftest import needs_root
from tests.mirror_fixtures import own_filesystem
from tests.test_resync_common import (control, establish, go_alone, mount_state, receiver_uptodate_in_journal,
                                      resync)

pytestmark = needs_root


def test_a_full_disk_on_the_secondary_is_an_alarm_after_three_tries(mirror_factory):
    pair = mirror_factory("m", timeout=5)
    with own_filesystem(pair.secondary, size="4m"):
        pair.start()
        p = pair.primary
        with open(f"{p}/small", "wb") as f:
            f.write(b"fits")
        establish(pair)
        go_alone(pair)
        with open(f"{p}/big", "wb") as f:                 # more than the secondary's disk holds
            f.write(random.Random(12).randbytes(8 << 20))
        pair.start_receiver()
        errors = []
        for attempt in range(3):
            result = resync(pair, check=False)
            assert result.returncode != 0
            errors.append(result.stderr)
            failed = control(pair, {"cmd": "status"})["status"]["resync_failures"]
            assert failed["count"] == attempt + 1
        assert failed["error"].startswith("peer refused operation ")    # the receiver's words, e.g.
        assert "No space left on device" in failed["error"] or "short write on the secondary" in failed["error"]
        assert mount_state(pair) == "ALONE"
        assert not receiver_uptodate_in_journal(pair)     # the secondary is stale, and says so
        with open(f"{p}/after", "wb") as f:              # the primary never hangs
            f.write(b"still serving")
            os.fsync(f.fileno())
        pair.umount()                                     # a restart of the mount keeps the count
        pair.mount()
        assert control(pair, {"cmd": "status"})["status"]["resync_failures"]["count"] == 3
        os.unlink(f"{p}/big")                             # the operator makes room: the next try completes
        os.unlink(f"{pair.secondary}/big")
        resync(pair)
        assert control(pair, {"cmd": "status"})["status"]["resync_failures"] is None
        assert receiver_uptodate_in_journal(pair)
        pair.stop()


def test_a_write_the_full_secondary_cannot_apply_marks_it_stale(mirror_factory):
    """Streaming, not resyncing: the secondary refuses the write it cannot apply and says it is
    no longer up to date, so it cannot take over with a copy that lacks acknowledged writes."""
    pair = mirror_factory("m", timeout=5)
    with own_filesystem(pair.secondary, size="4m"):
        pair.start()
        p = pair.primary
        establish(pair)
        assert receiver_uptodate_in_journal(pair)
        with open(f"{p}/big", "wb") as f:                 # the primary goes on alone (no fencing here)
            f.write(random.Random(13).randbytes(8 << 20))
        assert mount_state(pair) == "ALONE"
        assert not receiver_uptodate_in_journal(pair)
        pair.stop()
