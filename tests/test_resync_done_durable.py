"""RESYNC_DONE makes the copied data durable before the copy calls itself up to date: a node
that may take over must not lose the resync's writes to its own power loss (they were written
without fsync). The filesystem is synced first, then the flag is set."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

from hamirror.journal.journal import UPTODATE_KEY, Journal
from hamirror.link.apply import Applier
from hamirror.resync import answers


def test_resync_done_syncs_the_filesystem_before_the_uptodate_flag(tmp_path, monkeypatch):
    directory = tmp_path / "dir"
    directory.mkdir()
    journal = Journal(str(tmp_path / "journal.db"))
    applier = Applier(str(directory))
    order: list[str] = []
    real_syncfs = answers.syncfs

    def syncfs(fd: int) -> None:
        order.append(f"syncfs uptodate={journal.get_state(UPTODATE_KEY, '0')}")
        assert os.path.samestat(os.fstat(fd), os.stat(directory))
        real_syncfs(fd)

    monkeypatch.setattr(answers, "syncfs", syncfs)
    try:
        journal.new_generation()                          # the peer's history, as it sends it
        history = journal.generations().to_json()
        answers.ResyncAnswers(applier, journal)._done(SimpleNamespace(data=json.dumps(history).encode()))
        assert order == ["syncfs uptodate=0"]
        assert journal.get_state(UPTODATE_KEY) == "1"
    finally:
        applier.close()
        journal.close()
