"""After an unclean stop of a mount: can the journal name every path that may differ from the peer?

A mount that dies while streaming leaves operations it applied locally that the peer may lack
(and, for writes sent before the local apply, the reverse). The activity log
(hamirror.journal.activity) holds exactly those paths; folding it into the journal's changed set
makes the journal *complete* again, so the next resync is incremental over (the peer's changes ∪
this node's activity log) instead of a scan of the whole tree. Whether that is possible is a pure
decision (:func:`decide`); :func:`recover` acts on it. Both the crashed node's next mount
(hamirror.fs.mount) and its receiver (the usual failback: the peer took over) call it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass

from hamirror.journal.activity import ActivityLog, reset_log
from hamirror.journal import hotdirs, unsynced
from hamirror.journal.durability import Epochs
from hamirror.journal.journal import Journal
from hamirror.journal.logformat import Replay, read_log, remove_log
from hamirror.mirror.record import COVERED, MirrorRecord
from hamirror.mirror.states import MirrorState

log = logging.getLogger(__name__)

ACTIVITY_LOG = "activity.log"
COVERED_KEY = COVERED.name   # "1": after an unclean stop, the changed set was made complete again


@dataclass(frozen=True)
class Recovery:
    """What to do with a crashed mount's journal."""

    fold: bool        # add the activity log's paths to the changed set
    covered: bool     # afterwards, the changed set names every path that may differ
    why: str


def decide(saved: MirrorState | str | None, lost_from: MirrorState | str | None, resync_running: bool,
           log_paths: frozenset[str] | None, log_problem: str = "") -> Recovery:
    """The recovery for a mount that stopped uncleanly in state ``saved`` (pure).

    Streaming (PRIM) or blocked after streaming (FENCED/REFUSED): the activity log covers the
    operations in flight, if it is intact. ALONE: the journal recorded every change before it
    was applied. A resync in progress (ALONE with progress, or fenced while SYNCING) never makes
    the journal complete (the next resync scans), but the log's paths are added all the same:
    the scan compares every path a journal names by blocks, whatever its metadata says.
    """
    if saved == MirrorState.ALONE:
        if resync_running:
            # Its paths are still folded in: the scan that follows compares them block by block
            # (a write in flight leaves size and mtime alike within one clock tick).
            return Recovery(log_paths is not None, False, "crashed during a resync")
        # Every change was journaled before it was applied; the log may still name a call that
        # was applied while streaming and found the peer gone before it could be sent.
        return Recovery(log_paths is not None, True, "crashed ALONE: every change was journaled first")
    if saved in (MirrorState.FENCED, MirrorState.REFUSED) and lost_from == MirrorState.SYNCING:
        return Recovery(log_paths is not None, False, "crashed fenced during a resync")
    if saved in (MirrorState.PRIM, MirrorState.FENCED, MirrorState.REFUSED):
        if log_paths is None:
            return Recovery(False, False, f"crashed while streaming, activity log unusable: {log_problem}")
        return Recovery(True, True, f"crashed while streaming: {len(log_paths)} path(s) in the activity log")
    return Recovery(False, False, f"crashed in state {getattr(saved, 'value', saved) or 'unknown'}")


def activity_log_path(journal: Journal) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(journal.path)), ACTIVITY_LOG)


def recover(journal: Journal, root_fd: int | None = None) -> Recovery:
    """Fold this node's activity log into its journal when that makes it complete; durable.

    A directory entry is folded as the directory and every entry in it now, listed beneath
    ``root_fd`` (this node's copy of the replicated directory; hamirror.journal.hotdirs), all
    compared whole: the resync compares the directory's listing on both sides, so a name only
    one side has is found too. A subtree (a directory renamed to that name) becomes a subtree
    mark: the resync compares everything beneath it whole, or, on a receiver, its answer to
    CHANGES names every path beneath it here. The log is emptied only after the journal holds its paths, so a
    crash in between folds again.
    """
    path = activity_log_path(journal)
    replay = read_log(path)
    resync_running = journal.resync_progress() is not None
    last = MirrorRecord.read(journal)
    result = decide(last.state, last.lost_from, resync_running,
                    replay.paths, replay.problem)
    if result.fold and (replay.paths or replay.dirs or replay.trees):
        try:
            # A subtree (a directory renamed there) stays a mark: the resync walks beneath it.
            journal.record_wholes(_folded(replay, root_fd), sorted(replay.trees))
        except ValueError as exc:      # a path no operation could have named: a damaged log
            result = Recovery(False, False, f"activity log unusable: {exc}")
        except OSError as exc:         # a hot directory cannot be listed: what it covers is unknown
            result = Recovery(False, False, f"activity log: a hot directory cannot be listed: {exc}")
        else:
            if replay.dirs:
                result = dataclasses.replace(result, why=f"{result.why}, {len(replay.dirs)} directory entr"
                                                         f"{'y' if len(replay.dirs) == 1 else 'ies'}")
            if replay.trees:
                result = dataclasses.replace(result, why=f"{result.why}, {len(replay.trees)} renamed director"
                                                         f"{'y' if len(replay.trees) == 1 else 'ies'} "
                                                         "compared whole beneath")
    if result.fold:
        reset_log(path)
    log.info("journal after an unclean stop: %s (%s)", "complete" if result.covered else "incomplete",
             result.why)
    return result


def _folded(replay: Replay, root_fd: int | None) -> list[str]:
    """The paths a replayed log names: its paths, and each directory entry expanded."""
    paths = sorted(replay.paths or ())
    if replay.dirs:
        if root_fd is None:
            raise OSError("directory entries, and no directory to list them in")
        paths += hotdirs.expand_all(root_fd, sorted(replay.dirs))
    return paths


def recover_for_receiver(journal: Journal, clean: bool, root_fd: int | None = None) -> bool:
    """The receiver side (a crashed primary came back as secondary): True when the journal's
    changed set is complete, so the peer may resync incrementally. ``root_fd``: its directory."""
    if clean:
        return True
    if COVERED.get(journal):
        return True
    if recover(journal, root_fd).covered:
        COVERED.set(journal, True)
        return True
    return False


def start_mount(journal: Journal, clean: bool, enabled: bool,
                sync_fd: int | None = None) -> tuple[Recovery | None, ActivityLog | None]:
    """A mount starts: recover a previous crash (None when the last stop was clean), then start
    a fresh, empty activity log (or remove it when it is off: a stale one must never be trusted).
    With ``sync_fd`` (the lower directory) a path stays in the log until its data is durable,
    and a new name enters its directory (a directory entry, listed there after a crash).

    From here on the journal is incomplete again until the next clean stop or recovery.
    """
    result = None if clean else recover(journal, sync_fd)
    COVERED.set(journal, False)
    if sync_fd is not None:
        unsynced.forget(journal, os.path.dirname(os.path.abspath(journal.path)), sync_fd)
    path = activity_log_path(journal)
    if not enabled:
        remove_log(path)
        return result, None
    return result, ActivityLog(path, epochs=None if sync_fd is None else Epochs(sync_fd), root_fd=sync_fd)
