"""Directories swapped while the mirror streams, then a crash: the records of what may differ must
name everything beneath the renamed directories (docs/journal.md, "Renames while the peer is away"
and "The activity log").

D and E hold the same names, sizes and times with other bytes; they trade names (RENAME_EXCHANGE,
or E -> X, D -> E) while the peer is connected. Then one disk misses the swap:

- the primary crashes before the peer applied the renames (the receiver is frozen, then both are
  killed): the old secondary takes over, and the old primary comes back as its receiver (the
  usual failback) or restarts as primary; its activity log is folded into its journal;
- the peer applied and acknowledged the renames, then lost them in a power loss of its own (its
  metadata journal not yet committed: undone here by hand, as tests/test_resync_crash.py takes a
  file from the crashed disk by hand): the primary's activity log (a delegated session) or the
  receiver's own unsynced log (a mount without an activity log) keeps the record.

A record that names D, E, X and their parent leads the resync to compare E's listing, which
matches, and never E/f: the copies differ under "up to date". The records carry a subtree mark
instead, and the resync compares everything beneath it whole.
"""

from __future__ import annotations

import os
import signal

import pytest

from hamirror.journal.activity import ActivityLog
from hamirror.journal.durability import INTERVAL_ENV, Epochs
from hamirror.journal.journal import Journal
from hamirror.journal.logformat import read_log
from tests.conftest import needs_root
from tests.test_journal_hotdirs import root  # noqa: F401 (a fixture)
from tests.mirror_fixtures import failback_pair, wait_for
from tests.test_rename_durability import _swap, _two_directories
from tests.test_resync_common import (assert_equal_trees, control, go_alone, kill9, lost_data_is_resynced, resync,
                                      resync_modes)

NEVER = 3600.0


def _crash_before_the_peer_applied(pair, exchange: bool) -> None:
    """The receiver stops applying (SIGSTOP); the swap is applied on the primary (async mode: the
    renames return after the local apply); then the mount daemon and the receiver are killed."""
    pid = pair.receiver.pid
    os.kill(pid, signal.SIGSTOP)
    wait_for(lambda: open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "T", 10,
             what="the receiver to stop")
    _swap(pair.primary, exchange)
    kill9(pair.mounter)                           # power-kill of the primary...
    kill9(pair.receiver)                          # ...and its peer never applied the swap
    pair.umount()
    s = pair.secondary
    assert open(f"{s}/E/f", "rb").read() == b"b" * 5000 and not os.path.exists(f"{s}/X")


@needs_root
@pytest.mark.parametrize("exchange", [False, True], ids=["renames", "exchange"])
def test_a_swap_the_peer_never_applied_is_resynced_after_a_failback(mirror_factory, exchange):
    """The old secondary takes over on its own (changing nothing); the crashed primary returns as
    its receiver and folds its activity log: its answer to CHANGES names everything beneath the
    swapped directories on its side, and the incremental resync compares them whole."""
    pair = _two_directories(mirror_factory, mode="async")
    _crash_before_the_peer_applied(pair, exchange)
    back = failback_pair(pair)
    try:
        back.mount(extra=("--alone",))
        back.start_receiver()
        resync(back)
        assert resync_modes(back) == ["incremental"]
        assert_equal_trees(back)
        assert open(f"{pair.primary}/E/f", "rb").read() == b"b" * 5000   # the survivor's E
    finally:
        back.stop()


@needs_root
def test_a_swap_the_peer_never_applied_is_resynced_by_the_restarted_primary(mirror_factory):
    """The crashed primary's mount starts again (fenced, then granted ALONE): its own fold puts the
    subtree marks in its journal, and its incremental resync compares beneath them whole."""
    pair = _two_directories(mirror_factory, mode="async")
    _crash_before_the_peer_applied(pair, exchange=False)
    pair.start_receiver()
    pair.mount(("--fence", "30"))
    assert control(pair, {"cmd": "status"})["status"]["state"] == "FENCED"
    control(pair, {"cmd": "alone", "reason": "test: the peer is not primary"})
    resync(pair)
    assert resync_modes(pair)[-1] == "incremental"
    assert_equal_trees(pair)
    assert open(f"{pair.secondary}/E/f", "rb").read() == b"a" * 5000   # the old D's, as on the primary


@needs_root
@pytest.mark.parametrize("delegated", [True, False], ids=["delegated", "receiver-log"])
def test_a_swap_the_peer_lost_in_its_power_loss_is_resynced(mirror_factory, monkeypatch, delegated):
    """The peer acknowledged the swap, then lost power before its disk kept it: it comes back with D
    and E as they were. Delegated, the primary's link loss records what its activity log still
    holds; otherwise the receiver's own log named the renames. Either way the record must reach
    beneath E."""
    monkeypatch.setenv(INTERVAL_ENV, "600")     # nothing becomes durable on its own meanwhile
    pair = _two_directories(mirror_factory)
    if not delegated:
        pair.umount()
        pair.mount(("--no-activity-log",))       # the receiver keeps its own log
    _swap(pair.primary, exchange=False)          # sync mode: applied on the peer, acknowledged
    s = pair.secondary
    assert open(f"{s}/E/f", "rb").read() == b"a" * 5000
    go_alone(pair)                               # kill -9 of the receiver: the link is lost
    os.rename(f"{s}/E", f"{s}/D")                # what the power loss took: both renames
    os.rename(f"{s}/X", f"{s}/E")
    lost_data_is_resynced(pair)
    assert open(f"{s}/E/f", "rb").read() == b"a" * 5000


# unit: the activity log's subtree entries ------------------------------------------------------

def _swapped_log(tmp_path, top: str, fd: int, exchange: bool):
    """D/f and E/f on disk, an activity log over them whose peer has nothing durable (a delegated
    session), then D and E swapped through it as the mount does (both names enter, the destination
    is new, the pairs move)."""
    from hamirror.link.apply import rename_pairs
    from hamirror.syscalls import RENAME_EXCHANGE, renameat2
    from tests.test_journal_hotdirs import Ticket
    for d in ("D", "E"):
        os.makedirs(f"{top}/{d}")
        open(f"{top}/{d}/f", "wb").close()
    al = ActivityLog(str(tmp_path / "activity.log"), epochs=Epochs(fd), interval=NEVER, root_fd=fd)
    al.peer = lambda ticket: False
    steps = [("D", "E", RENAME_EXCHANGE)] if exchange else [("E", "X", 0), ("D", "E", 0)]
    for seq, (src, dst, flags) in enumerate(steps, 1):
        carried = al.enter([src, dst], new=[dst], moved=rename_pairs(src, dst, flags))
        renameat2(fd, src.encode(), fd, dst.encode(), flags)
        al.leave([src, dst], Ticket(seq=seq), carried)
    return al


@pytest.mark.parametrize("exchange", [False, True], ids=["renames", "exchange"])
def test_a_directory_rename_enters_its_destination_as_a_subtree_in_its_own_append(tmp_path, root, exchange):
    from hamirror.journal.logformat import tree_key
    top, fd = root
    al = _swapped_log(tmp_path, top, fd, exchange)
    trees = {"D", "E"} if exchange else {"X", "E"}
    assert {tree_key(t) for t in trees} <= set(al.hot())
    assert al.records == 1 + (1 if exchange else 2)   # the snapshot at start, then one append per rename
    assert read_log(al.path).trees == trees           # what the crash fold reads
    assert sorted(al.subtrees_not_on_peer()) == sorted(trees)   # what a lost link records
    assert not any("\0" in p for p in al.not_on_peer())
    open(f"{top}/file", "wb").close()
    carried = al.enter(["file", "g"], new=["g"], moved=(("file", "g"),))   # a file: no subtree
    os.rename(f"{top}/file", f"{top}/g")
    al.leave(["file", "g"], None, carried)
    assert tree_key("g") not in al.hot()
    al.close()


def test_a_subtree_leaves_with_its_rename_and_a_snapshot_keeps_it(tmp_path, root):
    from hamirror.journal.logformat import tree_key
    from tests.test_journal_hotdirs import Ticket
    top, fd = root
    al = _swapped_log(tmp_path, top, fd, exchange=False)
    al.capacity = len(al.hot())                       # full: the next new path needs a slot
    al._snapshot()
    assert read_log(al.path).trees == {"X", "E"}      # a snapshot writes subtree entries too
    os.makedirs(f"{top}/other")
    al.enter(["other/a"])                             # nothing settled: above capacity, all kept
    al.leave(["other/a"], Ticket(seq=3))
    assert tree_key("E") in al.hot()
    al.peer = None                                    # the peer's disk has everything now...
    al.epochs.sync()                                  # ...and so has ours
    for i in range(len(al.hot())):
        al.enter([f"other/b{i}"])
        al.leave([f"other/b{i}"], Ticket(seq=10 + i))
    assert not any(k.endswith("\0") for k in al.hot())
    assert read_log(al.path).trees == frozenset()     # left in the file (LEAVE_TREE)
    assert al.subtrees_not_on_peer() == []
    al.close()


def test_the_crash_fold_records_a_subtree_mark_and_raises_the_journal_s_format(tmp_path, root):
    import sqlite3
    from hamirror.mirror import record
    from hamirror.mirror.states import MirrorState
    from hamirror.resync import crash
    top, fd = root
    state = tmp_path / "state"
    state.mkdir()
    with Journal(str(state / "journal.db")) as journal:
        record.STATE.set(journal, MirrorState.PRIM)
        al = _swapped_log(tmp_path, top, fd, exchange=False)
        al.close()
        os.replace(al.path, crash.activity_log_path(journal))   # the crashed mount's log
        result = crash.recover(journal, fd)
        assert result.covered and "2 renamed directories compared whole beneath" in result.why
        assert journal.subtrees() == ["E", "X"] and {".", "E", "X"} <= set(journal.changed_paths())
        assert read_log(crash.activity_log_path(journal)).trees == frozenset()   # emptied once folded
    db = sqlite3.connect(str(state / "journal.db"))
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2   # the previous release refuses it
    finally:
        db.close()


def test_the_receiver_s_log_keeps_a_renamed_directory_as_a_subtree_and_names_what_is_beneath(tmp_path):
    """An old-style session: the receiver notes each applied rename; a directory's destination is
    a subtree, and after an unclean stop every path beneath it on this copy is to be compared."""
    from hamirror.journal import unsynced
    from hamirror.mirror.record import UNSYNCED
    tree = tmp_path / "tree"
    for name in ("D/f", "D/sub/g", "file"):
        os.makedirs(tree / os.path.dirname(name), exist_ok=True)
        (tree / name).write_bytes(b"x")
    fd = os.open(tree, os.O_RDONLY | os.O_DIRECTORY)
    state = tmp_path / "state"
    state.mkdir()
    try:
        log = unsynced.UnsyncedLog(str(state / unsynced.UNSYNCED_LOG), Epochs(fd), interval=NEVER)
        os.rename(tree / "D", tree / "E")             # applied, then noted
        log.note([b"D", b"E", b"."], 1, moved=((b"D", b"E"),))
        os.rename(tree / "file", tree / "moved")
        log.note([b"file", b"moved", b"."], 2, moved=((b"file", b"moved"),))
        log.flush()
        assert read_log(log.path).trees == {"E"} and "E" in log.paths()
        log.close(clean=False)
        with Journal(str(state / "journal.db")) as journal:
            unsynced.recover(journal, str(state), fd)
            assert set(unsynced.pending(journal)) == {"D", "E", "E/f", "E/sub", "E/sub/g", "file", "moved"}
            UNSYNCED.set(journal, "")
            unsynced.recover(journal, str(state))     # nowhere to list E: every block
            assert unsynced.pending(journal) is None
    finally:
        os.close(fd)


def test_a_subtree_is_named_beneath_without_following_a_symlink(tmp_path, root):
    from hamirror.journal.hotdirs import expand_tree
    from hamirror.link.protocol import CONFLICT_DIR
    top, fd = root
    os.makedirs(f"{top}/E/sub")
    os.makedirs(f"{top}/outside")
    open(f"{top}/outside/secret", "wb").close()
    open(f"{top}/E/sub/g", "wb").close()
    os.symlink("../outside", f"{top}/E/link")
    os.symlink("outside", f"{top}/L")
    os.makedirs(os.path.join(top, os.fsdecode(CONFLICT_DIR), "x"))
    assert sorted(expand_tree(fd, "E")) == ["E", "E/link", "E/sub", "E/sub/g"]
    assert expand_tree(fd, "L") == ["L"] and expand_tree(fd, "gone") == ["gone"]
    assert expand_tree(fd, "L/secret") == ["L/secret"]          # never through the symlink
    assert os.fsdecode(CONFLICT_DIR) not in " ".join(expand_tree(fd, "."))
