"""What the decision needs from a module's journals, and generation ids on the heartbeat wire.

A module has one journal per replicated directory (``<state>/modules/<m>/<index>/journal.db``),
all written together by the data path. The generation history of directory 0 stands for the
module (every directory's mount enters ALONE and resyncs together); the module is up to date only
if every directory is. The journals are opened fresh for each read, since the mount and the
receiver (other processes) write them and a ``Journal`` caches its history at open.

On the wire, the heartbeat's ``g`` field (at most 128 characters) carries the newest generation
ids joined by commas, as many whole ids as fit (7), or ``-`` for no history. A truncated history
can only turn a relation into UNKNOWN (a full resync), never into another one (docs/journal.md).
"""

from __future__ import annotations

import dataclasses
import os

from hamirror.journal import unsynced
from hamirror.journal.generations import Generation, GenerationHistory
from hamirror.journal.journal import Journal
from hamirror.mirror.record import STATE, UPTODATE
from hamirror.mirror.states import REPLICA

WIRE_LIMIT = 128
NO_HISTORY = "-"


@dataclasses.dataclass(frozen=True)
class JournalInfo:
    """The module's data as the journals describe it."""

    history: GenerationHistory
    uptodate: bool
    changed: int = 0    # paths changed here that the peer lacks (all directories)


def journal_path(dir_state: str) -> str:
    return os.path.join(dir_state, "journal.db")


def read(dir_states: list[str]) -> JournalInfo:
    """History of the first directory and whether all directories are up to date."""
    history, uptodate, changed = GenerationHistory(), True, 0
    for index, path in enumerate(dir_states):
        if not os.path.exists(journal_path(path)):
            uptodate = False
            continue
        with Journal(journal_path(path)) as journal:
            # A receiver that stopped uncleanly may have lost acknowledged data (docs/journal.md).
            uptodate = uptodate and UPTODATE.get(journal) and not unsynced.owed(journal, path)
            if index == 0:
                # The flag first, then the history as stored now: a receiver ending a resync stores
                # the history, then the flag; read the other way round (the history at the open),
                # a copy made up to date in between read as the old history and up to date, a
                # relation UNKNOWN, and the WAIT node marked it stale again (a resync more, ~15 s,
                # for 1 to 7 of 50 modules starting at once).
                history = journal.stored_generations()
            changed += journal.changed_count()
    return JournalInfo(history, uptodate, changed)


def mark_uptodate(dir_states: list[str], value: bool) -> None:
    """Persist the up-to-date flag in every directory's journal. Up to date means a replica of
    the peer: whatever this node's mounts did before (ALONE, FENCED) is over, so a later mount
    here (a swap) streams instead of resuming a stale ALONE."""
    for path in dir_states:
        os.makedirs(path, mode=0o700, exist_ok=True)
        with Journal(journal_path(path)) as journal:
            UPTODATE.set(journal, value)
            if value:
                STATE.set(journal, REPLICA)


def forget_history(dir_states: list[str]) -> None:
    """Drop the generation history (operator chose the peer's data after a split brain): both
    sides then compare UNKNOWN and the primary overwrites this node with a scan resync."""
    for path in dir_states:
        if not os.path.exists(journal_path(path)):
            continue
        with Journal(journal_path(path)) as journal:
            journal.forget_generations()
            UPTODATE.set(journal, False)
            STATE.set(journal, REPLICA)   # our ALONE past is given up with the history


def to_wire(history: GenerationHistory) -> str:
    """The heartbeat's ``g`` value: newest ids first, comma-separated, at most 128 characters."""
    out = ""
    for gid in history.ids():
        candidate = f"{out},{gid}" if out else gid
        if len(candidate) > WIRE_LIMIT:
            break
        out = candidate
    return out or NO_HISTORY


def from_wire(text: str) -> GenerationHistory:
    """Inverse of :func:`to_wire` (creation times are not sent: 0)."""
    ids = [gid for gid in text.split(",") if gid and gid != NO_HISTORY]
    if not ids:
        return GenerationHistory()
    return GenerationHistory(Generation(ids[0], 0.0), tuple(Generation(g, 0.0) for g in ids[1:]))
