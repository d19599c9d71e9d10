"""The activity log: bounded LRU of hot paths, torn and damaged files, recovery into the journal."""

import os
import random
import signal
import subprocess
import sys
import textwrap

import pytest

from hamirror.journal.activity import (MAGIC, ActivityLog, choose_victims, encode_frame, read_log, replay,
                                       ENTER, LEAVE)
from hamirror.journal.journal import Journal
from hamirror.mirror.record import LOST_FROM, STATE
from hamirror.resync import crash


class FakeTicket:
    seq = 0

    def __init__(self, done: bool = True, error: str | None = None, seq: int = 0) -> None:
        self.done = done
        self.error = error
        self.seq = seq


def _use(al: ActivityLog, path: str, ticket=None) -> None:
    al.enter([path])
    al.leave([path], ticket or FakeTicket())


def test_hot_set_is_bounded_and_the_file_says_the_same(tmp_path):
    path = str(tmp_path / "activity.log")
    al = ActivityLog(path, capacity=8)
    for i in range(500):
        _use(al, f"d/f{i}")
        assert len(al.hot()) <= 8
        if i % 37 == 0:
            assert read_log(path).paths == frozenset(al.hot())
    assert read_log(path).paths == frozenset(al.hot())
    # Snapshots keep the file bounded: a header, at most 2 * capacity entries and one snapshot.
    assert os.path.getsize(path) < len(MAGIC) + 3 * 8 * (8 + 3 + len("d/f499")) + 64
    al.close()


def test_a_hot_path_costs_no_record_and_lru_order_decides_who_leaves(tmp_path):
    al = ActivityLog(str(tmp_path / "al"), capacity=3)
    for p in ("a", "b", "c"):
        _use(al, p)
    records = al.records
    for _ in range(100):                     # the same files stay hot: nothing written
        _use(al, "a")
        _use(al, "c")
    assert al.records == records
    _use(al, "d")                            # b is the least recently used
    assert al.hot() == ["a", "c", "d"]
    assert al.records == records + 1


def test_a_path_leaves_only_once_everything_about_it_is_acknowledged(tmp_path):
    al = ActivityLog(str(tmp_path / "al"), capacity=2)
    in_flight = FakeTicket(done=False)
    al.enter(["busy"])                       # inside its change block
    _use(al, "sent", in_flight)              # sent, not acknowledged
    _use(al, "x")                            # no slot is free: the set overflows rather than forget
    assert set(al.hot()) == {"busy", "sent", "x"}
    in_flight.done = True                    # acknowledged
    al.leave(["busy"], FakeTicket())
    _use(al, "y")
    assert set(al.hot()) == {"x", "y"}                  # back within the bound, LRU first
    newer = FakeTicket(done=False, seq=9)       # two calls on one path, the older one leaves last
    al.enter(["p"])
    al.enter(["p"])
    al.leave(["p"], newer)
    al.leave(["p"], FakeTicket(done=True, seq=8))
    assert "p" not in choose_victims(al._hot, 10)
    newer.done, newer.error = True, "peer lost"  # failed: what it carried is in the journal already
    assert "p" in choose_victims(al._hot, 10)


def _three_frames(tmp_path) -> tuple[str, bytes, list[int]]:
    path = str(tmp_path / "al")
    frames = [encode_frame([(ENTER, "a")]), encode_frame([(ENTER, "b"), (LEAVE, "a")]),
              encode_frame([(ENTER, "c/é\udcff")])]
    data = MAGIC + b"".join(frames)
    starts = [len(MAGIC), len(MAGIC) + len(frames[0]), len(MAGIC) + len(frames[0]) + len(frames[1])]
    return path, data, starts


def test_replay_of_an_intact_log(tmp_path):
    _, data, _ = _three_frames(tmp_path)
    result = replay(data)
    assert result.paths == {"b", "c/é\udcff"} and not result.torn and not result.problem


@pytest.mark.parametrize("cut", [1, 5, 9, 12])
def test_a_torn_last_record_is_ignored(tmp_path, cut):
    _, data, starts = _three_frames(tmp_path)
    result = replay(data[:starts[2] + cut])
    assert result.paths == {"b"} and result.torn


def test_a_last_record_with_a_bad_checksum_or_zeros_is_torn(tmp_path):
    _, data, starts = _three_frames(tmp_path)
    bad = bytearray(data)
    bad[-1] ^= 0xFF
    assert replay(bytes(bad)).paths == {"b"} and replay(bytes(bad)).torn
    zeros = replay(data[:starts[2]] + b"\0" * 4096)
    assert zeros.paths == {"b"} and zeros.torn


def test_damage_before_the_last_record_is_not_trusted(tmp_path):
    _, data, starts = _three_frames(tmp_path)
    bad = bytearray(data)
    bad[starts[1] + 9] ^= 0x01                       # inside the second frame's payload
    result = replay(bytes(bad))
    assert result.paths is None and "checksum mismatch" in result.problem
    assert replay(b"garbage" + data).paths is None
    missing = read_log(str(tmp_path / "nothing"))
    assert missing.paths is None and "no activity log" in missing.problem


def test_every_path_entered_survives_kill9_of_the_writer(tmp_path):
    """A process enters paths as fast as it can (every 7th stays unacknowledged) and is SIGKILLed
    at random instants: every unacknowledged path it was told is recorded is in the log afterwards,
    and the file is never unreadable (a torn last record at most)."""
    rnd = random.Random(5)
    script = textwrap.dedent("""
        import sys
        from hamirror.journal.activity import ActivityLog
        class T:
            def __init__(self, done):
                self.done, self.error = done, None
        al = ActivityLog(sys.argv[1], capacity=16)
        i = 0
        while True:
            p = f"p{i}"
            al.enter([p])
            print(p, flush=True)
            al.leave([p], T(i % 7 != 0))
            i += 1
    """)
    for n in range(8):
        path = str(tmp_path / f"al{n}")
        proc = subprocess.Popen([sys.executable, "-c", script, path], stdout=subprocess.PIPE, text=True,
                                stderr=subprocess.DEVNULL,
                                cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        told = []
        try:
            want = rnd.randrange(5, 120)
            while len(told) < want:
                told.append(proc.stdout.readline().strip())
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        result = read_log(path)
        assert result.paths is not None, result.problem
        pinned = {p for p in told if int(p[1:]) % 7 == 0}
        assert pinned <= result.paths, (n, pinned - result.paths)


def test_decide_is_pure_and_conservative():
    d = crash.decide
    paths = frozenset({"a"})
    assert d("PRIM", None, False, paths) == crash.Recovery(True, True, d("PRIM", None, False, paths).why)
    assert not d("PRIM", None, False, None, "bad").covered
    assert d("ALONE", None, False, None).covered and not d("ALONE", None, False, None).fold
    assert not d("ALONE", None, True, paths).covered
    assert d("FENCED", "PRIM", False, paths).covered
    assert not d("FENCED", "SYNCING", False, paths).covered
    assert not d(None, None, False, paths).covered


def test_recover_folds_the_log_into_the_journal_then_empties_it(tmp_path):
    j = Journal(str(tmp_path / "journal.db"))
    j.set_state(STATE.name, "PRIM")
    al = ActivityLog(crash.activity_log_path(j))
    _use(al, "dir/hot")
    _use(al, "renamed-to")
    al.close()                                     # a crash: nothing else happens
    assert crash.recover_for_receiver(j, clean=False)
    assert j.changed_paths() == ["dir/hot", "renamed-to"]
    assert j.changed_blocks("dir/hot") is None     # compared whole
    assert j.get_state(crash.COVERED_KEY) == "1"
    assert read_log(crash.activity_log_path(j)).paths == frozenset()
    j.close()


def test_without_a_usable_log_the_journal_stays_incomplete(tmp_path):
    j = Journal(str(tmp_path / "journal.db"))
    j.set_state(STATE.name, "PRIM")
    assert not crash.recover_for_receiver(j, clean=False)          # no log at all
    with open(crash.activity_log_path(j), "wb") as f:
        f.write(MAGIC + encode_frame([(ENTER, "a")])[:-1] + b"x" + encode_frame([(ENTER, "b")]))
    assert not crash.recover_for_receiver(j, clean=False)          # damaged in the middle
    assert j.changed_paths() == [] and j.get_state(crash.COVERED_KEY) is None
    with open(crash.activity_log_path(j), "wb") as f:
        f.write(MAGIC + encode_frame([(ENTER, "../outside")]))
    assert not crash.recover_for_receiver(j, clean=False)          # a path no operation names
    j.set_state(STATE.name, "FENCED")
    j.set_state(LOST_FROM.name, "SYNCING")
    assert not crash.recover(j).covered
    j.close()


class _Link:
    """A link that only queues (a unit test may fake a socket): tickets complete when told."""

    on_lost = None

    def __init__(self) -> None:
        self.tickets = []

    def submit(self, op, ints=(), strs=(), times=(), data=None, changes=(), hold=False):
        from hamirror.link.client import Ticket
        ticket = Ticket(len(self.tickets), changes)
        self.tickets.append(ticket)
        return ticket


def test_the_replicator_logs_before_the_apply_and_frees_the_path_once_acknowledged(tmp_path):
    from hamirror.link.protocol import Op
    from hamirror.mirror.replicator import Replicator
    al = ActivityLog(str(tmp_path / "al"), capacity=1)
    link = _Link()
    repl = Replicator(link, None, sync=False, activity=al)
    with repl.change((("a/b", 0, 10),)) as tx:
        assert read_log(al.path).paths == {"a/b"}        # durable before anything is applied
        tx.send(Op.WRITE, (0,), (b"a/b",), data=b"x" * 10)
    assert choose_victims(al._hot, 1) == []              # sent, not acknowledged: stays
    link.tickets[-1].complete()
    assert choose_victims(al._hot, 1) == ["a/b"]
    with repl.change((("c", ), ("d", "whole"))) as tx:   # both names of a rename, one append
        pass
    assert read_log(al.path).paths == {"c", "d"} and al.records == 3
