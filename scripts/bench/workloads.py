"""Workloads shared by the benchmarks in this folder (mirror.py, binding.py).

Each workload runs in a fresh subdirectory of the directory it is given, returns its figure
(higher is better, except latencies), and removes what it wrote afterwards (outside the timing),
so repetitions and configurations do not see each other's files. A ``probe`` (cputime.Probe) given
to a workload is told where its timed part begins and ends, to read each process's CPU there.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sqlite3
import statistics
import time
import uuid

from cputime import NoProbe, Probe

MIB = 1024 * 1024


def fresh(directory: str, tag: str) -> str:
    path = os.path.join(directory, f"{tag}-{uuid.uuid4().hex[:8]}")
    os.mkdir(path)
    return path


# ext4's "top of a directory hierarchy" flag (chattr +T) and the ioctls that read and set it.
FS_IOC_GETFLAGS, FS_IOC_SETFLAGS, FS_TOPDIR_FL = 0x80086601, 0x40086602, 0x00020000


def spread(directory: str) -> bool:
    """Mark ``directory`` chattr +T, so ext4 puts each new subdirectory (every run's fresh one) in a
    block group of its own, as it does for top-level directories; False where the flag is not kept.

    Why: on an ext4 without a journal (this VM's disk) the inode allocator steps over each inode its
    group freed in the last 60 s (300 s while the inode table block is dirty), one buffer lookup
    each (``recently_deleted``): after one column's clean-up of 5,000 files, the next column in the
    same group created 1,400 files/s instead of 39,000 (docs/performance.md, "The FUSE ceiling for
    interception")."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        flags = bytearray(8)
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, flags, True)
        value = int.from_bytes(flags[:4], "little") | FS_TOPDIR_FL
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, value.to_bytes(4, "little") + bytes(4))
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, flags, True)
        return bool(int.from_bytes(flags[:4], "little") & FS_TOPDIR_FL)
    except OSError:   # tmpfs and others: no such flag
        return False
    finally:
        os.close(fd)


def settle(directory: str) -> None:
    """Write back dirty pages of this filesystem before a timed run (no cache is dropped)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.syncfs(fd) if hasattr(os, "syncfs") else os.sync()
    finally:
        os.close(fd)


def warm_page_cache(directory: str, size_mib: int) -> None:
    """Fill ``size_mib`` MiB of page cache and free it again, untimed, with no disk I/O (a sparse
    file read whole, then deleted: its holes are cached as clean zero pages).

    Why: this VM hands freed memory back to its host (virtio-balloon free page reporting), and the
    page cache filled again after a pause costs 4-8x the CPU to touch. 1 GiB + fsync on the plain
    directory after 20 s idle: 406-653 MB/s at 1.1-2.1 ms of CPU per MiB; right after this warm-up
    (3 GiB), or right after another such run, 1,303-1,454 MB/s at 0.26-0.32 ms. Without it the
    first column of each sequential round (the plain directory) paid alone; a replicated column
    fills three times the file's size (the mount's cache, both copies). docs/performance.md."""
    path = os.path.join(directory, f".warm-{os.getpid()}")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, size_mib * MIB)
        while os.read(fd, 8 * MIB):
            pass
    finally:
        os.close(fd)
        os.unlink(path)


def prepare(job: str, scratch: str, directory: str, size_mib: int) -> None:
    """Before each timed run, as every benchmark of this folder does it: a sequential run after the
    page-cache warm-up (three times its size, in ``scratch``), every run after a settle."""
    if job == "seq":
        warm_page_cache(scratch, 3 * size_mib)
    settle(directory)


# Why a benchmark of several runs keeps each run's many files until it ends: on this disk's ext4
# (no journal) the inode allocator steps over every inode its block group freed in the last 60 s
# (spread()), and ext4 puts a new top directory preferably in a group with few directories, such as
# one whose tree was just removed. Deleting 5,000 files (or a PostgreSQL cluster) between runs then
# poisons a later run that lands there, whatever --spread does: plain made 37,273, 38,093 and 1,729
# files/s in the three repetitions of one run (docs/performance.md, "The third session's
# issue-size run"). Nothing is freed while the runs go on if nothing is removed.


def _cleanup(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def seq_write(directory: str, size_mib: int, fsync: bool = True, probe: Probe | NoProbe = NoProbe()) -> float:
    """One new file written in 1 MiB blocks, then fsync (if asked): MB/s (10^6 bytes/s)."""
    work = fresh(directory, "seq")
    block = os.urandom(MIB)
    fd = os.open(os.path.join(work, "big"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        probe.begin()
        start = time.perf_counter()
        for _ in range(size_mib):
            os.write(fd, block)
        if fsync:
            os.fsync(fd)
        elapsed = time.perf_counter() - start
        probe.end()
    finally:
        os.close(fd)
        _cleanup(work)
    return size_mib * MIB / elapsed / 1e6


def small_files(directory: str, count: int, fsync: bool = False, probe: Probe | NoProbe = NoProbe(),
                keep: bool = False) -> float:
    """``count`` new files of 4 KiB each (create, write, [fsync,] close): files/s. ``keep``: leave
    them for the caller, who removes its whole directory once every run is done (why: the comment
    above ``_cleanup``)."""
    work = fresh(directory, "small")
    data = os.urandom(4096)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        probe.begin()
        start = time.perf_counter()
        for i in range(count):
            fd = os.open(os.path.join(work, f"f{i:06d}"), flags, 0o644)
            os.write(fd, data)
            if fsync:
                os.fsync(fd)
            os.close(fd)
        elapsed = time.perf_counter() - start
        probe.end()
    finally:
        if not keep:
            _cleanup(work)
    return count / elapsed


def sqlite_txns(directory: str, count: int, probe: Probe | NoProbe = NoProbe()) -> float:
    """``count`` single-row INSERT transactions, WAL, synchronous=FULL: txn/s."""
    work = fresh(directory, "sqlite")
    try:
        db = sqlite3.connect(os.path.join(work, "bench.db"), isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
            payload = os.urandom(100)
            probe.begin()
            start = time.perf_counter()
            for i in range(count):
                db.execute("BEGIN")
                db.execute("INSERT INTO t (id, v) VALUES (?, ?)", (i, payload))
                db.execute("COMMIT")
            elapsed = time.perf_counter() - start
            probe.end()
        finally:
            db.close()
    finally:
        _cleanup(work)
    return count / elapsed


def fsync_latency(directory: str, count: int, probe: Probe | NoProbe = NoProbe()) -> tuple[float, float]:
    """Appending 4 KiB then fsync, ``count`` times: (p50, p99) in ms."""
    work = fresh(directory, "lat")
    data = os.urandom(4096)
    samples = []
    fd = os.open(os.path.join(work, "lat"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        probe.begin()
        for _ in range(count):
            start = time.perf_counter()
            os.write(fd, data)
            os.fsync(fd)
            samples.append((time.perf_counter() - start) * 1000)
        probe.end()
    finally:
        os.close(fd)
        _cleanup(work)
    samples.sort()
    return samples[len(samples) // 2], samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def environment() -> dict:
    """Date, machine and disk, for the report."""
    import platform
    import subprocess
    src = subprocess.run(["findmnt", "-n", "-o", "SOURCE,FSTYPE", "-T", os.getcwd()],
                         capture_output=True, text=True).stdout.strip()
    here = os.path.dirname(os.path.abspath(__file__))
    git = ["git", "-C", here]
    commit = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    changed = subprocess.run(git + ["status", "--porcelain", "--untracked-files=no"],
                             capture_output=True, text=True).stdout.splitlines()
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "nproc": os.cpu_count(),
            "kernel": platform.release(), "python": platform.python_version(), "disk": src,
            "commit": commit or None, "files_changed_since_commit": len(changed) if commit else None}
