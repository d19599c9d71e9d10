"""The kernel keeps a file's cached pages across opens (native/hm_fuse_py.c, ``keep_cache``):
the mount is the only writer of its directory, so what the kernel cached is still the file.

Why it matters: without it every open dropped the file's pages, and a database whose processes
each open a table (PostgreSQL's backends) read it again through the mount: 0.64-0.76 FUSE READs
per pgbench transaction (docs/performance.md, "Pages kept across opens")."""

from __future__ import annotations

import os

import psutil
import pytest

from tests.conftest import needs_root
from tests.test_mirror_tools import assert_same

pytestmark = needs_root

SIZE = 4 << 20


def _mount_reads(pair) -> int:
    """Bytes the mount's processes read with system calls so far (``rchar``): a READ the kernel
    sends the mount is a pread of the backing file."""
    top = psutil.Process(pair.mounter.pid)
    return sum(p.io_counters().read_chars for p in [top, *top.children(recursive=True)])


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


@pytest.mark.parametrize("mode", ["sync", "barrier"])
def test_a_reopened_file_is_read_from_the_kernels_cache(mirror_factory, mode):
    pair = mirror_factory(mode=mode).start()
    path = os.path.join(pair.primary, "table")
    data = os.urandom(SIZE)
    with open(path, "wb") as f:
        f.write(data)
        os.fsync(f.fileno())
    assert _read(path) == data   # the pages are in the kernel's cache now, whatever the mode
    before = _mount_reads(pair)
    for _ in range(3):
        assert _read(path) == data
    assert _mount_reads(pair) - before < SIZE // 4, "each open dropped the file's cached pages"


@pytest.mark.parametrize("mode", ["sync", "barrier"])
def test_what_is_cached_follows_every_change_made_through_the_mount(mirror_factory, mode):
    """Pages kept across opens are never stale: writes through another handle, a truncate by
    name, a rename over the file and a hard link all show in the next open's read, and both copies
    end equal."""
    pair = mirror_factory(mode=mode).start()
    path = os.path.join(pair.primary, "f")
    with open(path, "wb") as f:
        f.write(b"a" * 100_000)
    assert _read(path) == b"a" * 100_000
    with open(path, "r+b") as f:
        f.seek(50_000)
        f.write(b"b" * 10)
    assert _read(path) == b"a" * 50_000 + b"b" * 10 + b"a" * 49_990
    os.truncate(path, 60_000)
    assert _read(path) == b"a" * 50_000 + b"b" * 10 + b"a" * 9_990
    other = os.path.join(pair.primary, "g")
    with open(other, "wb") as f:
        f.write(b"c" * 70_000)
    assert _read(other) == b"c" * 70_000
    os.rename(path, other)
    assert _read(other) == b"a" * 50_000 + b"b" * 10 + b"a" * 9_990
    os.link(other, path)
    with open(path, "r+b") as f:
        f.write(b"d" * 5)
    assert _read(other) == b"d" * 5 + b"a" * 49_995 + b"b" * 10 + b"a" * 9_990
    assert_same(pair)


def _cached_pages(path: str, size: int) -> int:
    """Pages of ``path`` (a file of ``size`` bytes on the mount) in the kernel's page cache of the
    mount's inode: ``mincore`` over a read-only shared mapping, which reads nothing. No stat
    first: the changed mtime it would fetch drops the cached pages (auto_inval_data)."""
    import ctypes
    import mmap

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        assert addr not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
        try:
            vec = (ctypes.c_ubyte * ((size + mmap.PAGESIZE - 1) // mmap.PAGESIZE))()
            assert libc.mincore(addr, size, vec) == 0, os.strerror(ctypes.get_errno())
            return sum(v & 1 for v in vec)
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)


@pytest.mark.parametrize("mode", ["sync", "async", "barrier"])
def test_a_write_only_handle_leaves_no_second_cached_copy(mirror_factory, mode):
    """A write-only handle's writes bypass the kernel's cache of the mount's file (FOPEN_DIRECT_IO,
    native/hm_fuse_py.c): the data is cached once, in the backing file's cache, not twice, and
    each write costs one copy less. Barrier mode keeps the kernel's writeback cache. A read
    caches the pages as before; both copies end equal."""
    pair = mirror_factory(mode=mode).start()
    path = os.path.join(pair.primary, "log")
    data = os.urandom(SIZE)
    with open(path, "wb") as f:
        f.write(data)
        os.fsync(f.fileno())
    pages = SIZE // os.sysconf("SC_PAGE_SIZE")
    assert _cached_pages(path, SIZE) == (pages if mode == "barrier" else 0)
    assert _read(path) == data
    assert _cached_pages(path, SIZE) == pages
    assert_same(pair)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_write_only_handle_changes_what_other_handles_read_at_once(mirror_factory, mode):
    """Pages another handle cached (by read and by a shared mapping) are dropped over the range a
    write-only handle writes: the next read and the mapping show the new bytes at once, not after
    the attribute timeout."""
    import mmap

    pair = mirror_factory(mode=mode).start()
    path = os.path.join(pair.primary, "f")
    with open(path, "wb") as f:
        f.write(b"a" * SIZE)
    with open(path, "rb") as reader:
        mapped = mmap.mmap(reader.fileno(), SIZE, prot=mmap.PROT_READ)
        try:
            assert reader.read() == b"a" * SIZE and mapped[:] == b"a" * SIZE
            fd = os.open(path, os.O_WRONLY)
            try:
                assert os.pwrite(fd, b"b" * 10_000, 100_000) == 10_000
            finally:
                os.close(fd)
            expected = b"a" * 100_000 + b"b" * 10_000 + b"a" * (SIZE - 110_000)
            assert os.pread(reader.fileno(), SIZE, 0) == expected
            assert mapped[:] == expected
        finally:
            mapped.close()
    assert _read(path) == expected
    assert_same(pair)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_write_only_appenders_interleave_whole_records(mirror_factory, mode):
    """Two processes' logs into one file (``O_WRONLY | O_APPEND``, the handles that bypass the
    page cache): every record lands whole, after the ones before it, on both copies."""
    pair = mirror_factory(mode=mode).start()
    path = os.path.join(pair.primary, "app.log")
    first = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    second = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        records = [(first if i % 2 else second, f"record {i:05d} ".encode() * (1 + i % 7) + b"\n")
                   for i in range(300)]
        for fd, record in records:
            assert os.write(fd, record) == len(record)
    finally:
        os.close(first)
        os.close(second)
    assert _read(path) == b"".join(record for _, record in records)
    assert_same(pair)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_write_only_handle_over_a_dirty_shared_mapping_wins(mirror_factory, mode):
    """A shared writable mapping (another handle) dirtied a page, not synced; then a write-only
    handle writes over part of it. The kernel writes the dirty page back before the direct
    write, then drops it: the later write's bytes are the file's, on both copies, never the
    mapping's written back over them afterwards."""
    import mmap

    pair = mirror_factory(mode=mode).start()
    path = os.path.join(pair.primary, "mapped")
    size = 64 * 1024
    with open(path, "wb") as f:
        f.write(b"a" * size)
    with open(path, "r+b") as handle:
        mapped = mmap.mmap(handle.fileno(), size)
        try:
            mapped[:8192] = b"m" * 8192
            fd = os.open(path, os.O_WRONLY)
            try:
                assert os.pwrite(fd, b"w" * 100, 50) == 100
            finally:
                os.close(fd)
            expected = b"m" * 50 + b"w" * 100 + b"m" * (8192 - 150) + b"a" * (size - 8192)
            assert mapped[:] == expected
            mapped.flush()
        finally:
            mapped.close()
    assert _read(path) == expected
    assert_same(pair)
