"""The activity log's directory entries: one durable append for the new names in a directory, the
covered paths' bookkeeping, and their expansion after a crash (hamirror.journal.hotdirs)."""

import os

import pytest

from hamirror.journal.activity import (ENTER, ENTER_DIR, LEAVE_DIR, MAGIC, ActivityLog, choose_victims,
                                       encode_frame, read_log, replay)
from hamirror.journal.durability import Epochs
from hamirror.journal.journal import Journal
from hamirror.link.protocol import CONFLICT_DIR
from hamirror.mirror.record import STATE
from hamirror.resync import crash


class Ticket:
    def __init__(self, done: bool = True, seq: int = 0) -> None:
        self.done, self.error, self.seq = done, None, seq


@pytest.fixture
def root(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    fd = os.open(tree, os.O_RDONLY | os.O_DIRECTORY)
    yield str(tree), fd
    os.close(fd)


def _create(al: ActivityLog, path: str, ticket=None) -> None:
    al.enter([path], new=(path,))
    al.leave([path], ticket or Ticket())


def test_directory_entries_round_trip_through_the_format(tmp_path, root):
    data = MAGIC + encode_frame([(ENTER_DIR, "d"), (ENTER, "f"), (ENTER_DIR, ".")]) \
        + encode_frame([(LEAVE_DIR, "d"), (ENTER_DIR, "e/é\udcff")])
    result = replay(data)
    assert result.paths == {"f"} and result.dirs == {".", "e/é\udcff"} and not result.problem
    # a directory entry without a path, or an unknown op (what an older release sees in op 5, or 7): damage
    assert replay(MAGIC + encode_frame([(ENTER_DIR, "")]) + encode_frame([(ENTER, "x")])).paths is None
    assert replay(MAGIC + encode_frame([(9, "d")]) + encode_frame([(ENTER, "x")])).paths is None
    # the live log writes them, and its snapshots keep them
    al = ActivityLog(str(tmp_path / "al"), capacity=2, root_fd=root[1])
    for i in range(10):
        _create(al, f"d{i}/new")
        assert read_log(al.path).dirs == {k[:-1] for k in al.hot()}
    assert read_log(al.path).paths == frozenset()
    al.close()


def test_a_thousand_new_files_in_one_directory_cost_one_durable_append(tmp_path, root):
    al = ActivityLog(str(tmp_path / "al"), root_fd=root[1])
    appends, syncs = al.records, []
    real = os.fdatasync
    os.fdatasync = lambda fd: (syncs.append(fd), real(fd))[1]
    try:
        for i in range(1000):
            _create(al, f"spool/f{i}")
            al.enter([f"spool/f{i}"])                     # its write, then a chmod: covered
            al.leave([f"spool/f{i}"], Ticket())
    finally:
        os.fdatasync = real
    assert al.records == appends + 1 and len(syncs) == 1
    assert al.hot() == ["spool/"]
    assert read_log(al.path).dirs == {"spool"} and read_log(al.path).paths == frozenset()
    al.close()


def test_a_change_to_a_file_that_is_not_new_enters_its_own_path(tmp_path, root):
    al = ActivityLog(str(tmp_path / "al"), root_fd=root[1])
    _create(al, "d/new")
    al.enter(["db/base/1234"])                            # a database's file: stays exact
    al.leave(["db/base/1234"], Ticket())
    al.enter(["d/sub/x"])                                 # below a hot directory: not covered
    al.leave(["d/sub/x"], Ticket())
    al.enter(["d"])                                       # the hot directory itself: covered
    al.leave(["d"], Ticket())
    assert al.hot() == ["db/base/1234", "d/sub/x", "d/"] and al.records == 4   # the first: the empty file
    replayed = read_log(al.path)
    assert replayed.paths == {"db/base/1234", "d/sub/x"} and replayed.dirs == {"d"}
    _create(al, "db/base/1234")                           # hot already: its own entry, no append
    assert al.records == 4 and "db/base/" not in al.hot()
    al.close()
    plain = ActivityLog(str(tmp_path / "plain"))          # no directory to list: paths, as before
    _create(plain, "d/new")
    assert plain.hot() == ["d/new"]
    plain.close()


def test_a_covered_path_keeps_its_directory_until_acknowledged_and_durable(tmp_path, root):
    epochs = Epochs(root[1])
    al = ActivityLog(str(tmp_path / "al"), capacity=1, epochs=epochs, interval=3600, root_fd=root[1])
    _create(al, "d/a")
    in_flight = Ticket(done=False, seq=5)
    al.enter(["d/b"], new=("d/b",))                       # covered by "d/": no append
    al.leave(["d/b"], in_flight)
    al.enter(["d/a"])                                     # a call still inside, on a covered path
    assert choose_victims(al._hot, 1) == []
    al.leave(["d/a"], Ticket(seq=4))                      # older, acknowledged: the newer one pins
    assert choose_victims(al._hot, 1) == []
    in_flight.done = True
    assert choose_victims(al._hot, 1, durable=epochs.durable) == []   # acknowledged, not durable here yet
    al.enter(["other"])                                   # no slot: the set overflows, D stays
    al.leave(["other"], Ticket())
    assert set(al.hot()) == {"d/", "other"}
    epochs.sync()                                         # the epoch closes
    assert "d/" in choose_victims(al._hot, 2, durable=epochs.durable)
    # delegated: the peer's disk lacks it
    assert "d/" not in choose_victims(al._hot, 2, durable=epochs.durable, peer=lambda ticket: False)
    al.close()


def test_a_call_leaves_the_slot_it_entered_even_if_a_directory_entry_came_since(tmp_path, root):
    al = ActivityLog(str(tmp_path / "al"), root_fd=root[1])
    _create(al, "d/sub")                                  # a mkdir: "d/" hot
    al.enter(["d/sub"])                                   # a chmod of d/sub: charged to "d/"
    al.enter(["d/sub/f"], new=("d/sub/f",))               # a create inside it: "d/sub/" enters
    al.leave(["d/sub"], Ticket())                         # the chmod ends: "d/" settles, not "d/sub/"
    assert al._hot["d/"].busy == 0 and al._hot["d/sub/"].busy == 1
    assert choose_victims(al._hot, 2) == ["d/"]
    al.leave(["d/sub/f"], Ticket())
    assert choose_victims(al._hot, 2) == ["d/", "d/sub/"]
    al.close()


def _tree(base: str) -> None:
    os.makedirs(f"{base}/d/sub")
    os.makedirs(f"{base}/outside-target")
    for name in ("d/a", "d/b", "d/sub/deep", "top", "outside-target/secret"):
        with open(f"{base}/{name}", "wb") as f:
            f.write(b"x")
    os.symlink("../outside-target", f"{base}/d/ln")                  # a symlink in D: named, not followed
    os.symlink(os.path.abspath(f"{base}/outside-target"), f"{base}/hop")
    os.makedirs(f"{base}/{os.fsdecode(CONFLICT_DIR)}/old")


def test_recovery_expands_a_directory_entry_into_its_entries(tmp_path, root):
    base, fd = root
    _tree(base)
    j = Journal(str(tmp_path / "journal.db"))
    j.set_state(STATE.name, "PRIM")
    al = ActivityLog(crash.activity_log_path(j), root_fd=fd)
    for p in ("d/new", "new-at-top", "hop/planted", "gone/x", "top/x"):
        _create(al, p)                                    # "d", ".", "hop" (a symlink), "gone", "top" (a file)
    al.enter(["d/sub/deep"])
    al.leave(["d/sub/deep"], Ticket())
    al.close()                                            # the crash
    assert read_log(al.path).dirs == {"d", ".", "hop", "gone", "top"}
    assert crash.recover_for_receiver(j, clean=False, root_fd=fd)
    assert set(j.changed_paths()) == {"d/sub/deep", "d", "d/a", "d/b", "d/sub", "d/ln", ".", "top",
                                      "d", "outside-target", "hop", "gone"}
    assert all(j.changed_blocks(p) is None for p in j.changed_paths())   # compared whole
    assert read_log(al.path).dirs == frozenset()
    j.close()


def test_without_the_directory_a_log_with_directory_entries_is_not_folded(tmp_path, root):
    j = Journal(str(tmp_path / "journal.db"))
    j.set_state(STATE.name, "PRIM")
    al = ActivityLog(crash.activity_log_path(j), root_fd=root[1])
    _create(al, "d/new")
    al.close()
    result = crash.recover(j)                             # nowhere to list "d"
    assert not result.covered and "cannot be listed" in result.why
    assert read_log(al.path).dirs == {"d"}                # kept for a fold that can list it
    j.close()


def test_a_lost_link_names_the_directory_and_everything_in_it(tmp_path, root):
    base, fd = root
    _tree(base)
    al = ActivityLog(str(tmp_path / "al"), root_fd=fd)
    al.peer = lambda ticket: False                        # delegated: nothing durable on the peer yet
    _create(al, "d/a")
    assert al.not_on_peer() == ["d", "d/a", "d/b", "d/ln", "d/sub"]
    al.peer = None
    assert al.not_on_peer() == []
    al.close()


def test_a_key_a_call_is_charged_to_is_never_the_victim_of_its_own_admission(tmp_path, root):
    al = ActivityLog(str(tmp_path / "al"), capacity=2, root_fd=root[1])
    _create(al, "d/a")                                    # "d/": settled, least recently used
    al.enter(["busy"])                                    # inside: not evictable
    al.enter(["d/a", "x/b"], new=("x/b",))                # a rename: covered source, new destination
    assert set(al.hot()) == {"d/", "busy", "x/"}          # over capacity rather than forget "d/"
    assert al._hot["d/"].busy == 1 and al._hot["x/"].busy == 1
    assert read_log(al.path).dirs == {"d", "x"}
    al.leave(["d/a", "x/b"], Ticket())
    al.leave(["busy"], Ticket())
    assert all(slot.busy == 0 for slot in al._hot.values()) and al._charged == {}
    al.close()
    plain = ActivityLog(str(tmp_path / "plain"), capacity=2)   # the same with path entries (a KeyError before)
    _create(plain, "a")
    plain.enter(["busy"])
    plain.enter(["a", "b"])
    assert set(plain.hot()) == {"a", "busy", "b"}
    plain.close()
