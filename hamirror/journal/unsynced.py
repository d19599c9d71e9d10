"""The secondary's unsynced log: the paths it acknowledged whose data may not be on its disk yet.

Why: the receiver acknowledges once an operation is applied (in the page cache). A power loss of
the secondary takes what was not written back, and the primary, which keeps only what the peer did
*not* acknowledge, has no record of it. So the receiver keeps one (docs/journal.md, "Durability"):
a path enters this file durably before the first acknowledgement of an operation on it, and leaves
once a sync that began after its last change returned (:mod:`hamirror.journal.durability`).

Batching: :meth:`UnsyncedLog.note` only marks paths in memory (per message); :meth:`flush` makes
the batch's new paths durable with one append and one ``fdatasync``, and the receiver calls it
before sending the batch's acknowledgements. Leaves are appended without a sync (a lost leave only
makes the record larger); the file is rewritten as a snapshot when they pile up.

**Delegated sessions.** A primary that keeps every path in its own activity log until this
node's disk has it (it offered so with PING_DELEGATE, hamirror.link.protocol) needs no path here:
:meth:`UnsyncedLog.delegate` switches the session, and its operations only set the log's *mark*
(one durable append when it is not set yet, so at most once per sync interval, not per path).
Every reply of the session then carries :attr:`UnsyncedLog.durable_seq`, the newest sequence
number whose effects a sync made durable. After an unclean stop the mark says "this copy may have
lost acknowledged data that the primary recorded": not up to date, and ``unsynced_peer`` tells
the resync to rely on the primary's journal (or compare every block when that is incomplete).

After an unclean stop, :func:`recover` moves the log's paths into the journal's state
(``unsynced_paths``) and marks the copy not up to date, until a resync compared them.
Same file format as the activity log (hamirror.journal.logformat).
"""

from __future__ import annotations

import collections
import fcntl
import json
import logging
import os
import threading
import time
from typing import Iterable

from hamirror.journal import hotdirs
from hamirror.journal.durability import Epochs, Syncer
from hamirror.journal.hotset import carried, is_dir
from hamirror.journal.journal import Journal
from hamirror.journal.logformat import (MARK, UNMARK, encode_frame, entry_of, is_tree_key, read_log, tree_key,
                                        write_all, write_snapshot)
from hamirror.mirror.record import KEPT, UNSYNCED, UNSYNCED_PEER, UPTODATE
from hamirror.syscalls import syncfs

log = logging.getLogger(__name__)

UNSYNCED_LOG = "unsynced.log"
LOCK_FILE = "unsynced.lock"       # held by the live receiver: a log nobody holds outlived its writer
LOCK_WAIT = 10.0                  # seconds a starting receiver waits for a stopping one's lock
UNSYNCED_KEY = UNSYNCED.name      # JSON list of paths to compare whole, or "*" (every block)
EVERYTHING = "*"
KICK_PATHS = 2048   # delegated: this many paths not yet durable ask for a sync now (the primary's
                    # activity log keeps them meanwhile; its capacity is 4,096)


class UnsyncedLog:
    """The receiver's record of paths applied since their last durability point (see above)."""

    def __init__(self, path: str, epochs: Epochs, interval: float | None = None) -> None:
        self.path = path
        self.epochs = epochs
        self._lock = threading.Lock()
        self._hot: dict[str, int] = {}          # path -> epoch stamp of its last change
        self._new: dict[str, None] = {}          # in _hot, not yet durable in the file
        self._leaving: dict[str, None] = {}      # left _hot, leave not yet written
        self._appended = 0
        self.records = 0                         # fdatasyncs of the file (for tests and figures)
        self.delegated = False                   # this session's primary records what is not durable
        self.durable_seq = 0                     # delegated: newest seq of the session on the disk
        self._seqs: collections.deque[list[int]] = collections.deque()   # [stamp, last seq], oldest first
        self._owed: dict[bytes, int] = {}        # delegated: path -> stamp, not yet durable (a count)
        self._mark = 0                           # stamp of the newest delegated change (0: none owed)
        self._marked = False                     # the mark is in the file
        self._fd = write_snapshot(path, [], -1)
        self.syncer = Syncer(epochs, self._wanted, self.durable_until, name="unsynced-log", interval=interval)

    def begin_session(self) -> None:
        """A HELLO: a new session numbers from its own seq; it is not delegated until it says so."""
        with self._lock:
            self.delegated = False
            self._seqs.clear()
            self.durable_seq = 0

    def delegate(self, seq: int) -> None:
        """PING_DELEGATE at ``seq``: what came before was recorded path by path (durable in the
        file when acknowledged), so the durable point starts there."""
        with self._lock:
            self.delegated = True
            self._seqs.clear()
            self.durable_seq = seq

    def note(self, paths: Iterable[bytes], seq: int | None = None,
             moved: Iterable[tuple[bytes, bytes]] = ()) -> None:
        """``paths`` were just changed by the applied operation ``seq`` (memory only; see
        :meth:`flush`). In a delegated session only the mark is recorded. ``moved``: a rename's
        (source, destination) pairs, noted once it was applied: the paths kept under a source
        directory are kept under its destination too (the disk may keep the rename and lose their
        data), and a destination that is a directory now is kept as a subtree (the disk may lose
        the rename: then the same names beneath it hold the other directory's files)."""
        stamp = self.epochs.stamp()
        moved = [(os.fsdecode(src), os.fsdecode(dst)) for src, dst in moved]
        trees = [tree_key(dst) for _, dst in moved if not self.delegated and is_dir(self.epochs.fd, dst)]
        with self._lock:
            if self.delegated:
                self._note_delegated(paths, stamp, seq)
                return
            hot = self._hot
            keys = [os.fsdecode(raw) for raw in paths] + trees
            for src, dst in moved:
                keys += carried(hot, src, dst)
            for path in keys:
                if path not in hot:
                    self._new[path] = None
                    self._leaving.pop(path, None)
                hot[path] = stamp

    def _note_delegated(self, paths: Iterable[bytes], stamp: int, seq: int | None) -> None:
        owed = self._owed
        for raw in paths:
            owed[raw] = stamp
        self._mark = stamp
        if seq is not None:
            seqs = self._seqs
            if seqs and seqs[-1][0] == stamp:
                seqs[-1][1] = seq
            else:
                seqs.append([stamp, seq])
        if len(owed) > KICK_PATHS:
            self.syncer.kick()

    def flush(self) -> None:
        """Make every noted path durable in the file; call before acknowledging (raises OSError)."""
        with self._lock:
            mark = bool(self._mark) and not self._marked
            if not self._new and not mark:
                return
            entries = [entry_of(p, False) for p in self._leaving] + [entry_of(p, True) for p in self._new]
            if mark:
                entries.append((MARK, ""))
            write_all(self._fd, encode_frame(entries))
            os.fdatasync(self._fd)
            self.records += 1
            self._appended += len(entries)
            self._new.clear()
            self._leaving.clear()
            self._marked = self._marked or mark

    @property
    def pending(self) -> bool:
        """Paths noted but not yet durable in the file: the replies must wait for :meth:`flush`."""
        return bool(self._new) or (bool(self._mark) and not self._marked)

    def __len__(self) -> int:
        return len(self._hot) + len(self._owed)

    def paths(self) -> list[str]:
        """The paths whose data may not be on the disk (for tests and status; subtrees aside)."""
        with self._lock:
            return [p for p in self._hot if not is_tree_key(p)]

    def close(self, clean: bool) -> None:
        """Stop; with ``clean``, sync the filesystem and empty the log (nothing is unsynced).
        If the log cannot be emptied it stays as it is (the next start reports its paths): the
        descriptor is closed either way, and the caller's shutdown goes on."""
        self.syncer.stop()
        try:
            if clean and self.syncer.sync_once():
                with self._lock:
                    self._fd = write_snapshot(self.path, [], self._fd)
                    self._hot.clear()
                    self._new.clear()
                    self._owed.clear()
                    self._mark, self._marked = 0, False
        except OSError as exc:
            log.warning("%s: kept (a clean stop could not empty it): %s", self.path, exc)
        finally:
            with self._lock:
                os.close(self._fd)
                self._fd = -1

    # the syncer's side -------------------------------------------------------------------------

    def _wanted(self) -> bool:
        return bool(self._hot) or bool(self._mark)

    def durable_until(self, epoch: int) -> None:
        """Every change stamped ``epoch`` or older is on the disk: those paths leave."""
        with self._lock:
            if self._fd < 0:
                return
            seqs = self._seqs
            while seqs and seqs[0][0] <= epoch:
                self.durable_seq = max(self.durable_seq, seqs.popleft()[1])
            if self._mark and self._mark <= epoch:
                self._owed.clear()
                self._mark = 0
                if self._marked:      # cleared without a sync: a lost clear only costs a resync
                    self._marked = False
                    write_all(self._fd, encode_frame([(UNMARK, "")]))
                    self._appended += 1
            elif self._owed:
                self._owed = {p: stamp for p, stamp in self._owed.items() if stamp > epoch}
            left = [p for p, stamp in self._hot.items() if stamp <= epoch]
            for p in left:
                del self._hot[p]
                if self._new.pop(p, None) is None:   # in the file: write its leave
                    self._leaving[p] = None
            if not self._leaving:
                return
            if self._appended > 2 * len(self._hot) + 1024 and not self._marked:
                self._fd = write_snapshot(self.path, [p for p in self._hot if p not in self._new], self._fd)
                self._appended = 0
                self._leaving.clear()
                return
            write_all(self._fd, encode_frame([entry_of(p, False) for p in self._leaving]))
            self._appended += len(self._leaving)
            self._leaving.clear()


def hold(state_dir: str, wait: float = LOCK_WAIT) -> int:
    """Take the receiver's lock (kept until the process ends or closes the descriptor returned):
    tells other processes that this log has a live writer. Raises OSError after ``wait`` s."""
    fd = os.open(os.path.join(state_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise OSError(f"{state_dir}: another receiver holds {LOCK_FILE}") from None
            time.sleep(0.05)


def _orphaned(state_dir: str) -> bool:
    """No live receiver holds the log (probing takes the lock for an instant)."""
    try:
        fd = os.open(os.path.join(state_dir, LOCK_FILE), os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def owed(journal: Journal, state_dir: str) -> bool:
    """Whether this copy may miss acknowledged data: recorded as such, or a receiver stopped
    uncleanly and no receiver has looked at its log yet (what the agent asks before a takeover)."""
    if UNSYNCED.get(journal) or UNSYNCED_PEER.get(journal):
        return True
    path = os.path.join(state_dir, UNSYNCED_LOG)
    if not os.path.exists(path) or not _orphaned(state_dir):
        return False
    return _names_something(path)


def _names_something(path: str) -> bool:
    replay = read_log(path)
    return replay.paths != frozenset() or bool(replay.trees) or replay.marked


def forget(journal: Journal, state_dir: str, root_fd: int) -> None:
    """A mount starts here (this copy is the reference now): a receiver's leftover log came from a
    process killed with the page cache intact (a power loss would have left the node not up to
    date, and only an operator forces that): make it durable, then drop the record."""
    path = os.path.join(state_dir, UNSYNCED_LOG)
    if os.path.exists(path) and _orphaned(state_dir) and _names_something(path):
        syncfs(root_fd)
        os.close(write_snapshot(path, [], -1))
    resolved(journal)


def recover(journal: Journal, state_dir: str, root_fd: int | None = None) -> str:
    """At receiver start, before anything is applied: after an unclean stop, record what may be
    lost (``unsynced_paths``) and mark this copy not up to date. Returns what was found, for the log.
    ``root_fd``: this copy, where a subtree is named path by path (without it: every block)."""
    path = os.path.join(state_dir, UNSYNCED_LOG)
    replay = read_log(path)
    if replay.paths is not None:
        lost: frozenset[str] | None = frozenset(p for p in replay.paths if p != ".")
        if replay.trees:
            lost = _beneath(lost, replay.trees, root_fd)
    elif KEPT.get(journal) or os.path.exists(path):
        lost = None
    else:
        lost = frozenset()                      # never kept one: the first start
    what = ""
    if lost is None or lost:
        UNSYNCED.set(journal, merge(UNSYNCED.get(journal), lost))
        UPTODATE.set(journal, False)
        what = (f"log unusable: every block will be compared ({replay.problem})" if lost is None
                else f"{len(lost)} path(s) may have lost acknowledged data")
        log.warning("unclean stop of the receiver: %s; not up to date until a resync compared them", what)
    if replay.marked:
        UNSYNCED_PEER.set(journal, True)
        UPTODATE.set(journal, False)
        what = (what + "; " if what else "") + "acknowledged data its primary recorded may be lost"
        log.warning("unclean stop of the receiver while its primary kept the record of what was not durable "
                    "here: not up to date until the primary's resync compared what it recorded")
    KEPT.set(journal, True)
    return what


def _beneath(lost: frozenset[str], trees: frozenset[str], root_fd: int | None) -> frozenset[str] | None:
    """``lost`` and every path beneath each of ``trees`` (directories renamed there) on this copy
    now: the resync compares each whole, in every mode, and the listings of the directories among
    them, so a name only the primary has is found too. None (every block) when one cannot be
    listed. The answer to CHANGES stays a list of paths, which an older primary reads as well."""
    if root_fd is None:
        return None
    try:
        return lost | frozenset(p for top in sorted(trees) for p in hotdirs.expand_tree(root_fd, top))
    except (OSError, ValueError) as exc:
        log.warning("unsynced log: a renamed directory cannot be listed here (%s): every block will be compared",
                    exc)
        return None


def merge(saved: str, lost: frozenset[str] | None) -> str:
    """The ``unsynced_paths`` value after adding ``lost`` (None: everything) to ``saved`` (pure)."""
    if lost is None or saved == EVERYTHING:
        return EVERYTHING
    return json.dumps(sorted(set(json.loads(saved) if saved else ()) | lost))


def pending(journal: Journal) -> list[str] | None:
    """What the resync must compare whole: paths, or None for every block (CHANGES' ``unsynced``)."""
    saved = UNSYNCED.get(journal)
    if saved == EVERYTHING:
        return None
    try:
        return json.loads(saved) if saved else []
    except ValueError:
        return None


def peer_recorded(journal: Journal) -> bool:
    """Whether this copy may have lost acknowledged data that its primary recorded (CHANGES'
    ``unsynced_peer``: the primary's journal names those paths when it is complete)."""
    return UNSYNCED_PEER.get(journal)


def resolved(journal: Journal) -> None:
    """A resync compared everything and the filesystem was synced: nothing is owed any more."""
    if UNSYNCED.get(journal):
        UNSYNCED.set(journal, "")
    if UNSYNCED_PEER.get(journal):
        UNSYNCED_PEER.set(journal, False)
