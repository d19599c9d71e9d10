"""A directory rename must not hide a write the secondary lost (docs/journal.md, "Renames").

The peer applies a write to D/f (acknowledged, in its page cache), then the rename of D to E. A
power loss of the peer may keep the rename (ext4's metadata journal) and lose f's data: E/f is then
a hole on the peer. Every record that keeps "what may not be durable" is keyed by path, so unless
a directory rename carries the hot paths under D over to E, the records name D/f (gone on both
sides), D and E (whose listings match) and never E/f: the copies differ under "up to date".

Mirror level (real FUSE, real receiver, the power loss emulated as in tests/test_peer_durability.py:
the secondary's dirty pages zeroed): a delegated session (the primary's activity log keeps the
record) and an old-style session (the receiver's own unsynced log). Unit: the activity log (link
loss, crash fold of the primary itself, capacity) and the unsynced log carry the paths over.
"""

from __future__ import annotations

import os

import pytest

from hamirror.journal import unsynced
from hamirror.journal.activity import ActivityLog, dir_key, read_log
from hamirror.journal.durability import INTERVAL_ENV, Epochs
from hamirror.journal.journal import Journal
from tests.test_journal_hotdirs import Ticket, root  # noqa: F401 (root: a fixture)

NEVER = 3600.0


# mirror level ------------------------------------------------------------------------------------

# Alone (the serial step): another test's syncfs of the one filesystem would make the secondary's
# pages durable before the emulated power loss, which then loses nothing (the test would prove nothing).
@pytest.mark.serial
@pytest.mark.parametrize("delegated", [True, False], ids=["delegated", "receiver-log"])
def test_a_write_lost_under_a_renamed_directory_is_resynced(mirror_factory, monkeypatch, delegated):
    from hamirror.lab import pagecache, powerloss
    from tests.test_resync_common import establish, go_alone, lost_data_is_resynced
    if pagecache.unsupported():
        pytest.skip(pagecache.unsupported())
    monkeypatch.setenv(INTERVAL_ENV, "600")     # one filesystem holds both copies: no background sync
    pair = mirror_factory("m", timeout=3)
    for side in (pair.primary, pair.secondary):  # an existing file, not hot: it enters by its own path
        os.makedirs(os.path.join(side, "old", "sub"))
        with open(os.path.join(side, "old", "sub", "f"), "wb") as f:
            f.write(b"\1" * 65536)
    pair.start_receiver()
    pair.mount(() if delegated else ("--no-activity-log",))   # no log: the receiver keeps its own
    establish(pair)
    p = pair.primary
    os.makedirs(f"{p}/D/deep")
    for name in ("D/f", "D/deep/g"):             # new files: their directories enter, not the paths
        with open(f"{p}/{name}", "wb") as f:
            f.write(os.urandom(65536))
    with open(f"{p}/old/sub/f", "r+b") as f:     # an existing file under the renamed one's ancestor
        f.write(os.urandom(65536))
    os.rename(f"{p}/D", f"{p}/E")
    os.rename(f"{p}/old", f"{p}/new")
    os.rename(f"{p}/new/sub", f"{p}/new/moved")  # a rename under a renamed directory, and back
    os.rename(f"{p}/new/moved", f"{p}/new/sub")
    go_alone(pair)                               # kill -9 of the receiver: the link is lost
    lost = powerloss.lose_unsynced([pair.secondary])   # the power loss: unsynced pages are zeros
    assert lost > 0, "nothing was unsynced on the secondary: the test proves nothing"
    lost_data_is_resynced(pair)                  # bytes of both copies equal, up to date again


def _two_directories(mirror_factory, established: bool = True, **settings):
    """A pair (``settings``: mirror_factory's) with D/f, D/sub/g, E/f and E/sub/g on each side:
    same names, sizes and times, other bytes (a listing, a size and an mtime cannot tell them apart
    once the directories swap names); started, ``established`` (a resync done: the next one is
    incremental)."""
    from tests.test_resync_common import establish
    pair = mirror_factory("m", timeout=3, **settings)
    for side in (pair.primary, pair.secondary):
        for d, byte in (("D", b"a"), ("E", b"b")):
            os.makedirs(f"{side}/{d}/sub")
            for name in ("f", "sub/g"):
                with open(f"{side}/{d}/{name}", "wb") as f:
                    f.write(byte * 5000)
                os.utime(f"{side}/{d}/{name}", ns=(10**18, 10**18))
    pair.start()
    if established:
        establish(pair)
    return pair


def _swap(top: str, exchange: bool) -> None:
    """D and E trade names: RENAME_EXCHANGE, or E renamed away and D renamed to E."""
    from hamirror.syscalls import RENAME_EXCHANGE, renameat2
    if exchange:
        renameat2(-100, f"{top}/D".encode(), -100, f"{top}/E".encode(), RENAME_EXCHANGE)
    else:
        os.rename(f"{top}/E", f"{top}/X")
        os.rename(f"{top}/D", f"{top}/E")


@pytest.mark.parametrize("exchange,mode", [(False, "incremental"), (True, "incremental"), (False, "scan")],
                         ids=["renames", "exchange", "renames-scan"])
def test_directories_swapped_while_alone_are_resynced(mirror_factory, exchange, mode):
    """No lost write at all: D and E swap names while the peer is away. The peer's E/f is the old
    E's, ours the old D's; same name, size and mtime. The rename records a subtree mark on each
    destination, and the resync compares everything beneath it whole: incremental, and a scan
    (the first outage of a pair), which trusts equal metadata unless a journal names the path."""
    from tests.test_resync_common import assert_equal_trees, go_alone, resync, resync_modes
    pair = _two_directories(mirror_factory, established=mode == "incremental")
    go_alone(pair)
    _swap(pair.primary, exchange)
    pair.start_receiver()
    resync(pair)
    assert resync_modes(pair)[-1] == mode
    assert_equal_trees(pair)


def test_directories_swapped_unacknowledged_when_the_link_drops_are_resynced(mirror_factory):
    """The same swap streamed in async mode to a receiver that is stopped (SIGSTOP: it applies
    nothing), then killed: the link loss records the two unacknowledged renames, each destination
    as a subtree, and the peer still holds D and E as they were."""
    import signal
    from tests.mirror_fixtures import wait_for
    from tests.test_resync_common import assert_equal_trees, go_alone, resync, resync_modes
    pair = _two_directories(mirror_factory, mode="async")
    pid = pair.receiver.pid
    os.kill(pid, signal.SIGSTOP)
    wait_for(lambda: open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "T", 10,
             what="the receiver to stop")
    _swap(pair.primary, exchange=False)         # async: applied here, queued for the peer
    go_alone(pair)                              # kill -9 of the stopped receiver: never applied
    assert os.path.isdir(f"{pair.secondary}/D") and not os.path.exists(f"{pair.secondary}/X")
    pair.start_receiver()
    resync(pair)
    assert resync_modes(pair)[-1] == "incremental"
    assert_equal_trees(pair)


def test_directories_swapped_by_calls_held_during_a_resync_are_resynced(mirror_factory):
    """D and E are in the changed set, so a resync holds calls on them until it reaches them; it is
    still copying A (1 MB/s) when they swap: the held renames mark the subtrees in the journal, and
    the resync, reading the marks live, compares beneath E whole when it gets there."""
    from tests.mirror_fixtures import wait_for
    from tests.test_resync_common import assert_equal_trees, control, go_alone, mount_state, resync
    pair = _two_directories(mirror_factory)
    go_alone(pair)
    p = pair.primary
    with open(f"{p}/A", "wb") as f:            # visited first (paths in order), copied slowly
        f.write(os.urandom(4 << 20))
    for d in ("D", "E"):
        os.chmod(f"{p}/{d}", 0o750)
    pair.start_receiver()
    resync(pair, "--bandwidth", "1", "--no-wait")
    wait_for(lambda: mount_state(pair) == "SYNCING", 15, what="the resync to start")
    _swap(p, exchange=False)
    progress = control(pair, {"cmd": "status"})["status"]["resync"]
    assert progress["done_bytes"] < 4 << 20, progress   # still on A: D and E were not reached yet
    wait_for(lambda: mount_state(pair) == "PRIM", 60, what="the resync to finish")
    assert_equal_trees(pair)


def test_directories_swapped_on_the_losing_side_of_a_split_brain_are_set_aside(mirror_factory):
    """B, alone too, swaps D and E: its journal holds the subtree marks, and its answer to CHANGES
    names every path beneath them, so A (which changed nothing there) compares them whole and B's
    versions go to the conflict folder instead of staying under A's names."""
    import glob
    from tests.test_resync_common import alone_on_secondary, assert_equal_trees, files, go_alone, resync
    pair = _two_directories(mirror_factory)
    go_alone(pair)
    with alone_on_secondary(pair) as s:
        _swap(s, exchange=False)
    pair.start_receiver()
    resync(pair, "--keep-aside")
    assert_equal_trees(pair)
    aside = files(glob.glob(f"{pair.secondary}/.hamirror-conflicts/*")[0])
    assert aside["E/f"] == b"a" * 5000 and aside["E/sub/g"] == b"a" * 5000, sorted(aside)


def test_a_rename_marks_a_directory_s_destination_as_a_subtree_and_a_file_s_as_whole(tmp_path):
    """What the mount records for a rename while the peer is away (hamirror/fs/operations.py): a
    file's rename stays a whole-file mark, so it never raises the journal's format."""
    from hamirror.fs.operations import _renamed
    from hamirror.link.client import SUBTREE, WHOLE
    os.makedirs(tmp_path / "dir")
    (tmp_path / "file").write_bytes(b"x")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert _renamed(fd, "file", (("file", "g"),)) == (("file",), ("g", WHOLE))
        assert _renamed(fd, "dir", (("dir", "e"),)) == (("dir",), ("e", SUBTREE))
        assert _renamed(fd, "dir", (("dir", "file"), ("file", "dir"))) == (("file", SUBTREE), ("dir", WHOLE))
    finally:
        os.close(fd)


# unit: the activity log --------------------------------------------------------------------------

def _rename(al: ActivityLog, top: str, src: str, dst: str, seq: int) -> None:
    """What the mount does for a rename: enter both names (the destination is new), apply, leave."""
    carried = al.enter([src, dst], new=[dst], moved=((src, dst),))
    os.rename(f"{top}/{src}", f"{top}/{dst}")
    al.leave([src, dst], Ticket(seq=seq), carried)


def _write(al: ActivityLog, top: str, path: str, seq: int, new: bool = False) -> None:
    al.enter([path], new=[path] if new else ())
    with open(f"{top}/{path}", "ab") as f:
        f.write(b"x")
    al.leave([path], Ticket(seq=seq))


def _log(tmp_path, top: str, fd: int, dirs: tuple[str, ...], files: tuple[str, ...] = (),
         capacity: int = 4096) -> ActivityLog:
    """A tree, and an activity log over it whose peer has nothing durable yet (a delegated session)."""
    for d in dirs:
        os.makedirs(f"{top}/{d}")
    for name in files:
        with open(f"{top}/{name}", "wb"):
            pass
    al = ActivityLog(str(tmp_path / "activity.log"), capacity=capacity, root_fd=fd)
    al.peer = lambda ticket: False
    return al


def test_a_renamed_directory_carries_its_hot_paths_and_entries_to_the_destination(tmp_path, root):
    top, fd = root
    al = _log(tmp_path, top, fd, ("D/sub", "old/a/b"), ("old/a/b/f",))
    _write(al, top, "D/sub/new", 1, new=True)    # a directory entry only: "D/sub/"
    _write(al, top, "old/a/b/f", 2)              # a path entry, two levels under the renamed one
    _rename(al, top, "D", "E", 3)
    _rename(al, top, "old", "mid", 4)
    _rename(al, top, "mid", "old", 5)            # and back: the paths are hot under "old" again
    assert {dir_key("E/sub"), "mid/a/b/f", "old/a/b/f"} <= set(al.hot())
    assert {"E/sub/new", "old/a/b/f"} <= set(al.not_on_peer())   # what a lost link records
    al.close()
    replay = read_log(al.path)                   # the file (the crash fold) names them too
    assert "E/sub" in replay.dirs and "old/a/b/f" in replay.paths


def test_a_call_still_inside_under_the_destination_keeps_the_entry_it_is_charged_to(tmp_path, root):
    """An unlink of E/f has applied and released the ordering lock, not yet left the log, when D
    (with a hot D/f) is renamed onto the now empty E: E/f is carried while that call is charged to
    "E/". A write to E/f that comes and goes meanwhile must not settle the unlink's slot."""
    from hamirror.journal.activity import choose_victims
    top, fd = root
    al = _log(tmp_path, top, fd, ("D", "E"), ("D/f",))
    _write(al, top, "E/f", 1, new=True)          # "E/" enters
    _write(al, top, "D/f", 2)                    # "D/f" enters itself
    al.enter(["E/f"])                            # the unlink: charged to "E/"
    os.unlink(f"{top}/E/f")
    _rename(al, top, "D", "E", 3)
    _write(al, top, "E/f", 4)                    # a write to the moved file, in and out
    assert "E/" not in choose_victims(al._hot, len(al.hot()))   # the unlink is still inside
    al.leave(["E/f"], Ticket(seq=5))
    assert "E/" in choose_victims(al._hot, len(al.hot())) and not al._charged


def test_a_file_rename_carries_nothing_and_a_directory_rename_costs_one_append(tmp_path, root):
    top, fd = root
    al = _log(tmp_path, top, fd, ("D",))
    names = [f"D/f{i}" for i in range(50)]
    for i, name in enumerate(names):             # files written (not created by the call): path entries
        _write(al, top, name, i)
    _rename(al, top, "D/f0", "D/g0", 100)        # a file: nothing is under it
    assert not any(k.startswith("D/g0/") for k in al.hot())
    before = al.records
    _rename(al, top, "D", "E", 101)
    assert al.records == before + 1              # the rename's names and the 49 carried: one append
    assert {n.replace("D/", "E/", 1) for n in names[1:]} <= set(al.hot())


def test_the_crash_fold_of_the_primary_names_the_renamed_directory_s_files(tmp_path, root):
    """The primary's own power loss: its activity log is folded into its journal at the next start."""
    from hamirror.mirror import record
    from hamirror.mirror.states import MirrorState
    from hamirror.resync import crash
    top, fd = root
    state = tmp_path / "state"
    state.mkdir()
    os.makedirs(f"{top}/D")
    with Journal(str(state / "journal.db")) as journal:
        record.STATE.set(journal, MirrorState.PRIM)
        al = ActivityLog(crash.activity_log_path(journal), epochs=Epochs(fd), interval=NEVER, root_fd=fd)
        _write(al, top, "D/f", 1, new=True)
        _rename(al, top, "D", "E", 2)
        al.close()                               # not a clean stop: the log stays as it is
        assert crash.recover(journal, fd).covered
        assert "E/f" in journal.changed_paths()


def test_a_log_full_of_paths_under_the_renamed_directory_stays_bounded(tmp_path, root):
    top, fd = root
    al = _log(tmp_path, top, fd, ("D", "other"), capacity=64)
    for i in range(64):
        _write(al, top, f"D/f{i}", i)
    _rename(al, top, "D", "E", 100)              # 64 more paths: above capacity until settled
    assert {f"E/f{i}" for i in range(64)} <= set(read_log(al.path).paths)
    al.peer = None                               # the peer's disk has everything now
    for i in range(200):                         # other paths push the settled ones out again
        _write(al, top, f"other/x{i}", 400 + i)
    assert len(al.hot()) == 64


# unit: the receiver's own log (an older primary, or a mount without an activity log) -------------

def test_the_receiver_s_log_carries_paths_under_a_renamed_directory(tmp_path):
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        log = unsynced.UnsyncedLog(str(tmp_path / "u.log"), Epochs(fd), interval=NEVER)
        log.note([b"D/f", b"D/sub/g", b"Dx/h"], 1)
        log.note([b"D", b"E", b"."], 2, moved=((b"D", b"E"),))
        log.flush()
        assert {"E/f", "E/sub/g"} <= set(log.paths()) and "E/h" not in log.paths()
        assert {"E/f", "E/sub/g"} <= read_log(log.path).paths
        log.close(clean=False)
    finally:
        os.close(fd)
