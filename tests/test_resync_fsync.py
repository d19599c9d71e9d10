"""An fsync during an online resync, of a file the resync has not copied yet.

Found by the MariaDB module in the lab (issue 9): after a failover MariaDB starts a new binary log
on the new primary; at failback it appends to it and fsyncs it at each commit while the resync
runs. The FSYNC went to the peer, which had no such file yet: ENOENT, session closed, resync
restarted, forever. An fsync of a pending path is held like the writes to it (the resync copies
the file afterwards); the resync ends and both trees are equal.
"""

import os
import random
import threading
import time

from tests.conftest import needs_root
from tests.mirror_fixtures import wait_for
from tests.test_resync_common import assert_equal_trees, establish, go_alone, mount_log, mount_state, resync

pytestmark = needs_root


def test_fsync_of_a_file_the_resync_has_not_reached(mirror_factory):
    rnd = random.Random(9)
    pair = mirror_factory("m", timeout=3).start()
    p = pair.primary
    establish(pair)
    go_alone(pair)
    with open(f"{p}/a-bulk", "wb") as f:                     # keeps the resync busy for a while
        f.write(rnd.randbytes(16 << 20))
    with open(f"{p}/z-binlog.000002", "wb") as f:            # made while the peer was away
        f.write(b"header\n")
    pair.start_receiver()

    stop = threading.Event()
    lines: list[bytes] = []
    errors: list[BaseException] = []

    def appender() -> None:
        try:
            with open(f"{p}/z-binlog.000002", "ab") as f:
                while not stop.is_set():
                    line = f"commit {len(lines)}\n".encode()
                    f.write(line)
                    f.flush()
                    os.fsync(f.fileno())                    # each commit, as with sync_binlog = 1
                    lines.append(line)
                    time.sleep(0.01)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=appender)
    thread.start()
    try:
        result = resync(pair, "--bandwidth", "8", check=False, timeout=120)
    finally:
        stop.set()
        thread.join(30)
    assert result.returncode == 0, (result.stdout, result.stderr, mount_log(pair)[-3000:])
    wait_for(lambda: mount_state(pair) == "PRIM", 30, what="PRIM after the resync")
    assert not errors, errors
    assert "refused operation" not in mount_log(pair)
    assert len(lines) > 20
    with open(f"{pair.secondary}/z-binlog.000002", "rb") as f:
        assert f.read() == b"header\n" + b"".join(lines)
    assert_equal_trees(pair)
