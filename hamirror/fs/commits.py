"""Commits: a file that commits the same number of writes at a time (a database's WAL: write, then
fdatasync; SQLite's: a frame's header, its page, then fdatasync) sends the last write of each
commit as WRITE_FSYNC, and the fsync after it sends nothing.

The rule (:class:`CommitPattern`): a file whose last fsync followed exactly one write, or whose
last two fsyncs each followed the same number n of writes (n <= :data:`MAX_WRITES`), is expected
to commit so again, so the n-th write after its fsync travels as WRITE_FSYNC (the peer makes the
file durable, the writes before it included, before it acknowledges) and the fsync that follows
needs no message of its own. A wrong guess costs the peer one needless sync. Per mode
(hamirror/fs/operations.py):

- ``sync``, per handle (the handle that writes is the one that fsyncs; a handle's pattern goes at
  its release, the number may name another file next). The WRITE_FSYNC asks for the fsync's own
  sync (fdatasync or fsync), and the write waits for it, so the fsync only checks that nothing
  was sent since.
- ``barrier``, per inode: the kernel's writeback may come through any handle of the file. An
  ``fdatasync`` of such a file reaches the mount as the page's WRITE, the kernel's mtime (answered
  in C: native/hm_setattr.c) and the FSYNC; the peer's round trip now starts at the WRITE instead
  of the FSYNC. Only after an fdatasync: a full fsync sends the kernel's mtime too, so its FSYNC
  goes anyway. The fsync then waits for the page's acknowledgement (Transaction.follow).
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # for the hints only
    from hamirror.link.client import Ticket

FILES = 256   # inodes whose pattern is kept (the files a database commits to are few)
MAX_WRITES = 16   # the most writes per commit a pattern is kept for (a commit is a few pages)


class CommitPattern:
    """Per key (a handle, or with ``per_inode`` an inode): [writes since its last fsync, the flag
    of the expected commit (1: fdatasync, 0: fsync) or None, the writes its last commit made].
    ``early``: the last commit's page sent as WRITE_FSYNC, (key, path, flag, ticket, data stamp
    after it)."""

    def __init__(self, per_inode: bool = False) -> None:
        self.per_inode = per_inode
        self._keys: collections.OrderedDict[int, list] = collections.OrderedDict()
        self.early: tuple | None = None

    def expects(self, key: int) -> int | None:
        """The flag of the WRITE_FSYNC that the next write of ``key`` travels as (its commit's
        page), or None: a plain write."""
        entry = self._keys.get(key)
        return entry[1] if entry is not None and entry[0] + 1 == entry[2] else None

    def wrote(self, key: int) -> int | None:
        """A write of ``key``, counted: what :meth:`expects` said just before it."""
        entry = self._keys.get(key)
        if entry is None:
            return None
        entry[0] += 1
        return entry[1] if entry[0] == entry[2] else None

    def fsync(self, key: int, datasync: int) -> None:
        """An fsync of ``key``: the pattern noted (per inode: with the ordering lock held). One
        commit of one write sets it; a commit of more writes sets it only if the one before made as
        many (a file that commits varying numbers of writes would pay a needless sync too often)."""
        entry = self._keys.pop(key, None)
        writes, last = (entry[0], entry[2]) if entry is not None else (0, 0)
        flag = None
        if 1 <= writes <= MAX_WRITES and (writes == 1 or writes == last) and (datasync or not self.per_inode):
            flag = 1 if datasync else 0
        self._keys[key] = [0, flag, writes]
        if self.per_inode and len(self._keys) > FILES:
            self._keys.popitem(last=False)

    def sent(self, key: int, path: bytes, flag: int, ticket: Ticket, stamp: int) -> None:
        """The commit's page of ``key`` left as WRITE_FSYNC(``flag``); ``stamp``: the data stamp
        right after its write."""
        self.early = (key, path, flag, ticket, stamp)

    def released(self, fh: int) -> None:
        """A handle closed: per handle, its pattern and page go (per inode, the file's stay)."""
        if not self.per_inode:
            self._keys.pop(fh, None)
            if self.early is not None and self.early[0] == fh:
                self.early = None

    def covering(self, key: int, path: bytes, datasync: int, stamp: int, last: Ticket | None) -> Ticket | None:
        """(ordering lock held) The ticket of the page that already made this fsync's file durable
        on the peer, or None: send the FSYNC. The page must be this key's and path's, as strong
        as this fsync (an fdatasync's covers an fdatasync only) and not refused. Per handle (sync
        mode: the write waited for it): it is also the newest message sent at all (``last``) and
        acknowledged: anything sent since (another write, a rename...) or a link in trouble and
        the FSYNC goes; it stays for the next fsync. Per inode (barrier mode): no data changed
        anywhere since its write (``stamp``: the data stamp now); used once, the caller follows
        it (waits for it and everything sent since)."""
        early = self.early
        if self.per_inode:
            self.early = None
        if early is None or early[0] != key or early[1] != path or (early[2] and not datasync):
            return None
        ticket = early[3]
        if self.per_inode:
            return ticket if early[4] == stamp and ticket.error is None else None
        return ticket if last is ticket and ticket.done and ticket.error is None else None
