"""The interception layer: FUSE operations over the replicated directory itself.

The daemon opens the directory *before* mounting over it and reaches the real files through that
descriptor (``root_fd``), so the data is replicated in place. Reads are served locally. Every
mutating operation is applied locally and sent to the peer inside one
:meth:`Replicator.change` block, which keeps the peer's apply order equal to ours. Each
operation also sends the resulting atime/mtime of what it touched, so both copies match to the
nanosecond. The request loop (hamirror/fs/lowlevel.py, native/hm_fuse_py.c) calls these methods
for the requests that change something (it serves reads itself, in C) and turns any ``OSError``
raised here into the matching FUSE error. A ``path`` of None is a file unlinked while open.

Modes (see docs/architecture.md): in ``sync`` each call waits for the peer inside its block. In
``barrier`` the kernel's writeback cache is on (hamirror/fs/mount.py): ``write()`` reaches us at
writeback, many at once, and returns after the local apply; close (``flush``) and fsync are the
barriers. In ``async`` a close of a handle that changed something is the barrier.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import itertools
import os
import stat
from typing import Callable

from hamirror.fs import stamps
from hamirror.fs.commits import CommitPattern
from hamirror.journal.hotset import is_dir
from hamirror.link.apply import rename_pairs
from hamirror.link.client import SUBTREE, WHOLE, Change
from hamirror.link.protocol import CONFLICT_DIR, Op, is_reserved
from hamirror.mirror.replicator import Replicator
from hamirror.syscalls import (UTIME_NOW, UTIME_OMIT, allocate_ahead, allocation_ahead_helps, fallocate,
                               renameat2, utimensat)

# Writes at least this large go to the peer before the local pwrite, so the two overlap (and the
# native loop starts their local writeback after the reply: HM_EARLY_WRITEBACK_MIN, and their blocks
# are allocated before the pwrite: syscalls.allocate_ahead); below it the saving is smaller than the
# cost of a second message.
OVERLAP_MIN = 256 * 1024
# Flags we never pass to our own open(): the kernel already applied O_APPEND's offset, and
# O_DIRECT would demand aligned buffers from Python.
_STRIP_FLAGS = os.O_APPEND | os.O_DIRECT | os.O_CREAT | os.O_EXCL | os.O_NOCTTY | os.O_TRUNC
CAPABILITY = "security.capability"   # a file capability: any write removes it (kill_privileges)
_CONFLICT = os.fsdecode(CONFLICT_DIR)   # a reserved path starts with it (is_reserved decides)


def rel(path: str) -> str:
    """FUSE path ("/a/b") to a path under root_fd ("a/b"; "." for the root). hamirror's own
    conflict folder (``CONFLICT_DIR``, link/protocol.py) does not exist for the application."""
    relpath = path[1:] or "."
    if relpath.startswith(_CONFLICT) and is_reserved(os.fsencode(relpath)):
        raise OSError(errno.ENOENT, "reserved for hamirror's conflict folder")
    return relpath


def parent_of(relpath: str) -> str:
    return os.path.dirname(relpath) or "."


def _changes_data(method):
    """The method changes a file's data or size (or may have, if it fails): once it is done, no
    early fdatasync taken before covers it (Interception._local_synced)."""
    @functools.wraps(method)
    def changing(self: "Interception", *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        finally:
            self._changed_data()
    return changing


class Interception:
    """Passthrough to ``root_fd`` with replication of every change (see the module docstring)."""

    def __init__(self, root_fd: int, replicator: Replicator, mode: str = "sync", *,
                 context: Callable[[], tuple[int, int, int]]) -> None:
        """``context`` gives the caller's (uid, gid, pid) of the request being served."""
        self.root = root_fd
        self._allocate_ahead = allocation_ahead_helps(root_fd)   # ext4 only (syscalls.py says why)
        self.repl = replicator
        self.mode = mode
        self.context = context
        self._changed: set[int] = set()   # async: handles whose close is a barrier
        self._inodes: dict[int, int] = {}  # handle -> inode: data writes order per inode
        # Barrier mode runs with the kernel's writeback cache: the kernel writes a dirty page
        # back, then sends its cached mtime, so the write's message is held a moment for the
        # mtime to travel in it (LinkClient.submit).
        self._writeback = mode == "barrier"
        # Whether close() must reach flush() at all: read once by the native engine, which leaves
        # the kernel's FLUSH unanswered by Python when not (sync mode: each call already waited).
        self.flush_needed = mode != "sync"
        # Whether a close's release must reach Python: barrier mode keeps nothing per handle (nor
        # caches its inode), so the native engine closes it (native/hm_fuse_py.c, hm_py_release).
        self.release_needed = mode != "barrier"
        # Commits of one write (a database's WAL), per handle in sync mode, per inode in barrier
        # mode (hamirror/fs/commits.py); never noted in async mode.
        self._commits = CommitPattern(per_inode=self._writeback)
        # The local half of an fdatasync commit: its fdatasync runs while the peer's does (before
        # the write returns), and the fdatasync after it skips its own if no data changed since. A
        # unique number per data change (itertools.count's next() is atomic), set once it is made.
        self._stamps = itertools.count(1)
        self._stamp = 0
        self._local_synced: dict[int, tuple[int, OSError | None]] = {}   # fh -> (stamp before its fdatasync, its error)

    # helpers ---------------------------------------------------------------------------------

    def _lstat(self, relpath: str) -> os.stat_result:
        return os.stat(relpath, dir_fd=self.root, follow_symlinks=False)

    def _times(self, *relpaths: str) -> tuple:
        """The resulting (path, atime, mtime) of each inode touched, for the peer."""
        result = []
        for p in relpaths:
            st = self._lstat(p)
            result.append((os.fsencode(p), st.st_atime_ns, st.st_mtime_ns))
        return tuple(result)

    def _proc(self, relpath: str) -> str:
        """A path for calls without an *at variant (xattrs)."""
        return f"/proc/self/fd/{self.root}/{relpath}"

    def _owner(self, relpath: str) -> tuple[int, int, os.stat_result]:
        """Owner for a new inode: the caller, with the parent's group if the parent is setgid;
        and the parent's stat (taken after the inode was made: its times are what the peer gets)."""
        uid, gid, _ = self.context()
        parent = self._lstat(parent_of(relpath))
        if parent.st_mode & stat.S_ISGID:
            gid = -1
        return uid, gid, parent

    # open / close ----------------------------------------------------------------------------

    def open(self, path: str, flags: int) -> int:
        p = rel(path)
        own = flags & ~_STRIP_FLAGS
        if own & os.O_ACCMODE != os.O_RDONLY:
            own = (own & ~os.O_ACCMODE) | os.O_RDWR   # lets mmap write-back and reads share it
        if not flags & os.O_TRUNC:
            return os.open(p, own | os.O_CLOEXEC, dir_fd=self.root)
        with self.repl.change(((p, WHOLE),)) as tx:
            kept = self._times(p) if self._writeback else None   # the kernel's mtime: stamps.before
            try:
                fd = os.open(p, own | os.O_TRUNC | os.O_CLOEXEC, dir_fd=self.root)
            finally:
                self._changed_data()
            tx.send(Op.TRUNCATE, (0,), (os.fsencode(p),), stamps.put_back(fd, kept, lambda: self._times(p)))
        self._touched(fd)
        return fd

    def create(self, path: str, mode: int, flags: int) -> int:
        p = rel(path)
        own = (flags & ~_STRIP_FLAGS & ~os.O_ACCMODE) | os.O_RDWR | os.O_CLOEXEC
        with self.repl.change(((p, WHOLE),), new=(p,)) as tx:
            try:
                fd = os.open(p, own | os.O_CREAT | os.O_EXCL, stat.S_IMODE(mode), dir_fd=self.root)
            except FileExistsError:
                if flags & os.O_EXCL:
                    raise
                # Someone created it since the kernel's lookup: a plain open, nothing to send.
                return os.open(p, own, dir_fd=self.root)
            self._keep_mode(p, mode, fd)
            uid, gid, parent = self._owner(p)
            os.fchown(fd, uid, gid)
            st = os.fstat(fd)
            atime, mtime = stamps.granular_times(fd, st) if self._writeback else (st.st_atime_ns, st.st_mtime_ns)
            # The times of both from the stats already taken (the parent changes no more under
            # the whole ordering lock): two lstat per create fewer.
            bp = os.fsencode(p)
            tx.send(Op.CREATE, (st.st_mode, st.st_uid, st.st_gid, 0), (bp,),
                    ((bp, atime, mtime),
                     (os.fsencode(parent_of(p)), parent.st_atime_ns, parent.st_mtime_ns)))
        self._touched(fd)
        return fd

    def flush(self, path: str, fh: int) -> int:
        """close() as a barrier: in barrier mode always (the kernel wrote this inode's dirty pages
        back just before, maybe through another handle); in async mode when this handle changed
        something. No message: the newest operation's acknowledgement covers all before it.
        Never called when ``flush_needed`` is false."""
        if self.mode == "barrier" or fh in self._changed:
            self._changed.discard(fh)
            self.repl.settle()
        return 0

    def release(self, path: str, fh: int) -> int:
        self._changed.discard(fh)
        self._inodes.pop(fh, None)
        self._commits.released(fh)
        self._local_synced.pop(fh, None)
        os.close(fh)
        return 0

    def _changed_data(self) -> None:
        self._stamp = next(self._stamps)

    def _inode(self, fh: int) -> int:
        """The key under which writes through ``fh`` share the ordering lock (see
        hamirror/mirror/ordering.py): the inode, so two names of one file keep one order."""
        ino = self._inodes.get(fh)
        if ino is None:
            ino = os.fstat(fh).st_ino
            if self.release_needed:
                self._inodes[fh] = ino
        return ino

    def _touched(self, fh: int | None) -> None:
        """Async mode: the close of ``fh`` must wait for the peer."""
        if self.mode == "async" and fh is not None:
            self._changed.add(fh)

    # data ------------------------------------------------------------------------------------

    def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
        if path is None:   # unlinked while open: no name left in either tree, nothing to send
            try:
                return os.pwrite(fh, data, offset)
            finally:
                self._changed_data()
        p = rel(path)
        bp = os.fsencode(p)
        commit = self._commits.wrote(fh) if self.mode == "sync" else None   # per handle
        if len(data) < OVERLAP_MIN:
            return self._write_then_send(p, bp, data, offset, fh, commit)
        failed = None
        ino = self._inode(fh)   # barrier mode keeps no inode per handle: one fstat, not two
        with self.repl.change(((p, offset, len(data)),), ino) as tx:
            # The peer starts on the bytes while we write them: the two writes overlap. If ours
            # then fails or is short, the peer is put back to what we have before we answer.
            # One message, in every mode: pieces that let the peer start sooner cost more CPU
            # than they saved (docs/performance.md, "Sync mode's large writes in one message").
            stamp = stamps.before(fh, bp, self._writeback)
            tx.send(Op.WRITE, (offset,), (bp,), stamp, data=data)
            if self._allocate_ahead and not fcntl.fcntl(fh, fcntl.F_GETFL) & os.O_DSYNC:
                allocate_ahead(fh, offset, len(data))   # cheaper for ext4 than block by block
            try:
                written = os.pwrite(fh, data, offset)
            except OSError as exc:
                failed, written = exc, 0   # raised after the block, so the repair is waited for
            self._changed_data()
            if written != len(data):
                self._repair_range(tx, fh, bp, offset, len(data), written)
            if not (failed is None and written == len(data) and stamps.set_on(fh, stamp)):
                # A failed write may have stamped mtime (ENOSPC): the peer gets it too.
                tx.send(Op.UTIMENS, (), (bp,), stamps.of(fh, bp), hold=self._writeback)
            if self._writeback:
                self._commits.wrote(ino)
        self._touched(fh)
        if failed is not None:
            raise failed
        return written   # the native loop starts its writeback after the reply (hm_py_write)

    def _write_then_send(self, p: str, bp: bytes, data: bytes, offset: int, fh: int,
                         commit: int | None = None) -> int:
        """Small writes: nothing to overlap, so one message carrying the bytes and the times. A
        commit's page (hamirror/fs/commits.py; ``commit``: its flag, sync mode) goes as
        WRITE_FSYNC, so the fsync that follows sends nothing."""
        failed = None
        ino = self._inode(fh)
        commits = self._commits
        with self.repl.change(((p, offset, len(data)),), ino) as tx:
            kept = stamps.before(fh, bp, True) if self._writeback else None   # the kernel's mtime
            try:
                written = os.pwrite(fh, data, offset)
            except OSError as exc:
                failed, written = exc, 0
            self._changed_data()
            # A failed write may have stamped mtime (ENOSPC): the peer gets it too.
            times = stamps.put_back(fh, kept, lambda: stamps.of(fh, bp))
            if self._writeback:   # per inode, under its ordering lock: a whole page only
                commit = commits.expects(ino) if written == len(data) else None
            if written and commit is not None:
                tx.send(Op.WRITE_FSYNC, (offset, commit), (bp,), times,
                        data if written == len(data) else data[:written])
                if tx.ticket is not None:
                    commits.sent(ino if self._writeback else fh, bp, commit, tx.ticket, self._stamp)
                    if commit and self.mode == "sync":   # fdatasync commits: see _local_synced
                        tx.defer_wait()
            elif written:
                tx.send(Op.WRITE, (offset,), (bp,), times, data if written == len(data) else data[:written],
                        hold=self._writeback)
            else:
                tx.send(Op.UTIMENS, (), (bp,), times, hold=self._writeback)
            if self._writeback:
                commits.wrote(ino)
        if tx.deferred:   # the commit's local fdatasync, while the peer's runs
            stamp, error = self._stamp, None   # this write's own: a later change makes another
            try:
                os.fdatasync(fh)
            except OSError as exc:
                error = exc   # the fsync reports it: this file description's error is ours now
            self._local_synced[fh] = (stamp, error)
            tx.wait()
        self._touched(fh)
        if failed is not None:
            raise failed
        return written

    @staticmethod
    def _repair_range(tx, fh: int, bp: bytes, offset: int, length: int, written: int) -> None:
        """Make the peer's [offset+written, offset+length) equal to our file again."""
        size = os.fstat(fh).st_size
        start, end = offset + written, min(offset + length, size)
        if start < end:
            tx.send(Op.WRITE, (start,), (bp,), data=os.pread(fh, end - start, start))
        if offset + length > size:
            tx.send(Op.TRUNCATE, (size,), (bp,))

    @_changes_data
    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        if path is None:
            os.ftruncate(fh, length)
            return 0
        p = rel(path)
        with self.repl.change(((p, WHOLE),)) as tx:
            if fh is not None:
                os.ftruncate(fh, length)
            else:
                os.truncate(self._proc(p), length)
            tx.send(Op.TRUNCATE, (length,), (os.fsencode(p),), self._times(p))
        self._touched(fh)
        return 0

    @_changes_data
    def fallocate(self, path: str | None, mode: int, offset: int, size: int, fh: int) -> int:
        if path is None:
            fallocate(fh, mode, offset, size)
            return 0
        p = rel(path)
        with self.repl.change(((p, WHOLE),)) as tx:
            kept = stamps.before(fh, os.fsencode(p), True) if self._writeback else None
            fallocate(fh, mode, offset, size)
            tx.send(Op.FALLOCATE, (mode, offset, size), (os.fsencode(p),),
                    stamps.put_back(fh, kept, lambda: self._times(p)))
        self._touched(fh)
        return 0

    def fsync(self, path: str | None, datasync: int, fh: int) -> int:
        if self.mode == "sync":   # per handle (fsyncdir's own descriptor is none)
            self._commits.fsync(fh, datasync)
        return self._fsync(path, datasync, fh)

    def _fsync(self, path: str | None, datasync: int, fh: int) -> int:
        if path is None:
            early = self._local_synced.pop(fh, None)   # unlinked since its commit's write: sync anyway
            (os.fdatasync if datasync else os.fsync)(fh)
            if early is not None and early[1] is not None:
                raise early[1]
            return 0
        p = rel(path)
        bp = os.fsencode(p)
        ino = self._inodes.get(fh) or os.fstat(fh).st_ino   # fsyncdir: not a handle
        with self.repl.change((), ino) as tx:
            if self._writeback:
                self._commits.fsync(ino, datasync)   # per inode, under its ordering lock
            client = self.repl.client
            early = self._commits.covering(ino if self._writeback else fh, bp, datasync, self._stamp,
                                           client.last_ticket if client is not None else None)
            if early is None:
                tx.hold_if_pending(p)
                tx.send(Op.FSYNC, (1 if datasync else 0,), (bp,), barrier=True)
            elif self._writeback:
                tx.follow(early)   # its page is not waited for yet: wait for it and what came since
            tx.defer_wait()
        # The peer fsyncs while we do; both must be durable before we answer.
        # A commit's early fdatasync (_write_then_send) stands for an fdatasync if no data or size
        # changed since (a full fsync would cover metadata too: it syncs); its error is this one's.
        early = self._local_synced.pop(fh, None)
        error = early[1] if early is not None else None
        if error is None and (early is None or early[0] != self._stamp or not datasync):
            (os.fdatasync if datasync else os.fsync)(fh)
        tx.wait()
        if error is not None:
            raise error
        return 0

    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        fd = os.open(rel(path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.root)
        try:
            return self._fsync(path, datasync, fd)
        finally:
            os.close(fd)

    # namespace -------------------------------------------------------------------------------

    def _keep_mode(self, p: str, mode: int, fd: int | None = None) -> None:
        """Give a new inode the permission bits its creator asked for. The kernel applied the
        creator's umask already; this daemon's own umask must not apply a second time (setting
        it to 0 process-wide instead made the daemon's state files world-writable). Only the
        0777 bits, the only ones a umask clears: a setgid bit the parent passed on stays."""
        st = os.fstat(fd) if fd is not None else self._lstat(p)
        wanted = (stat.S_IMODE(st.st_mode) & ~0o777) | (mode & 0o777)
        if wanted != stat.S_IMODE(st.st_mode):
            if fd is not None:
                os.fchmod(fd, wanted)
            else:
                os.chmod(p, wanted, dir_fd=self.root)

    def _new_inode(self, p: str, make, message, mode: int | None = None) -> int:
        """Create ``p`` with ``make()``, give it to the caller, and send ``message(stat)``
        (op, ints, strs) with the resulting owner and mode, and the new entry's and parent's times."""
        with self.repl.change(((p,),), new=(p,)) as tx:
            make()
            if mode is not None:
                self._keep_mode(p, mode)
            uid, gid, _ = self._owner(p)
            os.chown(p, uid, gid, dir_fd=self.root, follow_symlinks=False)
            op, ints, strs = message(self._lstat(p))
            tx.send(op, ints, strs, self._times(p, parent_of(p)))
        return 0

    def mknod(self, path: str, mode: int, dev: int) -> int:
        p = rel(path)
        return self._new_inode(p, lambda: os.mknod(p, mode, dev, dir_fd=self.root),
                               lambda st: (Op.CREATE, (st.st_mode, st.st_uid, st.st_gid, dev), (os.fsencode(p),)),
                               mode)

    def mkdir(self, path: str, mode: int) -> int:
        p = rel(path)
        return self._new_inode(p, lambda: os.mkdir(p, mode, dir_fd=self.root),
                               lambda st: (Op.MKDIR, (st.st_mode, st.st_uid, st.st_gid), (os.fsencode(p),)), mode)

    def symlink(self, path: str, content: str) -> int:
        """Create the symbolic link ``path`` whose content is ``content``."""
        p = rel(path)
        return self._new_inode(p, lambda: os.symlink(content, p, dir_fd=self.root),
                               lambda st: (Op.SYMLINK, (st.st_uid, st.st_gid),
                                           (os.fsencode(p), os.fsencode(content))))

    def link(self, path: str, existing: str) -> int:
        """Create the hard link ``path`` to the file named ``existing``."""
        new, old = rel(path), rel(existing)
        with self.repl.change(((new, WHOLE), (old,)), new=(new,)) as tx:
            os.link(old, new, src_dir_fd=self.root, dst_dir_fd=self.root, follow_symlinks=False)
            tx.send(Op.LINK, (), (os.fsencode(old), os.fsencode(new)), self._times(parent_of(new)))
        return 0

    def unlink(self, path: str) -> int:
        p = rel(path)
        with self.repl.change(((p,),)) as tx:
            os.unlink(p, dir_fd=self.root)
            tx.send(Op.UNLINK, (), (os.fsencode(p),), self._times(parent_of(p)))
        return 0

    def rmdir(self, path: str) -> int:
        p = rel(path)
        with self.repl.change(((p,),)) as tx:
            os.rmdir(p, dir_fd=self.root)
            tx.send(Op.RMDIR, (), (os.fsencode(p),), self._times(parent_of(p)))
        return 0

    def rename(self, old: str, new: str, flags: int = 0) -> int:
        src, dst = rel(old), rel(new)
        # What is hot beneath a renamed directory is carried to its new name (an exchange: both ways).
        moved = rename_pairs(src, dst, flags)
        with self.repl.change(_renamed(self.root, src, moved), new=(dst,), moved=moved) as tx:
            renameat2(self.root, os.fsencode(src), self.root, os.fsencode(dst), flags)
            parents = dict.fromkeys((parent_of(src), parent_of(dst)))
            tx.send(Op.RENAME, (flags,), (os.fsencode(src), os.fsencode(dst)), self._times(*parents))
        return 0

    # metadata --------------------------------------------------------------------------------

    def chmod(self, path: str, mode: int) -> int:
        p = rel(path)
        with self.repl.change(((p,),)) as tx:
            os.chmod(p, stat.S_IMODE(mode), dir_fd=self.root)
            tx.send(Op.CHMOD, (stat.S_IMODE(mode),), (os.fsencode(p),))
        return 0

    def kill_privileges(self, path: str | None, fh: int | None, suidgid: int) -> int:
        """What the VFS clears before a write or a truncate, when the kernel leaves it to us
        (FUSE_HANDLE_KILLPRIV_V2, native/hm_killpriv.h; the native engine calls this): set-user-ID,
        and set-group-ID when the group may execute, if ``suidgid`` (the caller lacks
        CAP_FSETID); a file capability whoever writes. Changes like a chmod and a removexattr:
        sent to the peer, so both copies keep one mode. A file unlinked while open: ours only."""
        p = rel(path) if path is not None else None
        if self._privileges(p, fh, suidgid) == (None, False):
            return 0   # nothing to clear: no change block (nothing to order, record or send)
        if p is None:
            self._kill(None, fh, suidgid)
            return 0
        with self.repl.change(((p,),)) as tx:
            mode, capability = self._kill(p, fh, suidgid)
            if mode is not None:
                tx.send(Op.CHMOD, (mode,), (os.fsencode(p),))
            if capability:
                tx.send(Op.REMOVEXATTR, (), (os.fsencode(p), os.fsencode(CAPABILITY)))
        return 0

    def _privileges(self, p: str | None, fh: int | None, suidgid: int) -> tuple[int | None, bool]:
        """(the mode without what kill_privileges clears, or None if that is the mode; whether
        the file has a capability)."""
        st = os.fstat(fh) if fh is not None else self._lstat(p)
        if not stat.S_ISREG(st.st_mode):
            return None, False   # the VFS kills nothing on anything else (nor follows a symlink)
        mode = kept = stat.S_IMODE(st.st_mode)
        if suidgid:
            kept &= ~(stat.S_ISUID | (stat.S_ISGID if mode & stat.S_IXGRP else 0))
        try:
            if fh is not None:
                os.getxattr(fh, CAPABILITY)
            else:
                os.getxattr(self._proc(p), CAPABILITY, follow_symlinks=False)
            capability = True
        except OSError as exc:
            if exc.errno not in (errno.ENODATA, errno.ENOTSUP):
                raise
            capability = False
        return (kept if kept != mode else None), capability

    def _kill(self, p: str | None, fh: int | None, suidgid: int) -> tuple[int | None, bool]:
        """Clear what _privileges finds, through ``fh`` or ``p``: what it found."""
        mode, capability = self._privileges(p, fh, suidgid)
        if mode is not None:
            if fh is not None:
                os.fchmod(fh, mode)
            else:
                os.chmod(p, mode, dir_fd=self.root)
        try:
            if capability and fh is not None:
                os.removexattr(fh, CAPABILITY)
            elif capability:
                os.removexattr(self._proc(p), CAPABILITY, follow_symlinks=False)
        except OSError as exc:   # another request's removal since (barrier: writebacks in parallel)
            if exc.errno != errno.ENODATA:
                raise
            capability = False
        return mode, capability

    def chown(self, path: str, uid: int, gid: int) -> int:
        p = rel(path)
        with self.repl.change(((p,),)) as tx:
            os.chown(p, uid, gid, dir_fd=self.root, follow_symlinks=False)
            tx.send(Op.CHOWN, (uid, gid), (os.fsencode(p),))
        return 0

    def utimens(self, path: str, times: tuple | None = None) -> int:
        p = rel(path)
        with self.repl.change(((p,),)) as tx:
            utimensat(self.root, os.fsencode(p), times)
            tx.send(Op.UTIMENS, (), (os.fsencode(p),), self._times(p), hold=self._writeback)
        return 0

    def kernel_mtime(self, path: str, fh: int | None, sec: int, nsec: int) -> int:
        """Barrier mode: the kernel's mtime that the native engine kept from its SETATTR until this
        close, full fsync, setattr or release (native/hm_setattr.c). Usually sent in the page's
        WRITE, still held for it (LinkClient.retime_held)."""
        if fh is None:
            return self.utimens(path, ((0, UTIME_OMIT), (sec, nsec)))
        p = rel(path)
        bp = os.fsencode(p)

        def retime() -> tuple:   # os.utime: a third of utimensat's cost through ctypes; atime as it is
            os.utime(fh, ns=(os.fstat(fh).st_atime_ns, sec * 1_000_000_000 + nsec))
            st = os.fstat(fh)
            return ((bp, st.st_atime_ns, st.st_mtime_ns),)

        with self.repl.change(((p,),), self._inode(fh)) as tx:
            if not tx.retime(bp, retime):
                tx.send(Op.UTIMENS, (), (bp,), retime(), hold=self._writeback)
        return 0

    def setxattr(self, path: str, name: str, value: bytes, options: int, position: int = 0) -> int:
        p = rel(path)
        with self.repl.change(((p,),)) as tx:
            os.setxattr(self._proc(p), name, value, options, follow_symlinks=False)
            tx.send(Op.SETXATTR, (options,), (os.fsencode(p), os.fsencode(name)), data=value)
        return 0

    def removexattr(self, path: str, name: str) -> int:
        p = rel(path)
        with self.repl.change(((p,),)) as tx:
            os.removexattr(self._proc(p), name, follow_symlinks=False)
            tx.send(Op.REMOVEXATTR, (), (os.fsencode(p), os.fsencode(name)))
        return 0


def _renamed(root: int, src: str, moved: tuple[tuple[str, str], ...]) -> tuple[Change, ...]:
    """What a rename changes, for the journal: the source's name, and each destination's content;
    a directory's as a subtree (docs/journal.md, "Renames while the peer is away": a listing and
    sizes cannot tell which tree a name holds). Looked at before the call: the kernel holds the
    parents' locks, so nothing else renames the sources meanwhile."""
    marks = {dst: SUBTREE if is_dir(root, source) else WHOLE for source, dst in moved}
    return ((src,),) * (src not in marks) + tuple((dst, mark) for dst, mark in marks.items())


__all__ = ["Interception", "UTIME_NOW", "UTIME_OMIT"]
