"""When the primary's own copy of a large write reaches its disk.

The mount starts the writeback of every write of at least 256 KiB once its reply is sent (the
native loop, hm_py_write), as the receiver does with the secondary's copy (tests/test_apply_writeback.py): a file written in large
pieces then fsynced has most of its bytes on disk by the fsync, instead of all of them waiting for
it (1 GiB + fsync: interception 672-759 -> 964-1,144 MB/s, docs/performance.md, "Large writes
start their writeback on the primary too"). Small writes stay in the page cache until their fsync.

Seen from outside: the backing file's dirty pages (cachestat(2), Linux 6.5+), read through the
mount process's descriptor of the directory under the mount point."""

from __future__ import annotations

import ctypes
import errno
import os

import psutil
import pytest

from tests.conftest import needs_root
from tests.mirror_fixtures import MirrorPair
from tests.test_mirror_tools import assert_same

pytestmark = needs_root

MIB = 1 << 20
PAGE = os.sysconf("SC_PAGE_SIZE")
SYS_CACHESTAT = 451   # x86_64 and the generic table alike


class _Range(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _Stat(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in
                ("nr_cache", "nr_dirty", "nr_writeback", "nr_evicted", "nr_recently_evicted")]


def dirty_pages(fd: int) -> int:
    """Pages of the file behind ``fd`` that are dirty in the page cache (not yet sent to disk)."""
    libc = ctypes.CDLL(None, use_errno=True)
    found = _Stat()
    if libc.syscall(SYS_CACHESTAT, fd, ctypes.byref(_Range(0, 0)), ctypes.byref(found), 0) != 0:
        code = ctypes.get_errno()
        if code == errno.ENOSYS:
            pytest.skip("this kernel has no cachestat(2) (Linux 6.5+)")
        raise OSError(code, os.strerror(code))
    return found.nr_dirty


def backing_dir(pair: MirrorPair) -> int:
    """A descriptor of the directory under the mount point, opened through the mount process's own."""
    mounted = os.stat(pair.primary).st_dev
    top = psutil.Process(pair.mounter.pid)
    for proc in (top, *top.children(recursive=True)):
        for entry in os.scandir(f"/proc/{proc.pid}/fd"):
            try:
                if os.readlink(entry.path) != os.path.realpath(pair.primary):
                    continue
                fd = os.open(entry.path, os.O_RDONLY | os.O_DIRECTORY)
            except OSError:
                continue
            if os.fstat(fd).st_dev != mounted:
                return fd
            os.close(fd)
    raise AssertionError("no descriptor of the directory under the mount in the mount's processes")


def _write(path: str, piece: int, pieces: int) -> bytes:
    data = os.urandom(piece * pieces)
    with open(path, "wb", buffering=0) as f:
        for start in range(0, len(data), piece):
            f.write(data[start:start + piece])
    return data


@pytest.mark.parametrize("mode", ["intercept", "sync", "barrier"])
def test_large_writes_reach_the_primarys_disk_before_any_fsync(mirror_factory, mode):
    pair = mirror_factory(mode="sync" if mode == "intercept" else mode, replicate=mode != "intercept").start()
    big = _write(os.path.join(pair.primary, "big"), MIB, 16)            # closed, never fsynced
    small = _write(os.path.join(pair.primary, "small"), 16 * 1024, 64)   # 1 MiB in 16 KiB writes
    root = backing_dir(pair)
    try:
        def dirty(name: str) -> int:
            fd = os.open(name, os.O_RDONLY, dir_fd=root)
            try:
                return dirty_pages(fd)
            finally:
                os.close(fd)

        assert dirty("big") <= len(big) // PAGE // 8, "the large writes' pages were left for the fsync"
        if mode != "barrier":   # there the kernel's writeback cache sends them to us as large WRITEs
            assert dirty("small") > 0, "small writes were sent to disk at once (the flusher ran?)"
    finally:
        os.close(root)
    with open(os.path.join(pair.primary, "big"), "rb") as f:
        assert f.read() == big
    if mode != "intercept":
        assert_same(pair)
