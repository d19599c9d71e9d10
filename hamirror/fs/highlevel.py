"""The mfusepy engine (libfuse's high-level API, ``HAMIRROR_FUSE_ENGINE=python``).

Imported by ``mount.serve`` only when that engine runs: the native engine's mount then loads
neither mfusepy nor its ctypes declarations of libfuse (docs/performance.md, "Idle memory of the
data path"), and neither does the spawner it is forked from.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from typing import Callable

import mfusepy

from hamirror.fs.operations import Interception

FUSE_CAP_WRITEBACK_CACHE = 1 << 16   # libfuse 3's fuse_common.h

_pinned = threading.local()   # set on a FUSE thread once its Python thread state is kept


def _keep_thread_state() -> None:
    """Keep this (libfuse) thread's Python thread state from one request to the next.

    ctypes runs each callback between ``PyGILState_Ensure`` and ``PyGILState_Release``; on a
    thread Python did not start, the release deletes the thread state, so every FUSE request paid
    for a new one (gettid, a 16 KiB mmap and munmap for its frame stack, the state's own setup).
    One more Ensure, never released, keeps it alive for the thread's life: libfuse's threads are
    not retired (idle threads are kept), so this is one state per thread, as for Python's own."""
    ctypes.pythonapi.PyGILState_Ensure()
    _pinned.kept = True


class PythonInterception(Interception, mfusepy.Operations):
    """``Interception`` as mfusepy wants it: an ``Operations`` (its ``init`` and the defaults of
    the methods it does not define), with mfusepy's caller context."""

    def __init__(self, root_fd: int, replicator, mode: str = "sync") -> None:
        super().__init__(root_fd, replicator, mode, context=mfusepy.fuse_get_context)


class _Fuse(mfusepy.FUSE):
    """mfusepy with the two libfuse 3 arguments it drops (rename flags, raw utimens values), a
    ``create`` without mfusepy's ``inspect.signature`` call on every new file, and one Python
    thread state per FUSE thread instead of one per request."""

    def _wrapper(self, func, *args, **kwargs):   # every libfuse callback goes through here
        if not getattr(_pinned, "kept", False):
            _keep_thread_state()
        return super()._wrapper(func, *args, **kwargs)

    def create(self, path: bytes, mode: int, fip) -> int:
        fi = fip.contents
        fi.fh = self.operations.create(os.fsdecode(path), mode, fi.flags)
        return 0

    def rename_fuse_3(self, old: bytes, new: bytes, flags: int) -> int:
        return self.operations.rename(os.fsdecode(old), os.fsdecode(new), flags)

    def utimens_fuse_3(self, path: bytes | None, buf, fip) -> int:
        times = None
        if buf:
            a, m = buf.contents.actime, buf.contents.modtime
            times = ((a.tv_sec, a.tv_nsec), (m.tv_sec, m.tv_nsec))
        if path is None:
            raise OSError(errno.ESTALE, "file was unlinked")
        return self.operations.utimens(os.fsdecode(path), times)


def serve(ops: PythonInterception, directory: str, *, writeback: bool, max_background: int,
          max_threads: int, mounted: Callable[[str], None]) -> None:
    """Mount ``directory`` on mfusepy and serve until unmounted."""

    def init_with_config(conn, config) -> None:
        if writeback and conn is not None:
            _writeback(conn, max_background)
        mounted("/")

    ops.init_with_config = init_with_config  # type: ignore[method-assign]
    # Idle threads are kept in every mode: each keeps its Python thread state (_keep_thread_state).
    threads = {"max_threads": max_threads, "max_idle_threads": max_threads}
    _Fuse(ops, directory, foreground=True, allow_other=True, default_permissions=True,
          use_ino=True, hard_remove=True, fsname=f"hamirror:{os.path.abspath(directory)}", subtype="hamirror",
          **threads)


def _writeback(conn, max_background: int) -> None:
    """Barrier mode: the kernel's writeback cache, and many writeback WRITEs in flight."""
    if not conn.capable & FUSE_CAP_WRITEBACK_CACHE:
        raise RuntimeError("barrier mode: this kernel offers no FUSE writeback cache")
    conn.want |= FUSE_CAP_WRITEBACK_CACHE
    conn.max_background = max_background
    conn.congestion_threshold = max_background * 3 // 4
