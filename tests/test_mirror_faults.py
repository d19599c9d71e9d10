"""The replicated mount under faults: a dead receiver, a restart while ALONE, async mode, full disks.

The application must never see the peer's trouble (no error, no stall past the timeout), and the
journal must hold every path the peer missed.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import threading
import time

import pytest

from hamirror.journal.journal import Journal
from tests.conftest import needs_root
from tests.mirror_fixtures import diff_snapshots, tree_snapshot, wait_for

pytestmark = needs_root


def assert_same(pair) -> None:
    assert diff_snapshots(tree_snapshot(pair.primary), tree_snapshot(pair.secondary)) == []


def journal_paths(pair) -> set[str]:
    journal = Journal(os.path.join(pair.state, "journal.db"))
    try:
        return set(journal.changed_paths())
    finally:
        journal.close()


class Writer(threading.Thread):
    """Creates files and appends to a log through the mount until stopped; never expects errors."""

    def __init__(self, root: str, killed: threading.Event) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.killed = killed
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.after_kill: set[str] = set()
        self.ops_after_kill = 0
        self.slowest = 0.0

    def _op(self, path: str, action) -> None:
        after = self.killed.is_set()   # read before the call: a write that starts after the kill
        started = time.monotonic()
        action()
        self.slowest = max(self.slowest, time.monotonic() - started) if after else self.slowest
        if after:
            self.after_kill.add(path)
            self.ops_after_kill += 1

    def run(self) -> None:
        os.makedirs(f"{self.root}/d", exist_ok=True)
        i = 0
        try:
            while not self.stop.is_set():
                name = f"d/f{i:05d}"
                self._op(name, lambda: _write_file(f"{self.root}/{name}", os.urandom(3000 + i)))
                self._op("log", lambda: _append(f"{self.root}/log", b"line %d\n" % i))
                if i % 7 == 3:
                    self._op(f"d/f{i - 2:05d}", lambda: os.truncate(f"{self.root}/d/f{i - 2:05d}", 10))
                i += 1
        except OSError as exc:
            self.errors.append(f"op {i}: {exc}")


def _write_file(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def _append(path: str, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


@pytest.mark.parametrize("how", ["SIGKILL", "SIGSTOP"])   # a dead process / a hung one (no disconnect)
def test_receiver_killed_mid_stream_goes_alone_and_journals_every_path(mirror_factory, how):
    pair = mirror_factory("kill", timeout=2).start()
    killed = threading.Event()
    writer = Writer(pair.primary, killed)
    writer.start()
    try:
        wait_for(lambda: os.path.exists(f"{pair.secondary}/d/f00020"), 10, what="the stream to flow")
        if how == "SIGKILL":
            pair.kill_receiver()
        else:
            pair.receiver.send_signal(signal.SIGSTOP)
        killed.set()
        started = time.monotonic()
        wait_for(lambda: pair.status()["state"] == "ALONE", 2 + 3, what="ALONE within the timeout")
        assert time.monotonic() - started < 2 + 1.5
        status = pair.status()
        assert status["resync_needed"] is True
        assert status["alone_reason"]
        ops_at_alone = writer.ops_after_kill
        wait_for(lambda: writer.ops_after_kill > ops_at_alone + 50, 10, what="the writer to keep writing")
    finally:
        writer.stop.set()
        writer.join(30)
        pair.kill_receiver()   # SIGKILL ends a stopped process too
    assert not writer.is_alive()
    assert writer.errors == []
    assert writer.slowest < 2 + 2, f"a write stalled {writer.slowest:.1f}s"
    pair.umount()
    assert pair.mounter.returncode == 0
    recorded = journal_paths(pair)
    missing = writer.after_kill - recorded
    assert not missing, f"{len(missing)} path(s) written after the kill are not in the journal: {sorted(missing)[:10]}"
    journal = Journal(os.path.join(pair.state, "journal.db"))
    try:
        assert journal.get_state("mirror_state") == "ALONE"
        assert journal.changed_blocks("log") != []
    finally:
        journal.close()


def test_a_mount_restarted_while_alone_stays_alone(mirror_factory):
    pair = mirror_factory("restart", timeout=2).start()
    _write_file(f"{pair.primary}/before", b"replicated")
    assert os.path.exists(f"{pair.secondary}/before")
    pair.kill_receiver()
    _write_file(f"{pair.primary}/while-alone", b"missed")
    wait_for(lambda: pair.status()["state"] == "ALONE", 5, what="ALONE")
    pair.umount()
    log_size = os.path.getsize(pair.log("receiver"))
    pair.start_receiver()                          # the peer is back, same endpoint
    pair.mount()
    status = wait_for(lambda: (s := pair.status())["mounted"] and s, 5, what="the status of the new mount")
    assert status["state"] == "ALONE" and status["resync_needed"] is True
    _write_file(f"{pair.primary}/after-restart", b"still missed")
    os.mkdir(f"{pair.primary}/newdir")
    with open(f"{pair.primary}/before", "ab") as f:
        f.write(b" and changed")
        os.fsync(f.fileno())
    time.sleep(0.5)
    assert sorted(os.listdir(pair.secondary)) == ["before"]
    with open(f"{pair.secondary}/before", "rb") as f:
        assert f.read() == b"replicated"
    with open(pair.log("receiver"), "rb") as f:
        f.seek(log_size)
        assert b"session" not in f.read()           # no HELLO from the ALONE mount
    assert pair.status()["state"] == "ALONE"
    pair.umount()
    assert {"while-alone", "after-restart", "newdir", "before"} <= journal_paths(pair)


def test_async_mode_fsync_is_a_barrier(mirror_factory):
    pair = mirror_factory("async", mode="async").start()
    assert pair.status()["mode"] == "async"
    for round_ in range(3):
        path = f"r{round_}"
        chunks = [os.urandom(64 * 1024) for _ in range(48)]
        fd = os.open(f"{pair.primary}/{path}", os.O_CREAT | os.O_WRONLY, 0o644)
        try:
            for chunk in chunks:
                os.write(fd, chunk)
            os.fsync(fd)
            with open(f"{pair.secondary}/{path}", "rb") as f:   # before close(): fsync alone
                assert f.read() == b"".join(chunks), f"round {round_}: the secondary lacks fsynced bytes"
        finally:
            os.close(fd)
    for i in range(200):                              # many small async operations, then close
        _write_file(f"{pair.primary}/small{i}", b"%d" % i)
        if i % 3 == 0:
            os.rename(f"{pair.primary}/small{i}", f"{pair.primary}/moved{i}")
    pair.umount()
    assert pair.mounter.returncode == 0
    assert_same(pair)


@pytest.fixture
def tmpfs():
    """Mount small tmpfs filesystems on directories; unmount them after everything else."""
    mounted: list[str] = []

    def mount(path: str, size: str = "2m") -> None:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", path], check=True)
        mounted.append(path)

    try:
        yield mount
    finally:
        for path in reversed(mounted):
            if subprocess.run(["umount", path], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", path], capture_output=True)


def _fill(path: str, chunk: int = 256 * 1024, limit: int = 8 * 1024 * 1024) -> OSError | None:
    """Write until an error (or ``limit`` bytes); return the error."""
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        written = 0
        while written < limit:
            written += os.write(fd, os.urandom(chunk))
        return None
    except OSError as exc:
        return exc
    finally:
        os.close(fd)


def test_full_primary_gives_enospc_and_the_trees_stay_equal(tmpfs, mirror_factory):
    pair = mirror_factory("fullprim")
    tmpfs(pair.primary)
    pair.start()
    _write_file(f"{pair.primary}/small", b"fits")
    error = _fill(f"{pair.primary}/big")
    assert error is not None and error.errno == errno.ENOSPC, error
    with pytest.raises(OSError) as again:
        with open(f"{pair.primary}/small", "ab") as f:
            f.write(os.urandom(512 * 1024))
    assert again.value.errno == errno.ENOSPC
    assert pair.status()["state"] == "PRIM"         # a local refusal is not the peer's fault
    assert_same(pair)
    os.unlink(f"{pair.primary}/big")                # room again: replication carries on
    _write_file(f"{pair.primary}/after", b"room again")
    assert_same(pair)


def test_full_secondary_makes_the_primary_alone_without_an_app_error(tmpfs, mirror_factory):
    pair = mirror_factory("fullsec", timeout=2)
    tmpfs(pair.secondary)
    pair.start()
    _write_file(f"{pair.primary}/small", b"fits")
    assert os.path.exists(f"{pair.secondary}/small")
    error = _fill(f"{pair.primary}/big", limit=4 * 1024 * 1024)   # twice the secondary's room
    assert error is None, f"the application saw {error}"
    wait_for(lambda: pair.status()["state"] == "ALONE", 5, what="ALONE")
    _write_file(f"{pair.primary}/later", b"recorded")
    with open(f"{pair.primary}/big", "rb") as f:
        assert len(f.read()) == 4 * 1024 * 1024
    pair.umount()
    assert {"big", "later"} <= journal_paths(pair)
    journal = Journal(os.path.join(pair.state, "journal.db"))
    try:
        blocks = journal.changed_blocks("big")
        assert blocks is None or blocks != []
    finally:
        journal.close()
