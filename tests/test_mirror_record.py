"""The journal's small-state keys are typed and declared once (hamirror/mirror/record.py).

A real journal on disk. What the record writes is what earlier versions wrote (``"1"``/``"0"``,
a state's value), so a journal left by an older mount reads the same, and nothing else in the
package reads or writes the table by name.
"""

from __future__ import annotations

import ast
import pathlib

from hamirror.journal.journal import Journal
from hamirror.mirror import record
from hamirror.mirror.record import MirrorRecord
from hamirror.mirror.states import REPLICA, MirrorState

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Who may call Journal.get_state/set_state directly: the record itself and the journal's own
# benchmark.
RAW_ALLOWED = {"hamirror/mirror/record.py", "hamirror/journal/bench.py"}


def test_each_key_is_declared_once():
    names = [key.name for key in record.KEYS]
    assert len(names) == len(set(names))
    declared = {value.name for value in vars(record).values() if isinstance(value, record.Key)}
    assert declared == set(names), "a key missing from record.KEYS"


def test_a_fresh_journal_reads_the_defaults(tmp_path):
    with Journal(str(tmp_path / "j.db")) as journal:
        assert MirrorRecord.read(journal) == MirrorRecord(state=None, lost_from=None, clean=True)
        assert record.UPTODATE.get(journal) is False and record.NEEDS_SCAN.get(journal) is False
        assert record.UPTODATE.get(journal, default=True) is True
        assert record.UNSYNCED.get(journal) == ""


def test_values_are_stored_as_before(tmp_path):
    with Journal(str(tmp_path / "j.db")) as journal:
        record.CLEAN.set(journal, False)
        record.UPTODATE.set(journal, True)
        record.STATE.set(journal, MirrorState.FENCED)
        record.LOST_FROM.set(journal, MirrorState.SYNCING)
        assert [journal.get_state(k) for k in ("mount_clean", "uptodate", "mirror_state", "mirror_lost_from")] \
            == ["0", "1", "FENCED", "SYNCING"]
        last = MirrorRecord.read(journal)
        assert last.state is MirrorState.FENCED and last.lost_from is MirrorState.SYNCING and last.clean is False


def test_the_agents_replica_mark_and_a_foreign_value_are_kept_as_they_are(tmp_path):
    with Journal(str(tmp_path / "j.db")) as journal:
        record.STATE.set(journal, REPLICA)
        assert MirrorRecord.read(journal).state == "SECOND"
        journal.set_state("mirror_state", "NEWER")      # written by a later version
        assert MirrorRecord.read(journal).state == "NEWER"
        assert not isinstance(MirrorRecord.read(journal).state, MirrorState)


def test_nothing_else_reads_or_writes_the_table_by_name():
    for path in sorted((ROOT / "hamirror").rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        if rel in RAW_ALLOWED or rel == "hamirror/journal/journal.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in ("get_state", "set_state"):
                raise AssertionError(f"{rel}:{node.lineno}: {node.func.attr} by name; use hamirror/mirror/record.py")
