"""Barrier mode's commits: a file that commits one page at a time (a database's WAL) sends that
page as WRITE_FSYNC the moment the kernel writes it back, instead of holding it for the fsync.

Why: in barrier mode an ``fdatasync`` of such a file reaches the mount as the page's WRITE (the
kernel's writeback), the kernel's mtime (answered in C: native/hm_setattr.c) and the FSYNC. The
peer's round trip used to start at the FSYNC, which turned the held WRITE into a WRITE_FSYNC; for
a file whose last fsync followed exactly one write, it now starts at the WRITE, and the FSYNC that
follows sends nothing: the peer made the page durable before it acknowledged (sync mode does the
same, per handle: Interception._commits). The kernel's writeback may come through any handle of
the file, so the pattern is kept per inode. A wrong guess costs the peer one needless fdatasync.
"""

from __future__ import annotations

import collections

FILES = 256   # inodes whose pattern is kept (the files a database commits to are few)


class BarrierCommits:
    """Per inode: writes since its last fsync, and whether that fsync was an fdatasync that
    followed exactly one write. ``early``: the last WRITE_FSYNC sent ahead of its fsync."""

    def __init__(self) -> None:
        self._files: collections.OrderedDict[int, list] = collections.OrderedDict()
        self.early: tuple | None = None   # (inode, path, ticket, data stamp after its write)

    def expects_commit(self, ino: int) -> bool:
        """The next write of ``ino`` is its commit's page: send it as WRITE_FSYNC."""
        entry = self._files.get(ino)
        return entry is not None and entry[1] and entry[0] == 0

    def wrote(self, ino: int) -> None:
        entry = self._files.get(ino)
        if entry is not None:
            entry[0] += 1

    def fsync(self, ino: int, path: bytes, datasync: int, stamp: int) -> object | None:
        """(ordering lock held) An fsync of ``ino``: the pattern noted, and the ticket of its page
        if that went as WRITE_FSYNC ahead of it, no data changed anywhere since (``stamp``: the data
        stamp now), it is an fdatasync and the page was not refused; else None (send the FSYNC)."""
        entry = self._files.pop(ino, None)
        self._files[ino] = [0, bool(datasync) and entry is not None and entry[0] == 1]
        if len(self._files) > FILES:
            self._files.popitem(last=False)
        early, self.early = self.early, None
        if early is None or not datasync or early[0] != ino or early[1] != path or early[3] != stamp:
            return None
        ticket = early[2]
        return ticket if ticket.error is None else None
