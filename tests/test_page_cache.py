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
from tests.mirror_fixtures import syncs_during
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



@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_write_only_handle_changes_what_other_handles_read_at_once(mirror_factory, mode):
    """Pages another handle cached (by read and by a shared mapping) follow what a write-only
    handle writes: the next read and the mapping show the new bytes at once, not after the
    attribute timeout."""
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
    """Two processes' logs into one file (``O_WRONLY | O_APPEND``): every record lands whole,
    after the ones before it, on both copies."""
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
    handle writes over part of it: the later write's bytes are the file's, on both copies, never
    the mapping's written back over them afterwards."""
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


_SYNCED_WRITES = {   # how: (open flags, pwritev2 flags)
    "plain": (0, 0), "RWF_DSYNC": (0, os.RWF_DSYNC), "RWF_SYNC": (0, os.RWF_SYNC),
    "O_DSYNC": (os.O_DSYNC, 0), "O_SYNC": (os.O_SYNC, 0)}


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("how", list(_SYNCED_WRITES))
def test_a_synced_write_through_a_write_only_handle_is_synced_on_both_copies(mirror_factory, mode, how):
    """``pwritev2(RWF_DSYNC)``, or a write to a handle opened ``O_DSYNC``, promises the bytes on
    stable storage when it returns. On the cached path the kernel follows such a write with an
    FSYNC; a write-only handle's writes bypass the cache (FOPEN_DIRECT_IO), and then the kernel
    sends nothing after them: the mount reads the flag in the WRITE itself (native/hm_fuse_py.c)
    and syncs its copy and, in sync mode, the peer's before it answers. A plain write syncs
    nothing (the control: the counts come from this write, not from something else)."""
    pair = mirror_factory(mode=mode).start()
    path = os.path.join(pair.primary, "journal")
    opened, rwf = _SYNCED_WRITES[how]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | opened, 0o644)
    try:
        mount_syncs = syncs_during(pair.mounter.pid, lambda: os.pwritev(fd, [b"m" * 4096], 0, rwf))
        receiver_syncs = syncs_during(pair.receiver.pid, lambda: os.pwritev(fd, [b"r" * 4096], 4096, rwf))
    finally:
        os.close(fd)
    if how == "plain":
        assert (mount_syncs, receiver_syncs) == (0, 0)
    else:
        assert mount_syncs >= 1, "the primary's copy was not synced"
        assert receiver_syncs >= (1 if mode == "sync" else 0), "the peer's copy was not synced"
    assert _read(path) == b"m" * 4096 + b"r" * 4096
    assert_same(pair)


@pytest.mark.parametrize("how", ["RWF_DSYNC", "O_DSYNC"])
def test_once_a_synced_write_returns_neither_copy_holds_its_data_only_in_memory(mirror_factory, how):
    """The outcome a power loss would test: when a synced write through a write-only handle
    returns, no page of it is dirty or under writeback in either copy's backing file (the
    kernel's own flags, :mod:`hamirror.lab.pagecache`). Without the mount's sync of such a write,
    the pages stay dirty for up to the writeback interval (30 s)."""
    from hamirror.lab import pagecache
    if pagecache.unsupported():
        pytest.skip(pagecache.unsupported())
    pair = mirror_factory(mode="sync")
    under = os.open(pair.primary, os.O_PATH | os.O_DIRECTORY)   # the primary's copy, under the mount
    try:
        pair.start()
        opened, rwf = _SYNCED_WRITES[how]
        fd = os.open(os.path.join(pair.primary, "journal"), os.O_WRONLY | os.O_CREAT | opened, 0o644)
        try:
            assert os.pwritev(fd, [os.urandom(64 << 10)], 0, rwf) == 64 << 10
            copies = {"primary": os.open("journal", os.O_RDONLY, dir_fd=under),
                      "secondary": os.open(os.path.join(pair.secondary, "journal"), os.O_RDONLY)}
            try:
                dirty = {name: pagecache.dirty_pages(copy) for name, copy in copies.items()}
            finally:
                for copy in copies.values():
                    os.close(copy)
        finally:
            os.close(fd)
        assert dirty == {"primary": [], "secondary": []}
        assert_same(pair)
    finally:
        os.close(under)
