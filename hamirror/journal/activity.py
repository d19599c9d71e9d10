"""The activity log: the paths a streaming primary is changing, recorded before it changes them.

Why: while the mirror streams, a primary's journal records nothing (the peer gets every change).
If the primary dies, the operations it had applied locally but the peer had not acknowledged are
on one side only, and without a record the failback resync would have to compare the whole tree.
Like DRBD's activity log of hot extents, this file holds the *hot set*: every path with a change
that may not be on the peer yet. A path enters the set durably (one append + ``fdatasync``)
before the operation is applied or streamed; a path already in the set costs a dictionary lookup.
A path leaves the set only once every operation on it was acknowledged by the peer (or failed
and was recorded in the journal) *and* its data is on this node's disk (its durability epoch was
closed by a sync of the directory, hamirror.journal.durability: an acknowledged write still in the
page cache is lost by a power loss) and, when the peer delegated its durability (:attr:`ActivityLog.peer`),
on the peer's disk too; and only when a new path needs its slot (LRU), so the files an
application keeps writing stay hot and cost nothing.

Bounded: at most ``capacity`` paths are hot, and the file is rewritten as a snapshot of the hot
set after ``2 * capacity`` appended entries. After a crash, :func:`read_log` returns the hot set
(a superset of what may differ), which the resync adds to the changed set.

**Directory entries** (DRBD's trade-off: a hot extent, not a hot block). An operation that creates
a name in directory D (create, mknod, mkdir, symlink, link, a rename's destination: the caller
says so, ``enter(..., new=...)``) enters D itself instead of the new path, when the log knows the
replicated directory (``root_fd``). D's entry means "D, and the name, content, metadata and
existence of anything directly in D, may differ from the peer", so a burst of new files in one
directory costs one durable append, and any path directly in D (or D itself) is *covered*: it
costs a lookup, whatever the operation. A path that is not new and not covered enters itself as
before (a database's files stay exact). A covered path is charged to D's slot: its calls count in
D's ``busy``, its newest ticket and durability epoch are D's, so D leaves only when everything it
covers is settled, acknowledged, durable here and, when delegated, on the peer: the conditions of
a path entry. Which slot a path was charged to is remembered while a call on it is inside
(``_charged``), so its ``leave`` settles the same slot even if the hot set changed meanwhile.
The price is paid after a crash: the fold lists D on this node and compares D and every entry in
it whole (hamirror.journal.hotdirs), a wider comparison than the new names alone.

**Renames.** A disk may keep a rename of D to E and lose an earlier write to D/f; a record of D/f,
D and E then leads the resync to E's listing, never to E/f. So a rename carries every unsettled
key beneath D to E in the same append (``enter(..., moved=...)``, :func:`carried`). And a disk
may miss the rename itself (the peer never applied it before this node crashed, or lost it in a
power loss of its own): with D and E swapped, E/f names the old E's file on one side and the old
D's on the other, maybe with equal sizes and times. So the same append enters E's *subtree*
(:func:`tree_key`), which leaves with the rename's own keys; after a crash it becomes a subtree
mark in the journal, and a lost link records it so (everything beneath E compared whole).

Format: hamirror.journal.logformat.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
from typing import Iterable, Sequence

from hamirror.journal import hotdirs
from hamirror.journal.durability import Epochs, Syncer
from hamirror.journal.hotset import PeerCheck, Slot, Acknowledgeable, carried, choose_victims, is_dir
from hamirror.journal.logformat import (ENTER, ENTER_DIR, LEAVE, LEAVE_DIR, MAGIC, MARK, UNMARK, Replay,
                                        dir_key, encode_frame, entry_of, is_tree_key, read_log, remove_log, replay,
                                        tree_key, write_all, write_snapshot)

# The format and the eviction rule lived here before the split: the names callers import from here.
__all__ = ["ActivityLog", "DEFAULT_CAPACITY", "reset_log", "Acknowledgeable", "PeerCheck", "carried",
           "choose_victims", "is_dir", "ENTER", "ENTER_DIR", "LEAVE", "LEAVE_DIR", "MAGIC", "MARK", "UNMARK",
           "Replay", "dir_key", "encode_frame", "read_log", "remove_log", "replay", "tree_key", "write_all",
           "write_snapshot"]

log = logging.getLogger(__name__)

DEFAULT_CAPACITY = 4096


def _parent(path: str) -> str:
    return os.path.dirname(path) or "."


class ActivityLog:
    """The hot set of a streaming primary and its file (see the module docstring).

    Starts empty: the caller folds a previous run's log into the journal first (hamirror.resync.crash).
    With ``epochs`` (the directory's durability epochs), a path also stays until its data is on
    the disk, and a background sync makes it so. With ``root_fd`` (the replicated directory) a
    new name enters its directory (a directory entry); without it, every path enters itself.
    """

    def __init__(self, path: str, capacity: int = DEFAULT_CAPACITY, epochs: Epochs | None = None,
                 interval: float | None = None, root_fd: int | None = None) -> None:
        if capacity < 1:
            raise ValueError("activity log capacity must be at least 1")
        self.path = path
        self.capacity = capacity
        self.root_fd = root_fd                # lists a directory entry when a link is lost
        self._hot: collections.OrderedDict[str, Slot] = collections.OrderedDict()
        # A path whose calls inside are charged to another key's slot (a directory entry that
        # covers it): [key, calls inside]. Its leave settles that slot, whatever entered since.
        self._charged: dict[str, list] = {}
        self._lock = threading.Lock()
        self._appended = 0                    # entries since the last snapshot
        self.records = 0                      # durable appends (for tests and figures)
        self._over = False                    # above capacity (warned once)
        self._fd = -1
        self._snapshot()
        self.epochs = epochs
        # Set by the replicator while it streams to a peer that delegated its durability: a path
        # then stays until the peer's disk has it too (docs/journal.md, "Durability").
        self.peer: PeerCheck | None = None
        self.syncer: Syncer | None = None
        if epochs is not None:
            self.syncer = Syncer(epochs, self._undurable, lambda epoch: None, name="activity-log",
                                 interval=interval)

    def enter(self, paths: Iterable[str], new: Iterable[str] = (),
              moved: Iterable[tuple[str, str]] = ()) -> Sequence[str]:
        """Mark ``paths`` as being changed; durable on return. Call before applying or sending.
        ``new``: those of ``paths`` whose name the operation creates (their directory enters).
        ``moved``: a rename's ``(source, destination)`` pairs (both ways for an exchange): a
        destination that receives a directory enters as a subtree, and the hot keys under a
        source directory enter again under its destination, in the same append (:meth:`_carried`).
        Returns those keys: pass them to :meth:`leave` with ``paths``."""
        paths = list(paths)
        with self._lock:
            hot = self._hot
            extra = self._carried(moved) if moved else ()
            if len(paths) == 1 and not new and not extra:   # most calls: one path, hot or covered
                slot = hot.get(paths[0])
                if slot is not None:          # hot itself (a file being written)
                    hot.move_to_end(paths[0])
                    slot.busy += 1
                    return ()
                key = self._key_of(paths[0])
                if key is not None:
                    hot.move_to_end(key)
                    self._charge(paths[0], key)
                    return ()
            fresh = set(new) if self.root_fd is not None else ()
            charged: list[tuple[str, str]] = []
            later: list[tuple[str, str]] = []
            missing: dict[str, None] = {}
            chosen: dict[str, str] = {}       # a path named twice (a rename onto itself): one key
            for p in paths:
                key = chosen.get(p) or self._key_of(p)
                if key is None:
                    key = dir_key(_parent(p)) if p in fresh and p != "." else p
                chosen[p] = key
                if key in hot:                # charged first: busy, so never a victim below
                    hot.move_to_end(key)
                    self._charge(p, key)
                    charged.append((p, key))
                else:
                    missing[key] = None
                    later.append((p, key))
            held = {key: None for key in extra if key in hot}
            for key in held:                  # this call's too: never a victim below
                hot.move_to_end(key)
                hot[key].busy += 1
            missing.update((key, None) for key in extra if key not in hot)
            if missing:
                try:
                    self._admit(list(missing))
                except BaseException:
                    for p, key in charged:
                        self._uncharge(p)
                    for key in held:
                        hot[key].busy -= 1
                    raise
            for p, key in later:
                self._charge(p, key)
            for key in extra:
                if key not in held:
                    hot[key].busy += 1
        return extra

    def leave(self, paths: Iterable[str], ticket: Acknowledgeable | None, carried: Iterable[str] = ()) -> None:
        """The change block on ``paths`` ended; ``ticket`` is the last operation it sent (if any);
        ``carried``: what :meth:`enter` returned (hot keys, settled as the rename's own)."""
        with self._lock:
            slots = [self._uncharge(p) for p in paths]
            for key in carried:
                slot = self._hot.get(key)
                if slot is not None:
                    slot.busy = max(slot.busy - 1, 0)
                slots.append(slot)
            for slot in slots:
                if slot is None:
                    continue
                if ticket is not None:
                    slot.sent(ticket, self.peer)
                if self.epochs is not None:
                    slot.stamp = self.epochs.stamp()   # after the local apply: see durability.py

    def not_on_peer(self) -> list[str]:
        """The hot paths whose last change may be missing from the peer's disk (a call inside,
        not acknowledged, or not durable there): what a lost link must put in the journal. A
        directory entry gives the directory and every entry in it now (hamirror.journal.hotdirs).
        Subtrees: :meth:`subtrees_not_on_peer`."""
        keys = self._not_on_peer()
        paths = [k for k in keys if not k.endswith("/") and not is_tree_key(k)]
        dirs = [k[:-1] for k in keys if k.endswith("/")]
        if dirs and self.root_fd is not None:
            paths += hotdirs.expand_all(self.root_fd, dirs)
        return list(dict.fromkeys(paths))

    def subtrees_not_on_peer(self) -> list[str]:
        """The directories renamed to their name whose rename may be missing from the peer's disk:
        a lost link records each as a subtree (it and everything beneath it, compared whole)."""
        return [k[:-1] for k in self._not_on_peer() if is_tree_key(k)]

    def _not_on_peer(self) -> list[str]:
        with self._lock:
            return [k for k, slot in self._hot.items() if not slot.on_peer(self.peer)]

    def recorded(self) -> None:
        """The journal now holds :meth:`not_on_peer`'s paths (the link was lost): the operations
        of that session need no peer durability any more (a failed one completes as done too)."""
        with self._lock:
            for slot in self._hot.values():
                if slot.ticket is not None and slot.ticket.done:
                    slot.ticket = None

    def hot(self) -> list[str]:
        """The hot set, least recently used first (a directory entry as ``dir_key(d)``: "d/")."""
        with self._lock:
            return list(self._hot)

    def close(self) -> None:
        if self.syncer is not None:
            self.syncer.stop()
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def _undurable(self) -> bool:
        """Some hot path's last change may not be on the disk yet (the syncer's question)."""
        durable = self.epochs.durable
        with self._lock:
            return any(slot.stamp > durable for slot in self._hot.values())

    # internals (``_lock`` held) --------------------------------------------------------------

    def _carried(self, moved: Iterable[tuple[str, str]]) -> list[str]:
        """The keys a rename enters under its destination: the destination's subtree (a name that
        receives a directory: if either disk misses the rename, the same names beneath it may
        hold the other directory's files with equal sizes and times), and each hot key under a
        source directory (its directory entry, and everything beneath) that may not be on both
        disks yet, renamed. A source that is no directory here has nothing under it (one
        ``lstat``, no scan; without ``root_fd`` every source counts as a directory)."""
        extra: dict[str, None] = {}
        durable = None if self.epochs is None else self.epochs.durable
        for src, dst in moved:
            if self.root_fd is not None and not is_dir(self.root_fd, src):
                continue
            extra[tree_key(dst)] = None
            prefix = src + "/"
            unsettled = [k for k, slot in self._hot.items()
                         if k.startswith(prefix) and not slot.evictable(durable, self.peer)]
            extra.update(dict.fromkeys(carried(unsettled, src, dst)))
        # A path whose call is still inside, charged to the entry covering it (an unlink of E/f
        # just before D moved onto E): that entry holds it, so the path never is two keys at once.
        return list(dict.fromkeys(self._charged[k][0] if k in self._charged else k for k in extra))

    def _key_of(self, path: str) -> str | None:
        """The hot key a call on ``path`` is charged to, or None (not hot, not covered): its own
        entry, the key its calls inside already use, its own directory entry, its parent's. (The
        first two never both exist: a path is charged elsewhere only while it is not hot itself,
        and it cannot enter itself while a call charged elsewhere is inside.)"""
        hot = self._hot
        if path in hot:
            return path
        charged = self._charged.get(path)
        if charged is not None:
            return charged[0]
        if self.root_fd is None:
            return None
        for key in (dir_key(path), dir_key(_parent(path))):
            if key in hot:
                return key
        return None

    def _charge(self, path: str, key: str) -> None:
        self._hot[key].busy += 1
        if key != path:
            charged = self._charged.get(path)
            if charged is None:
                self._charged[path] = [key, 1]
            else:
                charged[1] += 1

    def _uncharge(self, path: str) -> Slot | None:
        """A call on ``path`` is no longer inside: the slot it was charged to (None: not hot)."""
        charged = self._charged.get(path)
        if charged is None:
            slot = self._hot.get(path)
        else:
            slot = self._hot.get(charged[0])
            charged[1] -= 1
            if charged[1] <= 0:
                del self._charged[path]
        if slot is not None:
            slot.busy = max(slot.busy - 1, 0)
        return slot

    def _admit(self, new: list[str]) -> None:
        hot = self._hot
        wanted = len(hot) + len(new) - self.capacity
        victims = choose_victims(hot, wanted, None if self.epochs is None else self.epochs.durable, self.peer)
        if len(victims) < wanted:
            if self.syncer is not None:
                self.syncer.kick()            # what waits for the disk leaves after the sync
            if not self._over:
                log.warning("activity log: %d paths in flight or not yet durable exceed its capacity %d",
                            len(hot) + len(new) - len(victims), self.capacity)
            self._over = True
        elif self._over and wanted <= 0:
            self._over = False
        frame = encode_frame([entry_of(v, False) for v in victims] + [entry_of(p, True) for p in new])
        if self._appended + len(victims) + len(new) > 2 * self.capacity:
            for v in victims:
                del hot[v]
            for p in new:
                hot[p] = Slot()
            try:
                self._snapshot()
            except BaseException:
                for p in new:
                    hot.pop(p, None)
                raise
            return
        write_all(self._fd, frame)
        os.fdatasync(self._fd)
        self.records += 1
        self._appended += len(victims) + len(new)
        for v in victims:
            del hot[v]
        for p in new:
            hot[p] = Slot()

    def _snapshot(self) -> None:
        """Rewrite the file as the current hot set (atomic replace, durable)."""
        self._fd = write_snapshot(self.path, list(self._hot), self._fd)
        self._appended = 0
        self.records += 1


def reset_log(path: str) -> None:
    """Replace the log at ``path`` with an empty one (its content was folded into the journal)."""
    ActivityLog(path).close()

