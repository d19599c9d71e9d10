"""Delegated durability (docs/journal.md, "Durability"): the primary keeps each path in its activity
log until the secondary's disk has it, so the secondary needs no fsync per new path.

Unit: the receiver's epoch bookkeeping (which sequence number is durable, the log's mark), the
activity log keeping an acknowledged path until the peer's durable point, the replicator putting
those paths in the journal when the link is lost. Real receiver: a delegated session writes no path
to the unsynced log and its replies carry the durable point; an old primary's session keeps the old
record. Mirror level (real FUSE, real processes): a burst of new files, the receiver killed and its
unsynced pages zeroed (a power loss), the returning copy resynced byte-identical.
"""

from __future__ import annotations

import os
import stat

import pytest

from hamirror.journal import unsynced
from hamirror.journal.activity import ActivityLog, read_log
from hamirror.journal.durability import INTERVAL_ENV, Epochs
from hamirror.journal.journal import UPTODATE_KEY, Journal
from hamirror.link.client import WHOLE, Ticket
from hamirror.link.protocol import PING_DELEGATE, PING_SYNC, Op, decode_reply, encode_reply, with_durable
from tests.mirror_fixtures import local_link

NEVER = 3600.0   # background sync interval: only explicit syncs


@pytest.fixture
def epochs(tmp_path):
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    yield Epochs(fd)
    os.close(fd)


# the receiver's bookkeeping --------------------------------------------------------------------

def test_the_durable_seq_follows_the_epochs_and_the_mark_costs_one_record(tmp_path, epochs):
    path = str(tmp_path / "u.log")
    log = unsynced.UnsyncedLog(path, epochs, interval=NEVER)
    log.delegate(5)                       # PING_DELEGATE at seq 5: what came before was recorded
    assert log.durable_seq == 5
    for seq in range(6, 106):
        log.note([b"f%d" % seq], seq)
    log.flush()
    assert log.records == 1               # the mark, once; no path
    assert read_log(path).paths == frozenset() and read_log(path).marked
    closed = epochs.sync()                # seqs 6..105 were stamped before: durable
    log.note([b"late"], 106)              # stamped after the epoch closed: not yet
    log.durable_until(closed)
    assert log.durable_seq == 105
    assert read_log(path).marked          # 106 still owes
    log.flush()
    assert log.records == 1
    log.durable_until(epochs.sync())
    assert log.durable_seq == 106 and not read_log(path).marked
    log.note([b"again"], 107)             # a new burst sets the mark again: one more record
    log.flush()
    assert log.records == 2 and read_log(path).marked
    log.begin_session()                   # a new HELLO: not delegated, numbering starts again
    assert not log.delegated and log.durable_seq == 0
    log.close(clean=True)
    assert not read_log(path).marked


def test_a_marked_log_after_an_unclean_stop_leaves_the_copy_owing_to_the_primary(tmp_path, epochs):
    from hamirror.link.apply import Applier
    from hamirror.resync.answers import ResyncAnswers
    state = str(tmp_path)
    with Journal(os.path.join(state, "journal.db")) as journal:
        journal.set_state(UPTODATE_KEY, "1")
        log = unsynced.UnsyncedLog(os.path.join(state, unsynced.UNSYNCED_LOG), epochs, interval=NEVER)
        log.delegate(1)
        log.note([b"new"], 2)
        log.flush()
        log.close(clean=False)            # power loss
        assert unsynced.owed(journal, state)          # the agent's view before anyone looked
        assert "primary recorded" in unsynced.recover(journal, state)
        assert journal.get_state(UPTODATE_KEY) == "0" and unsynced.owed(journal, state)
        assert unsynced.pending(journal) == []        # no path of its own to name
        data = tmp_path / "data"
        data.mkdir()
        applier = Applier(str(data))
        answer = ResyncAnswers(applier, journal)._changes_doc()
        applier.close()
        assert answer["unsynced_peer"] is True and answer["unsynced"] == []
        unsynced.resolved(journal)         # the resync compared it; the live receiver's log is new
        unsynced.UnsyncedLog(os.path.join(state, unsynced.UNSYNCED_LOG), epochs, interval=NEVER).close(clean=True)
        assert not unsynced.owed(journal, state)


def test_the_reply_field_is_optional_and_only_on_ok_replies():
    plain = encode_reply(7)
    assert decode_reply(plain).durable is None
    assert decode_reply(with_durable(plain, 5)).durable == 5 and decode_reply(with_durable(plain, 5)).seq == 7
    refused = encode_reply(7, 1, 5, "no")
    assert with_durable(refused, 5) == refused


# the primary's side ----------------------------------------------------------------------------

class _Client:
    """What the replicator reads of a delegated LinkClient (a unit test may fake a socket)."""

    on_lost = None
    hello_answer = b""

    def __init__(self) -> None:
        self.tickets: list[Ticket] = []
        self.peer_durable: int | None = 0

    def submit(self, op, ints=(), strs=(), times=(), data=None, changes=(), hold=False):
        ticket = Ticket(len(self.tickets) + 1, changes)
        self.tickets.append(ticket)
        return ticket


class _Journal:
    def __init__(self) -> None:
        self.whole: list[str] = []
        self.state: dict[str, str] = {}

    def record_batch(self, paths=(), ranges=(), wholes=(), subtrees=()): self.whole.extend(wholes)
    def new_generation(self): return "g"
    def set_state(self, key, value): self.state[key] = value
    def get_state(self, key, default=None): return self.state.get(key, default)


def test_an_acknowledged_path_stays_until_the_peer_disk_has_it_and_a_lost_link_records_it(tmp_path):
    from hamirror.mirror.replicator import Replicator
    al = ActivityLog(str(tmp_path / "al"), capacity=1)
    client, journal = _Client(), _Journal()
    repl = Replicator(client, journal, sync=False, activity=al)
    for name in ("a", "b"):
        with repl.change(((name,),)) as tx:
            tx.send(Op.CREATE, (0o100644, 0, 0, 0), (name.encode(),))
        client.tickets[-1].complete()                 # acknowledged: in the peer's page cache
    assert al.hot() == ["a", "b"]                     # a may not leave: not durable on the peer
    assert read_log(al.path).paths == {"a", "b"}      # and the file on the primary's disk says so
    assert al.not_on_peer() == ["a", "b"]
    client.peer_durable = 1                           # the peer's sync covered seq 1 (a)
    assert al.not_on_peer() == ["b"]
    with repl.change((("c",),)) as tx:
        tx.send(Op.CREATE, (0o100644, 0, 0, 0), (b"c",))
    assert al.hot() == ["b", "c"]                     # a left; b still owes
    repl._peer_lost("test: link lost", [client.tickets[-1]])
    client.tickets[-1].complete("test: link lost")    # as LinkClient._fail does after on_lost
    assert set(journal.whole) == {"b", "c"}           # acknowledged but not durable there: recorded
    assert al.not_on_peer() == []                     # recorded: none pins the next session


def test_a_peer_that_did_not_delegate_counts_an_acknowledgement_as_durable(tmp_path):
    from hamirror.mirror.replicator import Replicator
    al = ActivityLog(str(tmp_path / "al"), capacity=1)
    client, journal = _Client(), _Journal()
    client.peer_durable = None                        # an older receiver: its unsynced log has it
    repl = Replicator(client, journal, sync=False, activity=al)
    with repl.change((("a",),)) as tx:
        tx.send(Op.CREATE, (0o100644, 0, 0, 0), (b"a",))
    client.tickets[-1].complete()
    assert al.not_on_peer() == []
    repl._peer_lost("test: link lost", [])
    assert journal.whole == []


class _Syncing(_Client):
    """A peer that answers PING_SYNC with everything durable (or never answers)."""

    ack_timeout = 0.05
    answers = True

    def submit(self, op, ints=(), strs=(), times=(), data=None, changes=(), hold=False):
        ticket = super().submit(op, ints, strs, times, data, changes, hold)
        if op == Op.PING and ints == (PING_SYNC,) and self.answers:
            self.peer_durable = ticket.seq
            ticket.complete()
        return ticket


def test_a_clean_unmount_asks_the_peer_to_sync_or_counts_as_unclean(tmp_path):
    from hamirror.mirror.replicator import Replicator
    al = ActivityLog(str(tmp_path / "al"), capacity=4)
    client = _Syncing()
    repl = Replicator(client, _Journal(), sync=False, activity=al)
    for name, answers in (("a", True), ("b", False)):
        client.answers = answers
        with repl.change(((name,),)) as tx:
            tx.send(Op.CREATE, (0o100644, 0, 0, 0), (name.encode(),))
        client.tickets[-1].complete()
        assert al.not_on_peer() == [name]
        assert repl.settle_durable() is answers     # no answer: unclean, the log still names it
        assert al.not_on_peer() == ([] if answers else [name])


# a real receiver ---------------------------------------------------------------------------------

MODE = (stat.S_IFREG | 0o644, os.getuid(), os.getgid(), 0)


def test_a_delegated_session_records_no_path_and_its_replies_carry_the_durable_point(tmp_path):
    with local_link(str(tmp_path), state_dir=str(tmp_path / "state")) as (client, receiver):
        from hamirror.link.protocol import offers_delegation
        assert offers_delegation(client.hello_answer)
        ping = client.submit(Op.PING, (PING_DELEGATE,))
        ping.wait(10)
        assert ping.error is None and client.peer_durable == ping.seq
        tickets = [client.submit(Op.CREATE, MODE, (b"f%d" % i,)) for i in range(200)]
        for ticket in tickets:
            ticket.wait(10)
            assert ticket.error is None
        log_file = str(tmp_path / "state" / unsynced.UNSYNCED_LOG)
        assert read_log(log_file).paths == frozenset() and read_log(log_file).marked
        assert receiver.unsynced.records == 1         # the mark: no fdatasync per new path
        assert client.peer_durable < tickets[-1].seq  # nothing synced yet (interval 5 s)
        sync = client.submit(Op.PING, (PING_SYNC,))
        sync.wait(10)
        assert sync.error is None and client.peer_durable >= tickets[-1].seq
        assert not read_log(log_file).marked


def test_an_old_primary_session_keeps_the_path_by_path_record(tmp_path):
    with local_link(str(tmp_path), state_dir=str(tmp_path / "state")) as (client, receiver):
        tickets = [client.submit(Op.CREATE, MODE, (b"g%d" % i,)) for i in range(20)]
        for ticket in tickets:
            ticket.wait(10)
        assert {f"g{i}" for i in range(20)} <= read_log(str(tmp_path / "state" / unsynced.UNSYNCED_LOG)).paths
        assert client.peer_durable is None            # its replies keep the old form


# mirror level: the secondary's power loss after a burst of new files ------------------------------

# Alone (the serial step): another test's syncfs of the one filesystem would make the secondary's
# pages durable before the emulated power loss, which then loses nothing (the test would prove nothing).
@pytest.mark.serial
def test_a_burst_of_new_files_lost_by_the_secondary_is_resynced_without_a_record_there(mirror_factory, monkeypatch):
    from hamirror.lab import pagecache
    from tests.conftest import needs_root  # noqa: F401 (the factory needs root already)
    from tests.test_resync_common import establish, go_alone, lost_data_is_resynced
    if pagecache.unsupported():
        pytest.skip(pagecache.unsupported())
    # One filesystem holds both copies: no background sync may make the secondary's pages durable.
    monkeypatch.setenv(INTERVAL_ENV, "600")
    pair = mirror_factory("m", timeout=3).start()
    establish(pair)
    names = [f"burst/{i}" for i in range(150)]
    os.makedirs(os.path.join(pair.primary, "burst"))
    for name in names:
        with open(os.path.join(pair.primary, name), "wb") as f:
            f.write(os.urandom(4096))                  # acknowledged: each write returned
    log_file = os.path.join(pair.rstate, unsynced.UNSYNCED_LOG)
    go_alone(pair)                                     # kill -9 of the receiver
    lost = 0
    for name in names:                                 # the power loss: its unsynced pages are zeros
        path = os.path.join(pair.secondary, name)
        fd = os.open(path, os.O_RDWR)
        try:
            for page in pagecache.dirty_pages(fd):
                lost += os.pwrite(fd, bytes(pagecache.PAGE), page * pagecache.PAGE)
            os.fsync(fd)
        finally:
            os.close(fd)
    assert lost > 0, "nothing was unsynced on the secondary: the test proves nothing"
    replay = read_log(log_file)
    assert replay.marked and not set(names) & replay.paths, "the secondary recorded the paths itself"
    lost_data_is_resynced(pair)


def test_a_copy_that_lost_delegated_data_is_compared_whole_unless_our_journal_names_it(tmp_path):
    from hamirror.mirror import record
    from hamirror.resync.engine import Progress, ResyncEngine
    with Journal(str(tmp_path / "journal.db")) as journal:
        ours = journal.new_generation()

        def full(mode: str, peer_current: str | None) -> bool:
            engine = ResyncEngine.__new__(ResyncEngine)      # only the planning step, no link
            engine.journal, engine.full, engine.deep, engine._unsynced = journal, False, False, set()
            engine.progress = Progress(mode=mode)
            peer = {"unsynced": [], "unsynced_peer": True,
                    "generations": {"current": {"id": peer_current}} if peer_current else None}
            candidates = {"a"}
            engine._add_unsynced(peer, candidates)
            assert candidates == ({"."} if engine.full else {"a"})
            return engine.full

        assert not full("incremental", ours)       # our changed set names what it lost
        assert not full("scan", ours)              # a scan compares every path our journal names
        assert not full("scan", None)              # it never completed a resync: we streamed to it
        assert full("scan", "0123456789abcdef")    # not our lineage (a recreated journal): every block
        record.LOG_LOST.set(journal, True)         # our activity log could not be folded: every block
        assert full("scan", ours)
