"""The times a change to a file's data gives it on both copies: chosen before the change, set on
our copy after it, and sent with it, so the peer sets the same (Interception)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

Stamp = tuple   # ((path, atime_ns, mtime_ns),): the times field of a message


def before(fh: int, bp: bytes, kernel_keeps_mtime: bool) -> Stamp:
    """The atime the file has, and the mtime now; or, when the kernel keeps the mtime (barrier
    mode's writeback cache), the mtime it has. There the kernel sends its own mtime (a SETATTR,
    deferred: native/hm_setattr.c), and with times to 10 ms (mount.py,
    BARRIER_TIME_GRANULARITY_NS) none for a change within 10 ms of the last: a stamp of the
    change's own would leave both copies ahead of what the application sees.

    Why a large write's times travel in its WRITE, set once the bytes are written, and not in a
    UTIMENS after it: that was a round trip of its own in sync mode (docs/performance.md, "A large
    write's times in its message"). Changes to one inode are ordered (the change block's key), so
    its last stamp is the same on both copies."""
    st = os.fstat(fh)
    return ((bp, st.st_atime_ns, st.st_mtime_ns if kernel_keeps_mtime else time.time_ns()),)


def set_on(fh: int, stamp: Stamp) -> bool:
    """Set ``stamp`` on our copy; False if that failed (the caller then sends the times our copy
    has)."""
    _, atime, mtime = stamp[0]
    try:
        os.utime(fh, ns=(atime, mtime))
    except OSError:
        return False
    return True


def put_back(fh: int, kept: Stamp | None, current: Callable[[], Stamp]) -> Stamp:
    """The times to send after a change: ``kept`` (barrier mode: the file's times before the
    change, :func:`before`) once set on our copy again; else, without it or if setting it failed,
    ``current()``, the times our copy has now, so that the peer gets what we have."""
    return kept if kept is not None and set_on(fh, kept) else current()


def of(fh: int, bp: bytes) -> Stamp:
    """The times our copy of ``bp`` (open as ``fh``) has now."""
    st = os.fstat(fh)
    return ((bp, st.st_atime_ns, st.st_mtime_ns),)
