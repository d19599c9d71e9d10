"""The changed set's records and how a batch of them is written in one transaction.

Several FUSE threads recording new items at once are combined into one commit (group commit):
the journal queues :class:`Record` objects and one thread writes them all with
:func:`write_batch`. The in-memory copy is staged copy-on-write and swapped in only after the
commit, so memory never claims more than the disk holds.
"""

from __future__ import annotations

import dataclasses
import sqlite3

from hamirror.journal.blocks import RunSet


SUBTREE = 2
"""``changed_paths.whole`` of a subtree mark: the path and everything beneath it, compared whole
(the journal file is format 2 while one is recorded: hamirror.journal.journal.PLAIN_FORMAT)."""


class Changed:
    """In-memory copy of one recorded path: whole-file mark (``subtree``: and everything beneath
    it) or its changed block runs."""

    __slots__ = ("whole", "runs", "subtree")

    def __init__(self, whole: bool = False, runs: RunSet | None = None, subtree: bool = False) -> None:
        self.whole = whole or subtree
        self.runs = runs if runs is not None else RunSet()
        self.subtree = subtree


@dataclasses.dataclass(eq=False)
class Record:
    """One request: a path (``span`` None), a block span, a whole-file mark, or a subtree mark
    (``whole`` and ``subtree``)."""

    path: str
    key: bytes                          # the path as stored (os.fsencode)
    span: tuple[int, int] | None = None
    whole: bool = False
    subtree: bool = False
    done: bool = False                  # set by the thread that committed it
    error: BaseException | None = None


def write_batch(db: sqlite3.Connection, changed: dict[str, Changed],
                batch: list[Record]) -> dict[str, Changed]:
    """Write ``batch`` inside the caller's open transaction; return the staged entries.

    ``changed`` (the live cache) is only read. The caller swaps the returned entries in after
    the commit succeeded.
    """
    staged: dict[str, Changed] = {}
    for rec in batch:
        entry = staged.get(rec.path)
        if entry is None:
            live = changed.get(rec.path)
            if live is not None and not rec.whole and (rec.span is None or live.whole):
                continue                # already recorded at least this much
            runs = live.runs.copy() if live is not None and rec.span is not None else None
            entry = Changed(live.whole if live is not None else False, runs,
                            live is not None and live.subtree)
            staged[rec.path] = entry
        if rec.whole:
            mark = SUBTREE if rec.subtree else 1   # never lowers a subtree mark to a whole file
            db.execute("INSERT INTO changed_paths (path, whole) VALUES (?, ?) "
                       "ON CONFLICT (path) DO UPDATE SET whole = max(whole, excluded.whole)", (rec.key, mark))
            db.execute("DELETE FROM changed_runs WHERE path = ?", (rec.key,))
            entry.whole, entry.runs, entry.subtree = True, RunSet(), entry.subtree or rec.subtree
            continue
        db.execute("INSERT OR IGNORE INTO changed_paths (path) VALUES (?)", (rec.key,))
        if rec.span is None or entry.whole or entry.runs.covers(*rec.span):
            continue
        plan = entry.runs.plan(*rec.span)
        start, stop = plan[0], plan[1]
        db.execute("DELETE FROM changed_runs WHERE path = ? AND start BETWEEN ? AND ?",
                   (rec.key, start, stop))
        db.execute("INSERT INTO changed_runs (path, start, stop) VALUES (?, ?, ?)",
                   (rec.key, start, stop))
        entry.runs.apply(plan)
    return staged
