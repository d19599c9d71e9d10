"""Sync mode's commits: a handle that commits one write at a time (a database's WAL: write, then
fdatasync) sends its next write as WRITE_FSYNC and its fsync as no message at all, and only then.

The interception layer in this process over a real receiver (its own thread, loopback) and a real
link; what the peer received is read from the receiver's per-operation counts and its copy. Last,
the same through a real FUSE mount and a receiver process.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess

import pytest

from hamirror.fs.operations import Interception
from hamirror.mirror.replicator import Replicator
from tests.mirror_fixtures import MirrorPair, local_link, wait_for

PAGE = 8192
COMMITS = 20


def _interception(tmp_path, mode: str):
    """(ops, client, receiver, primary, secondary) of an Interception in ``mode`` over a real link."""
    primary = tmp_path / "primary"
    primary.mkdir()
    root_fd = os.open(primary, os.O_RDONLY | os.O_DIRECTORY)
    with local_link(str(tmp_path)) as (client, receiver):
        ops = Interception(root_fd, Replicator(client, None, sync=mode == "sync"), mode,
                           context=lambda: (os.getuid(), os.getgid(), os.getpid()))
        yield ops, client, receiver, primary, tmp_path / "secondary"
    os.close(root_fd)


@pytest.fixture
def mirror(tmp_path):
    yield from _interception(tmp_path, "sync")


def _commit(ops: Interception, fh: int, n: int, datasync: int = 1, writes: int = 1) -> None:
    for w in range(writes):
        ops.write("/wal", bytes([n % 251 + 1]) * PAGE, (n * writes + w) * PAGE, fh)
    ops.fsync("/wal", datasync, fh)


def _counts(receiver) -> dict[str, int]:
    return {op: n for op, n in receiver.stats.by_op.items() if op in ("WRITE", "WRITE_FSYNC", "FSYNC")}


def test_a_commit_of_one_write_is_one_message(mirror):
    ops, client, receiver, primary, secondary = mirror
    fh = ops.create("/wal", 0o600, os.O_RDWR)
    for n in range(6):
        _commit(ops, fh, n)
    # Two commits show the pattern (each one write); from the third on, WRITE_FSYNC and no FSYNC.
    assert _counts(receiver) == {"WRITE": 2, "FSYNC": 2, "WRITE_FSYNC": 4}
    assert (secondary / "wal").read_bytes() == (primary / "wal").read_bytes()
    assert os.stat(secondary / "wal").st_mtime_ns == os.stat(primary / "wal").st_mtime_ns
    ops.release("/wal", fh)


@pytest.fixture
def local_syncs(monkeypatch):
    """The mount's own fdatasync calls (made for real), in order."""
    calls: list[int] = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (calls.append(fd), real(fd))[1])
    return calls


def test_a_commits_local_sync_runs_before_its_write_returns(mirror, local_syncs):
    ops, client, receiver, primary, secondary = mirror
    fh = ops.create("/wal", 0o600, os.O_RDWR)
    for n in range(2):
        _commit(ops, fh, n)
    assert local_syncs == [fh, fh]
    ops.write("/wal", b"z" * PAGE, 2 * PAGE, fh)   # a commit's write: synced here while the peer syncs
    assert local_syncs == [fh, fh, fh]
    ops.fsync("/wal", 1, fh)                        # nothing changed since: no second fdatasync
    assert local_syncs == [fh, fh, fh]
    ops.write("/wal", b"z" * PAGE, 3 * PAGE, fh)
    ops.fsync("/wal", 0, fh)                        # a full fsync covers metadata too: its own
    assert local_syncs == [fh, fh, fh, fh]
    ops.release("/wal", fh)


def test_full_fsync_commits_sync_locally_at_the_fsync(mirror, monkeypatch):
    """fsync (not fdatasync) covers the inode's metadata, which a chmod changes without a data
    stamp: only the peer's half is taken in the write (no FSYNC message), the local one is not."""
    ops, client, receiver, primary, secondary = mirror
    fsyncs: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsyncs.append(fd), real(fd))[1])
    fh = ops.create("/wal", 0o600, os.O_RDWR)
    for n in range(5):
        _commit(ops, fh, n, datasync=0)
    assert fsyncs == [fh] * 5
    assert _counts(receiver) == {"WRITE": 2, "FSYNC": 2, "WRITE_FSYNC": 3}
    ops.write("/wal", b"m" * PAGE, 5 * PAGE, fh)
    ops.chmod("/wal", 0o640)
    before = len(fsyncs)
    ops.fsync("/wal", 0, fh)   # the mode too is on this disk when it returns
    assert fsyncs[before:] == [fh]
    assert os.stat(secondary / "wal").st_mode & 0o777 == 0o640
    ops.release("/wal", fh)


def test_a_data_change_after_the_early_sync_is_synced_by_the_fsync(mirror, local_syncs):
    ops, client, receiver, primary, secondary = mirror
    fh = ops.create("/wal", 0o600, os.O_RDWR)
    other = ops.create("/other", 0o600, os.O_RDWR)
    for n in range(2):
        _commit(ops, fh, n)
    for change in (lambda: ops.write("/other", b"o", 0, other), lambda: ops.truncate("/wal", 5 * PAGE, fh),
                   lambda: ops.fallocate("/other", 0, 0, PAGE, other)):
        ops.write("/wal", b"z" * PAGE, 2 * PAGE, fh)
        before = len(local_syncs)
        change()
        ops.fsync("/wal", 1, fh)
        assert local_syncs[before:] == [fh]
    ops.release("/other", other)
    ops.release("/wal", fh)


def test_the_early_syncs_error_is_the_fsyncs(mirror, monkeypatch):
    ops, client, receiver, primary, secondary = mirror
    fh = ops.create("/wal", 0o600, os.O_RDWR)
    for n in range(2):
        _commit(ops, fh, n)
    real = os.fdatasync

    def failing(fd):
        monkeypatch.setattr(os, "fdatasync", real)   # once: the kernel reports an error once per description
        raise OSError(errno.EIO, "injected")
    monkeypatch.setattr(os, "fdatasync", failing)
    assert ops.write("/wal", b"z" * PAGE, 2 * PAGE, fh) == PAGE   # the write itself succeeded
    with pytest.raises(OSError) as caught:
        ops.fsync("/wal", 1, fh)
    assert caught.value.errno == errno.EIO
    ops.release("/wal", fh)


def test_anything_sent_in_between_sends_the_fsync(mirror):
    ops, client, receiver, primary, secondary = mirror
    fh = ops.create("/wal", 0o600, os.O_RDWR)
    for n in range(3):
        _commit(ops, fh, n)
    before = _counts(receiver)
    ops.write("/wal", b"x" * PAGE, 3 * PAGE, fh)      # WRITE_FSYNC: synced on the peer
    other = ops.create("/other", 0o600, os.O_RDWR)    # ... but a message since
    ops.fsync("/wal", 1, fh)
    assert _counts(receiver) == dict(before, WRITE_FSYNC=before["WRITE_FSYNC"] + 1, FSYNC=before["FSYNC"] + 1)
    ops.release("/other", other)
    ops.release("/wal", fh)


def test_an_fsync_stronger_than_the_peers_sync_is_sent(mirror):
    ops, client, receiver, primary, secondary = mirror
    fh = ops.create("/wal", 0o600, os.O_RDWR)
    for n in range(3):
        _commit(ops, fh, n)                           # fdatasync: the peer's WRITE_FSYNC datasyncs
    before = _counts(receiver)
    _commit(ops, fh, 3, datasync=0)                   # a full fsync: sent
    assert _counts(receiver)["FSYNC"] == before["FSYNC"] + 1
    # The next write asks the peer for a full fsync, which covers an fdatasync too.
    ops.write("/wal", b"y" * PAGE, 4 * PAGE, fh)
    ops.fsync("/wal", 1, fh)
    assert _counts(receiver)["FSYNC"] == before["FSYNC"] + 1
    assert (secondary / "wal").read_bytes() == (primary / "wal").read_bytes()
    ops.release("/wal", fh)


def test_a_commit_of_several_writes_sends_its_last_as_write_fsync_once_seen_twice(mirror, local_syncs):
    """SQLite's WAL commits a frame's header and its page, then syncs: once two commits made as
    many writes, the last write of each commit goes as WRITE_FSYNC (the peer syncs the file, the
    writes before it included) and the fdatasync sends nothing: two round trips, not three."""
    ops, client, receiver, primary, secondary = mirror
    fh = ops.create("/wal", 0o600, os.O_RDWR)
    for n in range(6):
        _commit(ops, fh, n, writes=2)
    # Commit 0 is the first fsync seen, 1 and 2 show the pattern; from commit 3 on, one WRITE, one
    # WRITE_FSYNC, no FSYNC.
    assert _counts(receiver) == {"WRITE": 9, "FSYNC": 3, "WRITE_FSYNC": 3}
    assert local_syncs == [fh] * 6   # the early ones ran while the peer's did; the fsyncs' found nothing new
    assert (secondary / "wal").read_bytes() == (primary / "wal").read_bytes()
    assert os.stat(secondary / "wal").st_mtime_ns == os.stat(primary / "wal").st_mtime_ns
    ops.release("/wal", fh)


def test_commits_of_varying_sizes_send_their_fsync(mirror):
    """A file that commits two writes, then three, then two... shows no pattern of more than one
    write: every commit ends with its FSYNC, and nothing is synced on the peer for nothing."""
    ops, client, receiver, primary, secondary = mirror
    fh = ops.create("/wal", 0o600, os.O_RDWR)
    offset = 0
    for n in range(6):
        for _ in range(2 + n % 2):
            ops.write("/wal", bytes([n + 1]) * PAGE, offset, fh)
            offset += PAGE
        ops.fsync("/wal", 1, fh)
    assert _counts(receiver) == {"WRITE": 15, "FSYNC": 6}
    assert (secondary / "wal").read_bytes() == (primary / "wal").read_bytes()
    ops.release("/wal", fh)


def test_other_modes_keep_their_messages(tmp_path):
    primary = tmp_path / "primary"
    primary.mkdir()
    root_fd = os.open(primary, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with local_link(str(tmp_path)) as (client, receiver):
            ops = Interception(root_fd, Replicator(client, None, sync=False), "async",
                               context=lambda: (os.getuid(), os.getgid(), os.getpid()))
            fh = ops.create("/wal", 0o600, os.O_RDWR)
            for n in range(4):
                _commit(ops, fh, n)
            ops.release("/wal", fh)
            assert _counts(receiver) == {"WRITE": 4, "FSYNC": 4}
    finally:
        os.close(root_fd)


@pytest.fixture
def barrier_mirror(tmp_path):
    yield from _interception(tmp_path, "barrier")


def test_barrier_commits_send_their_page_as_write_fsync_before_the_fsync(barrier_mirror):
    """Barrier mode (hamirror/fs/commits.py): once a file committed one write at a time twice, its
    next page leaves at the write as WRITE_FSYNC, durable on the peer before the application's
    fdatasync, which then sends nothing. Before, the page was held for the fsync."""
    ops, client, receiver, primary, secondary = barrier_mirror
    fh = ops.create("/wal", 0o600, os.O_RDWR)
    for n in range(2):
        _commit(ops, fh, n)
    before = _counts(receiver)
    ops.write("/wal", b"z" * PAGE, 2 * PAGE, fh)
    wait_for(lambda: _counts(receiver).get("WRITE_FSYNC", 0) > before.get("WRITE_FSYNC", 0), 5,
             what="the page as WRITE_FSYNC, with no fsync yet")
    ops.fsync("/wal", 1, fh)
    _commit(ops, fh, 3)
    assert _counts(receiver) == dict(before, WRITE_FSYNC=before.get("WRITE_FSYNC", 0) + 2)
    assert (secondary / "wal").read_bytes() == (primary / "wal").read_bytes()
    assert os.stat(secondary / "wal").st_mtime_ns == os.stat(primary / "wal").st_mtime_ns
    ops.release("/wal", fh)


def test_barrier_commits_send_the_fsync_after_a_data_change_in_between_or_a_full_fsync(barrier_mirror):
    ops, client, receiver, primary, secondary = barrier_mirror
    fh = ops.create("/wal", 0o600, os.O_RDWR)
    other = ops.create("/other", 0o600, os.O_RDWR)
    for n in range(2):
        _commit(ops, fh, n)
    before = _counts(receiver)
    ops.write("/wal", b"x" * PAGE, 2 * PAGE, fh)       # WRITE_FSYNC
    ops.write("/other", b"o" * 10, 0, other)           # a data change since: the fsync is sent
    ops.fsync("/wal", 1, fh)
    assert _counts(receiver)["FSYNC"] == before.get("FSYNC", 0) + 1
    _commit(ops, fh, 3)                                # the pattern holds: early again, no FSYNC
    assert _counts(receiver)["FSYNC"] == before.get("FSYNC", 0) + 1
    _commit(ops, fh, 4, datasync=0)                    # a full fsync: the times too, so sent
    assert _counts(receiver)["FSYNC"] == before.get("FSYNC", 0) + 2
    assert (secondary / "wal").read_bytes() == (primary / "wal").read_bytes()
    assert (secondary / "other").read_bytes() == (primary / "other").read_bytes()
    ops.release("/other", other)
    ops.release("/wal", fh)


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_wal_commits_through_a_mount_are_synced_on_the_peer(tmp_path):
    """The same through the kernel: pwrite + fdatasync on one descriptor of a sync mount. The
    receiver process syncs the file once per commit (strace), though most commits sent no FSYNC."""
    pair = MirrorPair(str(tmp_path), mode="sync").start()
    trace = str(tmp_path / "sync.trace")
    strace = None
    try:
        fd = os.open(os.path.join(pair.primary, "wal"), os.O_RDWR | os.O_CREAT, 0o600)
        os.pwrite(fd, b"\0" * PAGE, 0)
        os.fsync(fd)   # the receiver knows the file (a kept descriptor) before the trace starts
        strace = subprocess.Popen(["strace", "-f", "-y", "-e", "trace=fdatasync,fsync,syncfs,sync", "-o", trace,
                                   "-p", str(pair.receiver.pid)], stderr=subprocess.PIPE, text=True)
        assert "attached" in strace.stderr.readline()
        for n in range(COMMITS):
            os.pwrite(fd, bytes([n + 1]) * PAGE, n * PAGE)
            os.fdatasync(fd)
        os.close(fd)
        by_op = wait_for(lambda: _applied(pair, COMMITS + 1), 10, what="the receiver's counts")
    finally:
        if strace is not None:
            strace.send_signal(signal.SIGINT)
            strace.wait(10)
        pair.stop()
    with open(trace) as f:
        syncs = [line for line in f if "fdatasync(" in line and "/wal>) = 0" in line]
    assert len(syncs) >= COMMITS, f"{len(syncs)} fdatasync for {COMMITS} commits"
    assert by_op.get("WRITE_FSYNC", 0) >= COMMITS - 3 and by_op.get("FSYNC", 0) <= 4
    with open(os.path.join(pair.secondary, "wal"), "rb") as f:
        assert f.read() == b"".join(bytes([n + 1]) * PAGE for n in range(COMMITS))


def _applied(pair: MirrorPair, writes: int) -> dict | None:
    with open(os.path.join(pair.rstate, "status.json")) as f:
        by_op = json.load(f).get("by_op", {})
    return by_op if by_op.get("WRITE", 0) + by_op.get("WRITE_FSYNC", 0) >= writes else None



@pytest.mark.parametrize("mode", ["sync", "async", "barrier"])
def test_a_large_write_carries_its_times_in_one_message(tmp_path, mode):
    """A write of 256 KiB or more (sent before the local pwrite, so that both copies write at
    once) used to send the file's times after the pwrite as a UTIMENS of its own: a second round
    trip on the path of every large write. Now the times are chosen first, travel in the WRITE and
    are set on our copy after the bytes: one message each, and both copies' bytes and times equal.
    In barrier mode the times are the ones the file had: the kernel sends its own mtime."""
    session = _interception(tmp_path, mode)
    ops, client, receiver, primary, secondary = next(session)
    try:
        fh = ops.create("/big", 0o600, os.O_RDWR)
        os.utime(primary / "big", ns=(1_000_000_000, 2_000_000_000))   # an atime the writes keep
        for n in range(3):
            ops.write("/big", os.urandom(1 << 20), n << 20, fh)
        ops.fsync("/big", 0, fh)
        sent = {op: n for op, n in receiver.stats.by_op.items() if op in ("WRITE", "UTIMENS")}
        assert sent == {"WRITE": 3}
        ours, theirs = os.stat(primary / "big"), os.stat(secondary / "big")
        assert (secondary / "big").read_bytes() == (primary / "big").read_bytes()
        assert (theirs.st_mtime_ns, theirs.st_atime_ns) == (ours.st_mtime_ns, ours.st_atime_ns)
        assert ours.st_atime_ns == 1_000_000_000
        if mode == "barrier":   # the kernel keeps the mtime and sends its own (hamirror/fs/stamps.py)
            assert ours.st_mtime_ns == 2_000_000_000
        else:
            assert ours.st_mtime_ns > 2_000_000_000
        ops.release("/big", fh)
    finally:
        session.close()
