"""The times a change to a file's data gives it on both copies: chosen before the change, set on
our copy after it, and sent with it, so the peer sets the same (Interception)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

# Barrier mode: file times kept to 10 ms (as exFAT), not 1 ns (mount.py tells the kernel; the
# native loop floors the times it answers with). With the writeback cache the kernel keeps the
# times and sends them (a SETATTR, a round trip) at every fsync that follows a change of them; at
# 1 ns nearly every database commit changed them (0.68 SETATTR per pgbench transaction), at 10 ms a
# file's times change at most 100 times a second (0.07): pgbench 1.03-1.08x (docs/performance.md,
# "Barrier mode's file times to 10 ms"). Times set explicitly (utimensat, cp -a) are kept to 10 ms
# too, on both copies alike.
BARRIER_TIME_GRANULARITY_NS = 10_000_000


def floored(ns: int) -> int:
    """A time in ns floored to barrier mode's granularity."""
    return ns - ns % BARRIER_TIME_GRANULARITY_NS


def granular_times(fd: int, st: os.stat_result) -> tuple[int, int]:
    """Barrier mode: a new file's (atime, mtime) floored to the granularity, set on our copy, and
    returned for the peer's. Why: the kernel takes a new file's times as answered and stamps its
    first write with the current time truncated to 10 ms, which within the create's own 10 ms is
    earlier: the mtime went back by up to 10 ms. The native loop answers every regular file's times
    floored (hm_kernel_times, native/hm_fuse.c); a new file's copies are given the same."""
    atime, mtime = floored(st.st_atime_ns), floored(st.st_mtime_ns)
    os.utime(fd, ns=(atime, mtime))
    return atime, mtime


Stamp = tuple   # ((path, atime_ns, mtime_ns),): the times field of a message


def before(fh: int, bp: bytes, kernel_keeps_mtime: bool) -> Stamp:
    """The atime the file has, and the mtime now; or, when the kernel keeps the mtime (barrier
    mode's writeback cache), the mtime it has. There the kernel sends its own mtime (a SETATTR,
    deferred: native/hm_setattr.c), and with times to 10 ms
    (BARRIER_TIME_GRANULARITY_NS) none for a change within 10 ms of the last: a stamp of the
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
