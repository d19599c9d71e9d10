"""Applies validated operations to the secondary's copy of a replicated directory.

Every path is resolved *beneath* the directory one component at a time with ``O_NOFOLLOW``, and
the last component is acted on with a no-follow call, so a symlink on the secondary can never
lead a write outside the directory. The primary already resolved symlinks through the kernel, so
it never needs to send a path that crosses one.

The hot operations (create of a regular file, mkdir, unlink, write, truncate, fallocate, fsync,
times) go to the native core when it is built (``hamirror/link/native.py``, docs/native.md): the
same rules, with directory and file descriptors kept between messages. The others stay here.
"""

from __future__ import annotations

import collections
import errno
import os
import stat
from typing import AnyStr

from hamirror.link import native
from hamirror.link.protocol import PATH, SPECS, Message, Op
from hamirror.syscalls import (RENAME_EXCHANGE, allocate_ahead, allocation_ahead_helps, fallocate, renameat2,
                               start_writeback)

_DIR_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC
_WRITE_FLAGS = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
# Large writes (streaming, not a page rewritten again soon) start their writeback once their reply
# is sent: the replica holds little dirty data, and the primary's next fsync, which waits for the
# secondary's, does not have to wait for all of it to reach the disk then (DRBD writes through,
# too), while the write's own round trip does not wait for the call (docs/performance.md, "The
# receiver's writeback after the reply"). So does any write to a file the receiver last synced by an
# FSYNC (a database's log: a commit's fsync follows each write, and then finds its pages on their
# way; "A commit's critical path"), but not to one whose commits arrive whole as WRITE_FSYNC: there
# the commit's sync writes the page again, after waiting for the first I/O ("A small write before a
# commit message").
EARLY_WRITEBACK_MIN = 256 * 1024


def changed_paths(msg: Message) -> list[bytes]:
    """The paths an applied operation changed, which a power loss may take back: its path fields
    (both names of a rename or link) and the paths whose times it set. An FSYNC changes nothing."""
    if msg.op is _FSYNC:
        return []
    strs = msg.strs
    paths = [strs[i] for i in _PATH_FIELDS[msg.op]]
    if msg.times:
        paths += [t[0] for t in msg.times]
    return paths


def rename_pairs(src: AnyStr, dst: AnyStr, flags: int) -> tuple[tuple[AnyStr, AnyStr], ...]:
    """A rename's (source, destination) pairs, both ways for an exchange: what was beneath a
    renamed directory is beneath the other name now (the mount's activity log and the receiver's
    unsynced log carry it)."""
    return ((src, dst), (dst, src)) if flags & RENAME_EXCHANGE else ((src, dst),)


def moved_paths(msg: Message) -> tuple[tuple[bytes, bytes], ...]:
    """:func:`rename_pairs` of a RENAME message; () for any other."""
    return rename_pairs(msg.strs[0], msg.strs[1], msg.ints[0]) if msg.op is _RENAME else ()


# Computed once, as this runs per message (an Enum member looked up on its class costs ~0.14 us).
_FSYNC = Op.FSYNC
_RENAME = Op.RENAME
_PATH_FIELDS = {op: tuple(i for i, kind in enumerate(spec.strs) if kind == PATH) for op, spec in SPECS.items()}


def open_beneath(root_fd: int, dirs: list[bytes], make_mode: int | None = None) -> int:
    """The directory ``root/dirs[0]/dirs[1]/...``, opened one component at a time with
    ``O_NOFOLLOW`` (a symlink anywhere gives ELOOP); with ``make_mode``, missing components are
    created with that mode first. The caller closes the result unless it is ``root_fd``."""
    fd = root_fd
    try:
        for part in dirs:
            if make_mode is not None:
                try:
                    os.mkdir(part, make_mode, dir_fd=fd)
                except FileExistsError:
                    pass
            try:
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except NotADirectoryError:   # O_PATH opens a symlink itself: say which it was
                if stat.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode):
                    raise OSError(errno.ELOOP, "") from None
                raise
            if fd != root_fd:
                os.close(fd)
            fd = nxt
    except OSError as exc:
        if fd != root_fd:
            os.close(fd)
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "path crosses a symlink on the secondary") from None
        raise
    return fd


def open_data(dir_fd: int, name: bytes, flags: int, directory_ok: bool = False) -> int:
    """Open ``name`` in ``dir_fd`` for its data only if it is a regular file (or, with
    ``directory_ok``, a directory), never following a symlink. Opening anything else has effects
    of its own: a FIFO blocks the receiver until someone opens the other end, and a device node the
    peer created would reach the secondary's raw disk or memory, outside the directory. So the
    inode is pinned with O_PATH, checked, and only then reopened."""
    pinned = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        mode = os.fstat(pinned).st_mode
        if stat.S_ISLNK(mode):
            raise OSError(errno.ELOOP, "path is a symlink on the secondary")
        if not (stat.S_ISREG(mode) or (directory_ok and stat.S_ISDIR(mode))):
            raise OSError(errno.EINVAL, "not a regular file on the secondary")
        return os.open(f"/proc/self/fd/{pinned}", flags | os.O_CLOEXEC)
    finally:
        os.close(pinned)


class resolve_beneath:  # noqa: N801 - used as a context manager, reads as a verb
    """The directory holding a path's last component, opened beneath the root (a context)."""

    __slots__ = ("fd", "name", "_owned")

    def __init__(self, root_fd: int, path: bytes) -> None:
        if path == b".":
            self.fd, self.name, self._owned = root_fd, b".", False
            return
        *dirs, self.name = path.split(b"/")
        self.fd = open_beneath(root_fd, dirs)
        self._owned = self.fd != root_fd

    def __enter__(self) -> "resolve_beneath":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._owned:
            os.close(self.fd)

    @property
    def proc_path(self) -> bytes:
        """A /proc path for calls that have no *at variant (xattrs, chmod)."""
        return b"/proc/self/fd/%d/%s" % (self.fd, self.name)


class Applier:
    """Applies operations in order to one directory; keeps a few write descriptors open."""

    MAX_OPEN = 64

    def __init__(self, directory: str, use_native: bool = True) -> None:
        self.directory = directory
        self.root_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._allocate_ahead = allocation_ahead_helps(self.root_fd)   # ext4 only (syscalls.py says why)
        self._fds: collections.OrderedDict[bytes, int] = collections.OrderedDict()
        self._synced: set[bytes] = set()   # paths in _fds last synced through their descriptor by an FSYNC
        self._writeback: tuple[int, int, int] | None = None   # (fd in _fds, offset, length): see start_writeback
        self.native = native.core(self.root_fd) if use_native else None
        self._native_writeback = False   # the native core's last apply left a writeback to start
        self._handlers = {
            Op.CREATE: self._create, Op.MKDIR: self._mkdir, Op.SYMLINK: self._symlink,
            Op.LINK: self._link, Op.UNLINK: self._unlink, Op.RMDIR: self._rmdir,
            Op.RENAME: self._rename, Op.WRITE: self._write, Op.TRUNCATE: self._truncate,
            Op.FALLOCATE: self._fallocate, Op.CHMOD: self._chmod, Op.CHOWN: self._chown,
            Op.UTIMENS: lambda m: None, Op.SETXATTR: self._setxattr,
            Op.REMOVEXATTR: self._removexattr, Op.FSYNC: self._fsync, Op.WRITE_FSYNC: self._write,
        }

    def close(self) -> None:
        self.forget_descriptors()
        if self.native is not None:
            self.native.close()
        os.close(self.root_fd)

    def start_writeback(self) -> None:
        """Start the writeback that a large write, or a small one to a synced file, left for later.
        The receiver calls this once that write's reply is sent: the primary, which waits for the
        reply (sync mode), does not wait for this too, and the fsync that follows finds the pages
        on their way to the disk. Only a head start: the fsync still syncs, and reports errors."""
        if self.native is not None:
            if self._native_writeback:   # only when the last apply left one: a call releases the GIL
                self._native_writeback = False
                self.native.start_writeback()
            return
        pending, self._writeback = self._writeback, None
        if pending is not None:
            try:
                start_writeback(*pending)
            except OSError:
                pass

    def apply(self, msg: Message) -> None:
        """Apply one operation, then the primary's times; raise OSError if the secondary refuses."""
        native = self.native
        if native is not None and native.supported(msg.op, msg.ints):   # it starts a pending writeback itself
            self._native_writeback = native.apply(msg.op, msg.ints, msg.strs[0], msg.times, msg.data)
            return
        self.start_writeback()   # before a descriptor of the cache may close
        if native is not None:
            native.forget()   # names may change here, behind the core's descriptors
        self._handlers[msg.op](msg)
        for path, atime, mtime in msg.times:
            with resolve_beneath(self.root_fd, path) as parent:
                os.utime(parent.name, ns=(atime, mtime), dir_fd=parent.fd, follow_symlinks=False)
        if msg.op == Op.WRITE_FSYNC:   # a WRITE then an FSYNC: the sync covers the times too
            self._fsync(msg, msg.ints[1])

    # descriptor cache: writes to the same file reuse one descriptor -------------------------

    def _writable(self, path: bytes) -> int:
        fd = self._fds.get(path)
        if fd is not None:
            self._fds.move_to_end(path)
            return fd
        with resolve_beneath(self.root_fd, path) as parent:
            fd = open_data(parent.fd, parent.name, os.O_WRONLY)
        self._fds[path] = fd
        if len(self._fds) > self.MAX_OPEN:
            evicted, old = self._fds.popitem(last=False)
            self._synced.discard(evicted)
            os.close(old)
        return fd

    def forget_descriptors(self) -> None:
        """Names changed: a cached descriptor may no longer be what the path means."""
        if self.native is not None:
            self.native.forget()
        self._synced.clear()
        self._writeback = None
        while self._fds:
            os.close(self._fds.popitem()[1])

    # operations ----------------------------------------------------------------------------

    def _create(self, msg: Message) -> None:
        mode, uid, gid, rdev = msg.ints
        # A new inode under this name: a descriptor cached for the name (its old inode, removed
        # behind the receiver's back, as a verify's repair finds) must not take its writes.
        cached = self._fds.pop(msg.strs[0], None)
        self._synced.discard(msg.strs[0])
        if cached is not None:
            os.close(cached)
        with resolve_beneath(self.root_fd, msg.strs[0]) as parent:
            if stat.S_ISREG(mode):
                try:
                    fd = os.open(parent.name, os.O_CREAT | os.O_EXCL | _WRITE_FLAGS, 0o600, dir_fd=parent.fd)
                except FileExistsError:   # e.g. a resumed resync: truncate it, if it is a file
                    fd = open_data(parent.fd, parent.name, os.O_WRONLY | os.O_TRUNC)
                try:
                    os.fchown(fd, uid, gid)
                    os.fchmod(fd, stat.S_IMODE(mode))
                finally:
                    os.close(fd)
            else:
                # Owner-only until chown, then the exact mode: mknod alone is subject to our umask,
                # and chown would clear setuid/setgid bits set before it.
                os.mknod(parent.name, stat.S_IFMT(mode) | 0o600, rdev, dir_fd=parent.fd)
                os.chown(parent.name, uid, gid, dir_fd=parent.fd, follow_symlinks=False)
                _chmod_nofollow(parent, stat.S_IMODE(mode))

    def _mkdir(self, msg: Message) -> None:
        mode, uid, gid = msg.ints
        with resolve_beneath(self.root_fd, msg.strs[0]) as parent:
            os.mkdir(parent.name, 0o700, dir_fd=parent.fd)
            os.chown(parent.name, uid, gid, dir_fd=parent.fd, follow_symlinks=False)
            _chmod_nofollow(parent, stat.S_IMODE(mode))

    def _symlink(self, msg: Message) -> None:
        uid, gid = msg.ints
        path, target = msg.strs
        with resolve_beneath(self.root_fd, path) as parent:
            os.symlink(target, parent.name, dir_fd=parent.fd)
            os.chown(parent.name, uid, gid, dir_fd=parent.fd, follow_symlinks=False)

    def _link(self, msg: Message) -> None:
        with resolve_beneath(self.root_fd, msg.strs[0]) as src, resolve_beneath(self.root_fd, msg.strs[1]) as dst:
            os.link(src.name, dst.name, src_dir_fd=src.fd, dst_dir_fd=dst.fd, follow_symlinks=False)

    def _unlink(self, msg: Message) -> None:
        self.forget_descriptors()
        with resolve_beneath(self.root_fd, msg.strs[0]) as parent:
            os.unlink(parent.name, dir_fd=parent.fd)

    def _rmdir(self, msg: Message) -> None:
        self.forget_descriptors()
        with resolve_beneath(self.root_fd, msg.strs[0]) as parent:
            os.rmdir(parent.name, dir_fd=parent.fd)

    def _rename(self, msg: Message) -> None:
        self.forget_descriptors()
        with resolve_beneath(self.root_fd, msg.strs[0]) as src, resolve_beneath(self.root_fd, msg.strs[1]) as dst:
            renameat2(src.fd, src.name, dst.fd, dst.name, msg.ints[0])

    def _write(self, msg: Message) -> None:
        data = msg.data
        fd = self._writable(msg.strs[0])
        if self._allocate_ahead and len(data) >= EARLY_WRITEBACK_MIN:
            allocate_ahead(fd, msg.ints[0], len(data))   # as the mount's copy (syscalls.allocate_ahead)
        written = os.pwrite(fd, data, msg.ints[0])
        if written != len(data):
            raise OSError(errno.EIO, f"short write on the secondary ({written} of {len(data)} bytes)")
        if written and msg.op == Op.WRITE and (written >= EARLY_WRITEBACK_MIN or msg.strs[0] in self._synced):
            self._writeback = (fd, msg.ints[0], written)   # after the reply: start_writeback

    def _truncate(self, msg: Message) -> None:
        os.ftruncate(self._writable(msg.strs[0]), msg.ints[0])

    def _fallocate(self, msg: Message) -> None:
        mode, offset, length = msg.ints
        fallocate(self._writable(msg.strs[0]), mode, offset, length)

    def _chmod(self, msg: Message) -> None:
        with resolve_beneath(self.root_fd, msg.strs[0]) as parent:
            _chmod_nofollow(parent, stat.S_IMODE(msg.ints[0]))

    def _chown(self, msg: Message) -> None:
        uid, gid = msg.ints
        with resolve_beneath(self.root_fd, msg.strs[0]) as parent:
            os.chown(parent.name, uid, gid, dir_fd=parent.fd, follow_symlinks=False)

    def _setxattr(self, msg: Message) -> None:
        with resolve_beneath(self.root_fd, msg.strs[0]) as parent:
            os.setxattr(parent.proc_path, msg.strs[1], bytes(msg.data), msg.ints[0], follow_symlinks=False)

    def _removexattr(self, msg: Message) -> None:
        with resolve_beneath(self.root_fd, msg.strs[0]) as parent:
            os.removexattr(parent.proc_path, msg.strs[1], follow_symlinks=False)

    def _fsync(self, msg: Message, datasync: int | None = None) -> None:
        sync = os.fdatasync if (msg.ints[0] if datasync is None else datasync) else os.fsync
        path = msg.strs[0]
        cached = self._fds.get(path)
        if cached is not None:
            sync(cached)
            if msg.op == Op.FSYNC:
                self._synced.add(path)
            else:   # a commit message: the file's commits arrive whole (hm_apply.c, note_sync)
                self._synced.discard(path)
            return
        with resolve_beneath(self.root_fd, path) as parent:
            fd = open_data(parent.fd, parent.name, os.O_RDONLY, directory_ok=True)
            try:
                sync(fd)
            finally:
                os.close(fd)


def _chmod_nofollow(parent: resolve_beneath, mode: int) -> None:
    """chmod of the entry itself, never of what a symlink there points to (Linux has no lchmod):
    an O_PATH descriptor pins the inode, which is checked, then changed through /proc."""
    fd = os.open(parent.name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent.fd)
    try:
        if stat.S_ISLNK(os.fstat(fd).st_mode):
            raise OSError(errno.ELOOP, "chmod of a symlink on the secondary")
        os.chmod(f"/proc/self/fd/{fd}", mode)
    finally:
        os.close(fd)
