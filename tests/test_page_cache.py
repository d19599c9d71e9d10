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
