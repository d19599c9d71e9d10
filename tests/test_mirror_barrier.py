"""Barrier mode: what the application was told is durable is on the secondary, whatever happens next.

The mount daemon is killed (SIGKILL, a power cut of the data path) right after a durability call
returns: fsync, fdatasync, an O_DSYNC write, msync, or close (close-to-open). Every record such a
call covered must then be in the secondary's copy. Writes without such a call may be lost; they
were only ever in the page cache, as on a local disk.
"""

from __future__ import annotations

import mmap
import os
import random
import signal
import subprocess
import time

from tests.conftest import needs_root
from tests.mirror_fixtures import is_fuse_mounted, wait_for

pytestmark = needs_root

RECORD = 512


def _record(round_: int, i: int) -> bytes:
    return (b"%d:%d:" % (round_, i)).ljust(RECORD - 1, b"r") + b"\n"


def _durable_writes(path: str, round_: int, count: int, how: str, power_cut) -> None:
    """Write ``count`` records, each made durable by ``how`` before the next one, and call
    ``power_cut()`` the moment the last durable call returned (before any close or munmap)."""
    if how == "close":
        for i in range(count):
            with open(path, "ab") as f:
                f.write(_record(round_, i))
        power_cut()
        return
    if how == "msync":
        size = count * RECORD
        with open(path, "w+b") as f:
            f.truncate(size)
            m = mmap.mmap(f.fileno(), size, mmap.MAP_SHARED)
            for i in range(count):
                m[i * RECORD:(i + 1) * RECORD] = _record(round_, i)
                m.flush()   # msync(MS_SYNC)
            power_cut()
            _ignore_dead_mount(m.close)
            _ignore_dead_mount(f.close)
        return
    flags = os.O_CREAT | os.O_WRONLY | os.O_APPEND | (os.O_DSYNC if how == "dsync" else 0)
    fd = os.open(path, flags, 0o644)
    for i in range(count):
        os.write(fd, _record(round_, i))
        if how == "fsync":
            os.fsync(fd)
        elif how == "fdatasync":
            os.fdatasync(fd)
    power_cut()
    _ignore_dead_mount(lambda: os.close(fd))


def _ignore_dead_mount(action) -> None:
    """After the power cut a close may fail (ENOTCONN, EIO): nothing more was promised."""
    try:
        action()
    except (OSError, ValueError):
        pass


def test_power_kill_right_after_durable_calls_loses_nothing_they_covered(mirror_factory):
    pair = mirror_factory("barrier", mode="barrier", timeout=2.0).start()
    rng = random.Random(10)
    ways = ["fsync", "fdatasync", "dsync", "close", "msync"] * 2
    for round_, how in enumerate(ways):
        if round_:
            pair.mount()
        assert pair.status()["mode"] == "barrier"
        count = rng.randint(20, 120)
        path = f"{pair.primary}/log{round_}"
        _durable_writes(path, round_, count, how, lambda: pair.mounter.send_signal(signal.SIGKILL))
        pair.mounter.wait(10)
        subprocess.run(["fusermount3", "-u", "-z", pair.primary], capture_output=True)
        wait_for(lambda: not is_fuse_mounted(pair.primary), 10, what="the dead mount to go")
        with open(f"{pair.secondary}/log{round_}", "rb") as f:
            copy = f.read()
        expected = b"".join(_record(round_, i) for i in range(count))
        assert copy[:len(expected)] == expected, \
            f"round {round_} ({how}): the secondary lacks records that {how} had made durable"


def test_async_close_of_a_changed_file_waits_for_the_peer(mirror_factory):
    """Async mode: close() of a handle that wrote is a barrier (no message of its own: it waits for
    the newest acknowledgement); every closed file is complete on the secondary at once."""
    pair = mirror_factory("async", mode="async").start()
    for i in range(100):
        data = os.urandom(200_000 + i)
        with open(f"{pair.primary}/f{i}", "wb") as f:
            f.write(data)
        with open(f"{pair.secondary}/f{i}", "rb") as f:
            assert f.read() == data, f"file {i}: close() returned before the secondary had it"


def test_barrier_mode_writes_files_with_several_names(mirror_factory):
    """The request loop gives every name of a file one kernel inode, so the kernel's writeback
    cache keeps one size for all of them. The first engine gave each name its own (an append
    through one name overwrote data: "01234XY789" instead of "0123456789XY"), and barrier mode
    refused hard links there (EPERM). Here links are made and written through every name, and
    each name shows every change at once, on both sides."""
    pair = mirror_factory("links", mode="barrier")
    for side in (pair.primary, pair.secondary):   # two names made before the mount, on both sides
        with open(f"{side}/old", "wb") as f:
            f.write(b"alpha")
        os.link(f"{side}/old", f"{side}/old2")
    pair.start()
    with open(f"{pair.primary}/one", "wb") as f:
        f.write(b"0123456789")
    os.link(f"{pair.primary}/one", f"{pair.primary}/two")
    with open(f"{pair.primary}/one", "rb") as f:   # warm the caches of both names
        f.read()
    os.stat(f"{pair.primary}/two")
    with open(f"{pair.primary}/two", "ab") as f:
        f.write(b"XY")
    for name in ("one", "two"):
        with open(f"{pair.primary}/{name}", "rb") as f:
            assert f.read() == b"0123456789XY"
        with open(f"{pair.secondary}/{name}", "rb") as f:
            assert f.read() == b"0123456789XY"
    assert os.stat(f"{pair.secondary}/one").st_ino == os.stat(f"{pair.secondary}/two").st_ino
    with open(f"{pair.primary}/old2", "r+b") as f:   # a file with two names from before the mount
        f.write(b"ALPHA")
    os.truncate(f"{pair.primary}/old", 3)
    with open(f"{pair.primary}/old2", "rb") as f:
        assert f.read() == b"ALP"
    with open(f"{pair.primary}/old", "rb") as f:
        assert f.read() == b"ALP"
    pair.umount()
    with open(f"{pair.secondary}/old2", "rb") as f:
        assert f.read() == b"ALP"


def test_truncate_by_path_shows_the_stored_mtime(mirror_factory):
    """With the writeback cache the kernel changes its own mtime on truncate(path) only when the
    size changes (and then sends it); a truncate to the same size comes without a time and the
    mount goes on showing the old one, while ext4 stamps the stored copies: they put it back."""
    pair = mirror_factory("trunc", mode="barrier").start()
    path = f"{pair.primary}/a"
    with open(path, "wb") as f:
        f.write(b"alpha")
    with open(path, "wb"):   # O_TRUNC: empty
        pass
    os.truncate(path, 0)     # hypothesis found this pair: ('create', 'a', b''), ('truncate', 'a', 0)
    time.sleep(0.5)
    assert os.stat(path).st_mtime_ns == os.stat(f"{pair.secondary}/a").st_mtime_ns


def test_writes_within_10_ms_leave_the_mtime_the_mount_shows_on_both_copies(mirror_factory):
    """Barrier mode keeps times to 10 ms (stamps.py, BARRIER_TIME_GRANULARITY_NS), and the kernel
    sends none for a write within 10 ms of the last it sent: such a write must not stamp the
    stored copies with its own time, or they stay ahead of the mount until the kernel forgets the
    inode. Small and large writes (which carry their times in the WRITE), through two handles."""
    pair = mirror_factory("tengrain", mode="barrier").start()
    path = f"{pair.primary}/a"
    differ = []
    for size in (100, 512 * 1024):
        for _ in range(10):
            with open(path, "ab") as f:
                f.write(b"x" * size)
            with open(path, "ab") as f:   # the second within 10 ms of the first
                f.write(b"y" * size)
            shown, stored = os.stat(path).st_mtime_ns, os.stat(f"{pair.secondary}/a").st_mtime_ns
            if shown != stored:
                differ.append((size, shown, stored))
    assert differ == []


def test_a_new_files_first_write_never_moves_its_mtime_back(mirror_factory):
    """Barrier mode keeps times to 10 ms: the kernel stamps a write with the current time truncated
    to 10 ms. A new file's times used to be answered to the ns, so its first write within the same
    10 ms moved its mtime back by up to 10 ms (``make`` could see a target older than it was). The
    times answered for a regular file are floored to 10 ms now (native/hm_fuse.c,
    hm_kernel_times), and a new file's copies hold the same floor (stamps.granular_times)."""
    pair = mirror_factory("monotonic", mode="barrier").start()
    went_back, differ = [], []
    for i in range(40):
        fd = os.open(f"{pair.primary}/w{i}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        created = os.fstat(fd).st_mtime_ns
        os.write(fd, b"x")
        written = os.fstat(fd).st_mtime_ns
        os.fsync(fd)
        os.close(fd)
        if written < created:
            went_back.append((i, created - written))
    for i in range(5):
        os.close(os.open(f"{pair.primary}/c{i}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    for name in [f"w{i}" for i in range(40)] + [f"c{i}" for i in range(5)]:
        shown = os.stat(f"{pair.primary}/{name}")
        stored = os.stat(f"{pair.secondary}/{name}")
        if (shown.st_mtime_ns, shown.st_atime_ns) != (stored.st_mtime_ns, stored.st_atime_ns):
            differ.append((name, shown.st_mtime_ns, stored.st_mtime_ns))
    assert went_back == []
    assert differ == []
