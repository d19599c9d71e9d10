"""The replicated directory itself in a changed set (issue 15, finding 13).

A module's start script changes the directory itself (PostgreSQL's ``chmod 0700 "$top"``): the
journal then names ``.``. After a power-kill of the primary while it streamed, both journals held
``.`` (the crashed node's through its folded activity log, ``whole=1``), and the survivor's
failback resync, which the agent runs with keep-aside, began with a REMOVE of the directory
itself, which the receiver refuses: a failback that never completed. ``.`` is compared (its
entries and attributes), never removed.
"""

import os
import signal
import sqlite3
import threading

from tests.conftest import needs_root
from tests.mirror_fixtures import failback_pair, wait_for
from tests.test_resync_common import assert_equal_trees, establish, kill9, lower_dir, mount_log, resync, resync_modes

pytestmark = needs_root


def _journal_entry(state_dir: str, path: bytes) -> tuple | None:
    db = sqlite3.connect(f"file:{os.path.join(state_dir, 'journal.db')}?mode=ro", uri=True)
    try:
        return db.execute("SELECT path, whole FROM changed_paths WHERE path = ?", (path,)).fetchone()
    finally:
        db.close()


def test_failback_with_the_directory_itself_changed_on_both_sides_completes(mirror_factory):
    pair = mirror_factory("m", timeout=30).start()
    p, s = pair.primary, pair.secondary
    os.makedirs(f"{p}/data")
    with open(f"{p}/data/table", "wb") as f:
        f.write(b"row\n" * 5000)
    establish(pair)
    lower = lower_dir(pair)
    os.kill(pair.receiver.pid, signal.SIGSTOP)           # nothing reaches the peer any more
    # The start script's chmod of the directory itself, in flight when the primary loses power.
    chmod = threading.Thread(target=lambda: _quiet(lambda: os.chmod(p, 0o700)), daemon=True)
    chmod.start()
    wait_for(lambda: os.stat(lower).st_mode & 0o777 == 0o700, 10, what="the chmod on the primary's disk")
    kill9(pair.mounter)
    kill9(pair.receiver)
    pair.umount()
    chmod.join(10)

    back = failback_pair(pair)                           # the secondary takes over on its own
    try:
        back.mount(extra=("--alone",))
        q = back.primary
        os.chmod(q, 0o750)                               # its own start script: the survivor's "."
        with open(f"{q}/data/table", "r+b") as f:
            f.write(b"survivor")
        back.start_receiver()                            # the old primary returns as secondary
        wait_for(lambda: _journal_entry(back.rstate, b".") is not None, 10,
                 what="the crashed node's activity log folded into its journal")
        assert _journal_entry(back.rstate, b".") == (b".", 1)     # as the campaign found it
        assert _journal_entry(back.state, b".") == (b".", 0)
        resync(back, "--keep-aside")                     # the agent's resync always keeps aside
        assert resync_modes(back) == ["incremental"]
        assert "not allowed on the replicated directory itself" not in mount_log(back)
        assert_equal_trees(back)
        assert os.stat(s).st_mode & 0o777 == 0o750       # the survivor's mode won
    finally:
        back.stop()


def _quiet(call) -> None:
    try:
        call()
    except OSError:       # the mount dies under the call
        pass
