"""A resync lost after its RESYNC_DONE went out starts a new generation (issue 15, finding 5).

The peer adopts the sender's generation when it applies RESYNC_DONE; if its reply is lost, the
sender used to go ALONE in the *same* generation: two nodes with one generation id and different
data, so a later comparison said SAME (nothing to copy) or let a ``default_primary`` lead move
acknowledged writes aside with no split-brain warning. A real journal; the link is a fake that
only queues (its loss is the client's callback, as the link thread calls it).
"""

import pytest

from hamirror.journal.journal import Journal
from hamirror.mirror.replicator import MirrorState, Replicator
from tests.test_journal_activity import _Link as QueueLink   # a link that only queues


class _Link(QueueLink):
    def abort(self, reason: str) -> None:
        self.on_lost(reason, [])


def _syncing(journal: Journal, fence: bool) -> tuple[Replicator, _Link]:
    repl = Replicator(None, journal, fence=fence)
    repl.start_alone("peer gone")
    link = _Link()
    repl.begin_sync(link, ["a"])
    assert repl.state is MirrorState.SYNCING
    return repl, link


@pytest.mark.parametrize("fence", [False, True], ids=["plain", "fenced-then-granted"])
def test_losing_the_peer_after_resync_done_went_out_starts_a_new_generation(tmp_path, fence):
    with Journal(str(tmp_path / "j.db")) as journal:
        repl, link = _syncing(journal, fence)
        sent = journal.generations().current.id      # what the peer adopts with RESYNC_DONE
        with repl.lock:
            repl.resync_done_sent()
        link.on_lost("ack timeout", [])               # RESYNC_DONE's reply never came
        if fence:
            assert repl.state is MirrorState.FENCED
            repl.grant_alone("the peer is not primary")
        assert repl.state is MirrorState.ALONE
        assert journal.generations().current.id != sent
        assert sent in journal.generations().ids()    # still an ancestor: the next resync is incremental


@pytest.mark.parametrize("fence", [False, True], ids=["plain", "fenced-then-granted"])
def test_a_resync_lost_before_resync_done_keeps_the_generation(tmp_path, fence):
    """The peer cannot hold our generation then: no new one (32 failed resyncs would otherwise
    push the common generation out of the history and force a scan)."""
    with Journal(str(tmp_path / "j.db")) as journal:
        repl, link = _syncing(journal, fence)
        before = journal.generations().current.id
        link.on_lost("ack timeout", [])
        if fence:
            repl.grant_alone("the peer is not primary")
        assert repl.state is MirrorState.ALONE
        assert journal.generations().current.id == before


def test_a_crash_after_resync_done_went_out_starts_a_new_generation_on_restart(tmp_path):
    path = str(tmp_path / "j.db")
    with Journal(path) as journal:
        repl, link = _syncing(journal, False)
        sent = journal.generations().current.id
        with repl.lock:
            repl.resync_done_sent()
    with Journal(path) as journal:                     # kill -9, then the mount resumes ALONE
        Replicator(None, journal).start_alone("the peer missed changes", new_generation=False)
        assert journal.generations().current.id != sent
        again = journal.generations().current.id
        Replicator(None, journal).start_alone("restarted again", new_generation=False)
        assert journal.generations().current.id == again   # spent once a new generation started


def test_a_completed_resync_spends_the_flag(tmp_path):
    with Journal(str(tmp_path / "j.db")) as journal:
        repl, link = _syncing(journal, False)
        with repl.lock:
            repl.resync_done_sent()
        assert repl.finish_sync()
        current = journal.generations().current.id
        link.on_lost("peer gone later", [])           # an ordinary loss while PRIM: one new generation
        assert journal.generations().ids()[1] == current
