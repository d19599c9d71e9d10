"""Linux calls the standard library lacks: renameat2 (flags), fallocate (modes, and the blocks of a
large write allocated ahead of it), utimensat (OMIT/NOW), syncfs (one filesystem), sync_file_range
(start writeback of a range), and glibc's mallopt."""

from __future__ import annotations

import ctypes
import os

_libc = ctypes.CDLL(None, use_errno=True)
_libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
_libc.syncfs.argtypes = [ctypes.c_int]
_libc.sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
_libc.fstatfs.argtypes = [ctypes.c_int, ctypes.c_void_p]
EXT4_SUPER_MAGIC = 0xEF53     # linux/magic.h
_STATFS_SIZE = 256            # struct statfs is 120 bytes on 64-bit Linux; f_type comes first
SYNC_FILE_RANGE_WRITE = 2
FALLOC_FL_KEEP_SIZE = 1
RENAME_EXCHANGE = 2   # renameat2: swap the two names
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8   # glibc's malloc.h

AT_SYMLINK_NOFOLLOW = 0x100
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_libc.utimensat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(_Timespec), ctypes.c_int]


def _check(result: int) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def renameat2(src_dir: int, src: bytes, dst_dir: int, dst: bytes, flags: int) -> None:
    _check(_libc.renameat2(src_dir, src, dst_dir, dst, flags))


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    _check(_libc.fallocate(fd, mode, offset, length))


def utimensat(dir_fd: int, path: bytes, times: tuple[tuple[int, int], tuple[int, int]] | None) -> None:
    """Set (atime, mtime) as (sec, nsec) pairs; nsec may be UTIME_NOW or UTIME_OMIT; never follows."""
    arg = None
    if times is not None:
        arg = (_Timespec * 2)(_Timespec(*times[0]), _Timespec(*times[1]))
    _check(_libc.utimensat(dir_fd, path, arg, AT_SYMLINK_NOFOLLOW))


def syncfs(fd: int) -> None:
    """Write back everything of the filesystem holding ``fd`` to disk (Python 3.11 has no os.syncfs)."""
    _check(_libc.syncfs(fd))


def allocation_ahead_helps(fd: int) -> bool:
    """Whether large writes to the file system holding ``fd`` should be allocated ahead
    (:func:`allocate_ahead`): only on ext4, whose delayed allocation it saves. Elsewhere it costs:
    XFS marks a file that ever saw an fallocate as preallocated and from then on never trims the
    blocks it allocates speculatively past the end of a growing file (an appended log keeps
    megabytes it does not use, on both copies); btrfs waits for writeback under way in the range.
    False when the file system cannot be told."""
    buf = ctypes.create_string_buffer(_STATFS_SIZE)
    if _libc.fstatfs(fd, buf) != 0:
        return False
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF == EXT4_SUPER_MAGIC


def allocate_ahead(fd: int, offset: int, length: int) -> None:
    """Allocate the blocks of ``[offset, offset+length)`` before a large write fills them, the size
    unchanged (fallocate with FALLOC_FL_KEEP_SIZE). Why: ext4's delayed allocation reserves and
    records a buffered write's blocks one 4 KiB block at a time, about 40 % of a 1 MiB pwrite's CPU
    here; allocated as one extent first, the write only fills them (docs/performance.md, "Large
    writes allocate their blocks first"). A hint, so no error is raised: a file system without
    fallocate, or a disk too full for the range, leaves the write itself to succeed or fail. Only
    where :func:`allocation_ahead_helps`, and never on a descriptor open ``O_DSYNC`` or ``O_SYNC``
    (there ext4 commits its journal for the fallocate, then again for the write)."""
    _libc.fallocate(fd, FALLOC_FL_KEEP_SIZE, offset, length)


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing ``[offset, offset+length)`` back to disk without waiting for it
    (sync_file_range with SYNC_FILE_RANGE_WRITE): a later fsync then has less left to do."""
    _check(_libc.sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE))


def malloc_trim() -> bool:
    """Give the heap's free memory back to the kernel (glibc's malloc_trim(0): the free whole pages
    of every arena and the main heap's free top; a thread arena's free top stays). Whether it
    released anything; False where the C library has no malloc_trim."""
    try:
        return bool(_libc.malloc_trim(0))
    except AttributeError:
        return False


def keep_message_buffers(mapped_above: int = 4 << 20, kept_free: int = 64 << 20, arenas: int = 1) -> None:
    """For the data-path daemons, which allocate and free a buffer of up to 1 MiB per message (FUSE
    copy, ZeroMQ, CURVE): serve those from the heap and keep up to ``kept_free`` bytes of freed
    memory, instead of glibc's default of mapping (and the kernel zeroing) fresh pages again and
    again. Measured in docs/performance.md ("Replication modes"). Best effort: other C libraries
    have no mallopt.

    ``arenas``: every thread allocates from at most this many heaps. glibc's malloc_trim gives
    back the free top of the main heap only, so the freed buffers at the top of each FUSE thread's
    own arena stayed resident once idle (docs/performance.md, "Idle memory of the data path")."""
    try:
        _libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        _libc.mallopt(M_MMAP_THRESHOLD, mapped_above)
        _libc.mallopt(M_TRIM_THRESHOLD, kept_free)
        if arenas:
            _libc.mallopt(M_ARENA_MAX, arenas)
    except AttributeError:
        pass
