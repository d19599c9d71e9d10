"""What the agent reads of a module's journals (hamirror/agent/journal_info.py) while another
process writes them: a real journal, a receiver's writes made in the middle of the read."""

from __future__ import annotations

import os

from hamirror.agent import journal_info
from hamirror.journal.generations import Generation, GenerationHistory
from hamirror.journal.journal import UPTODATE_KEY, Journal


def test_a_copy_made_up_to_date_during_the_read_reads_with_its_new_history(tmp_path, monkeypatch):
    """A receiver ending a resync stores the primary's history, then the up-to-date flag. Read
    between the two the other way round (the history at the journal's opening, the flag after),
    the copy read as up to date with its old history: a relation UNKNOWN, and the WAIT node
    marked its fresh copy stale again (seen for 1 to 7 of 50 modules starting at once)."""
    state = str(tmp_path)
    path = os.path.join(state, "journal.db")
    with Journal(path) as journal:
        journal.set_state(UPTODATE_KEY, "0")                  # WAIT: no history, not up to date
    primary = GenerationHistory(Generation("g1", 0.0))
    get_state, finished = Journal.get_state, []

    def resync_ends_meanwhile(self, key, default=None):
        if not finished:
            finished.append(True)
            with Journal(path) as receiver:                   # what ResyncAnswers._done writes
                receiver.adopt_generations(primary)
                receiver.set_state(UPTODATE_KEY, "1")
        return get_state(self, key, default)

    monkeypatch.setattr(Journal, "get_state", resync_ends_meanwhile)
    info = journal_info.read([state])
    assert finished and info.uptodate
    assert info.history.current is not None and info.history.current.id == "g1"
