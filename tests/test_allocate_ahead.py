"""A large write's blocks are allocated before the write fills them (syscalls.allocate_ahead), on
both copies: ext4's delayed allocation would otherwise reserve and record them one 4 KiB block at
a time (docs/performance.md, "Large writes allocate their blocks first").

What is looked at is the outcome on disk, read with FIEMAP before any writeback starts: a range
the page cache holds under delayed allocation is reported with FIEMAP_EXTENT_DELALLOC; one whose
blocks were allocated first is not. A small write is the control (it keeps the delayed allocation,
so the probe can see it: where the file system has none, the tests skip).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
import struct
import subprocess

import pytest

from hamirror import syscalls
from hamirror.fs.operations import OVERLAP_MIN, Interception
from hamirror.link.apply import EARLY_WRITEBACK_MIN, Applier
from hamirror.link.protocol import Op, decode, encode
from hamirror.mirror.replicator import Replicator
from tests.mirror_fixtures import local_link

FS_IOC_FIEMAP = 0xC020660B
FIEMAP_EXTENT_DELALLOC = 0x4
_HEAD = struct.Struct("=QQIIII")            # struct fiemap, without its extents
_EXTENT = struct.Struct("=QQQQQI12x")       # struct fiemap_extent
LARGE = 1024 * 1024


def delayed(path: str) -> list[tuple[int, int]]:
    """The (offset, length) ranges of ``path`` under delayed allocation (no blocks yet). FIEMAP
    without FIEMAP_FLAG_SYNC: nothing is written back to answer."""
    count = 64
    request = bytearray(_HEAD.pack(0, 2**64 - 1, 0, 0, count, 0) + bytes(_EXTENT.size * count))
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, FS_IOC_FIEMAP, request)
    except OSError as exc:
        pytest.skip(f"no FIEMAP on this file system: {exc}")
    finally:
        os.close(fd)
    mapped = _HEAD.unpack_from(request)[3]
    extents = [_EXTENT.unpack_from(request, _HEAD.size + i * _EXTENT.size) for i in range(mapped)]
    return [(e[0], e[2]) for e in extents if e[5] & FIEMAP_EXTENT_DELALLOC]


def _require_delayed_allocation(path: str) -> None:
    if not delayed(path):
        pytest.skip("this file system allocates at write time: nothing to see")


def _message(op: Op, ints: tuple, path: bytes, data: bytes | None = None):
    return decode([encode(op, 1, 1, ints, (path,), ())] + ([data] if data is not None else []))


@pytest.mark.parametrize("mode", ["sync", "barrier"])
def test_a_large_write_on_the_primary_allocates_its_blocks_before_it_writes(tmp_path, mode):
    primary = tmp_path / "primary"
    primary.mkdir()
    root_fd = os.open(primary, os.O_RDONLY | os.O_DIRECTORY)
    data = os.urandom(LARGE)
    try:
        with local_link(str(tmp_path)) as (client, receiver):
            ops = Interception(root_fd, Replicator(client, None, sync=mode == "sync"), mode,
                               context=lambda: (os.getuid(), os.getgid(), os.getpid()))
            small = ops.create("/small", 0o644, os.O_WRONLY)
            ops.write("/small", b"s" * 8192, 0, small)
            big = ops.create("/big", 0o644, os.O_WRONLY)
            assert ops.write("/big", data, 4096, big) == LARGE
            _require_delayed_allocation(str(primary / "small"))
            assert delayed(str(primary / "big")) == []
            assert os.stat(primary / "big").st_size == 4096 + LARGE   # the size is the write's, not the hint's
            for path, fh in (("/small", small), ("/big", big)):
                ops.fsync(path, 0, fh)
                ops.release(path, fh)
    finally:
        os.close(root_fd)
    assert (primary / "big").read_bytes() == bytes(4096) + data
    assert (tmp_path / "secondary" / "big").read_bytes() == bytes(4096) + data
    assert OVERLAP_MIN <= LARGE


@pytest.mark.parametrize("use_native", [True, False])
def test_a_large_write_on_the_secondary_allocates_its_blocks_before_it_writes(tmp_path, use_native):
    applier = Applier(str(tmp_path), use_native=use_native)
    data = os.urandom(EARLY_WRITEBACK_MIN)
    try:
        if use_native and applier.native is None:
            pytest.skip("the native apply core is not built")
        for name in (b"small", b"big"):
            applier.apply(_message(Op.CREATE, (stat.S_IFREG | 0o644, os.getuid(), os.getgid(), 0), name))
        applier.apply(_message(Op.WRITE, (0,), b"small", b"s" * 8192))
        applier.apply(_message(Op.WRITE, (8192,), b"big", data))   # no start_writeback: nothing written back
        _require_delayed_allocation(str(tmp_path / "small"))
        assert delayed(str(tmp_path / "big")) == []
        assert os.stat(tmp_path / "big").st_size == 8192 + len(data)
    finally:
        applier.close()
    assert (tmp_path / "big").read_bytes() == bytes(8192) + data


def test_allocating_ahead_is_a_hint_that_raises_nothing(tmp_path):
    """A descriptor fallocate refuses (a pipe: ESPIPE; read-only: EBADF) leaves the write to fail or not."""
    r, w = os.pipe()
    path = tmp_path / "f"
    path.write_bytes(b"x")
    ro = os.open(path, os.O_RDONLY)
    try:
        syscalls.allocate_ahead(w, 0, LARGE)
        syscalls.allocate_ahead(ro, 0, LARGE)
    finally:
        for fd in (r, w, ro):
            os.close(fd)
    assert os.stat(path).st_blocks <= 8   # nothing allocated through the read-only descriptor


# --------------------------------------------------------------------------- where it is not done

FS_IOC_FSGETXATTR = 0x801C581F
FS_XFLAG_PREALLOC = 0x2
_FSXATTR = struct.Struct("=IIIII8x")        # struct fsxattr: xflags first


@contextlib.contextmanager
def loop_filesystem(base, fstype: str):
    """A fresh ``fstype`` file system on a loop device, mounted for the with-block only."""
    mkfs = shutil.which(f"mkfs.{fstype}")
    if os.geteuid() != 0 or mkfs is None or shutil.which("losetup") is None:
        pytest.skip(f"needs root, mkfs.{fstype} and losetup")
    image, mountpoint = base / f"{fstype}.img", base / f"{fstype}-mnt"
    mountpoint.mkdir()
    with open(image, "wb") as f:
        f.truncate(320 << 20)                # XFS's smallest is 300 MiB
    subprocess.run([mkfs, "-q", "-F" if fstype.startswith("ext") else "-f", str(image)], check=True,
                   capture_output=True)
    device = subprocess.run(["losetup", "-f", "--show", str(image)], check=True, capture_output=True,
                            text=True).stdout.strip()
    try:
        subprocess.run(["mount", device, str(mountpoint)], check=True, capture_output=True)
        try:
            yield mountpoint, os.path.basename(device)
        finally:
            subprocess.run(["umount", str(mountpoint)], check=True, capture_output=True)
    finally:
        subprocess.run(["losetup", "-d", device], check=True, capture_output=True)


def _preallocated(path) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        return bool(_FSXATTR.unpack(fcntl.ioctl(fd, FS_IOC_FSGETXATTR, bytes(_FSXATTR.size)))[0] & FS_XFLAG_PREALLOC)
    finally:
        os.close(fd)


@contextlib.contextmanager
def sync_mount(primary, link_base):
    """An Interception in sync mode over ``primary``, its secondary under ``link_base``."""
    root_fd = os.open(primary, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with local_link(str(link_base)) as (client, _):
            yield Interception(root_fd, Replicator(client, None, sync=True), "sync",
                               context=lambda: (os.getuid(), os.getgid(), os.getpid()))
    finally:
        os.close(root_fd)


def test_only_ext4_is_told_to_allocate_ahead(tmp_path):
    for fstype, expected in (("ext4", True), ("xfs", False)):
        with loop_filesystem(tmp_path, fstype) as (mountpoint, _):
            fd = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY)
            try:
                assert syscalls.allocation_ahead_helps(fd) is expected, fstype
            finally:
                os.close(fd)
    fd = os.open("/dev/shm", os.O_RDONLY | os.O_DIRECTORY)      # tmpfs
    try:
        assert syscalls.allocation_ahead_helps(fd) is False
    finally:
        os.close(fd)


def test_on_xfs_no_copy_of_a_large_write_is_left_marked_preallocated(tmp_path):
    """XFS marks a file that ever saw an fallocate as preallocated, and then never trims the blocks
    it allocates speculatively past the end of a growing file: neither copy may get that mark, from
    the mount or from either applier."""
    data = os.urandom(LARGE)
    with loop_filesystem(tmp_path, "xfs") as (base, _):
        (base / "primary").mkdir()
        with sync_mount(base / "primary", base) as ops:
            fh = ops.create("/big", 0o644, os.O_WRONLY)
            assert ops.write("/big", data, 0, fh) == LARGE
            ops.fsync("/big", 0, fh)
            ops.release("/big", fh)
        (base / "applied").mkdir()
        for use_native in (True, False):
            applier = Applier(str(base / "applied"), use_native=use_native)
            try:
                name = b"native" if use_native else b"python"
                applier.apply(_message(Op.CREATE, (stat.S_IFREG | 0o644, os.getuid(), os.getgid(), 0), name))
                applier.apply(_message(Op.WRITE, (0,), name, data))
            finally:
                applier.close()
        copies = [base / "primary" / "big", base / "secondary" / "big", base / "applied" / "native",
                  base / "applied" / "python"]
        assert [c.read_bytes() == data for c in copies] == [True] * 4
        assert [_preallocated(c) for c in copies] == [False] * 4


def _journal_commits(device: str) -> int:
    with open(f"/proc/fs/jbd2/{device}-8/info") as f:
        return int(f.readline().split()[0])


def test_an_o_dsync_handle_pays_one_journal_commit_per_large_write_not_two(tmp_path):
    """On a handle open O_DSYNC, ext4 commits its journal for an fallocate and again for the write
    that fills it: the mount does not allocate ahead there. Its copy on a journaled ext4."""
    data = os.urandom(LARGE)
    with loop_filesystem(tmp_path, "ext4") as (base, device):
        (base / "primary").mkdir()
        with sync_mount(base / "primary", tmp_path) as ops:      # the secondary off this disk
            fh = ops.create("/log", 0o644, os.O_WRONLY | os.O_DSYNC)
            before = _journal_commits(device)
            for i in range(16):
                assert ops.write("/log", data, i * LARGE, fh) == LARGE
            commits = _journal_commits(device) - before
            ops.release("/log", fh)
        assert (base / "primary" / "log").read_bytes() == data * 16
    assert 16 <= commits <= 20, commits
