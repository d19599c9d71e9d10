"""When the secondary's copy reaches its disk.

Large writes start their writeback (sync_file_range) once their reply is sent, small ones not:
streaming writes on the replica then reach its disk while the primary goes on, so the primary's
next fsync (which waits for the secondary's) finds little left to write; small writes (a database
page rewritten again and again) stay in the page cache until their fsync, as on the primary,
unless their file was synced before (a log that commits: tests/test_native_apply.py, after the
write's reply). A WRITE_FSYNC (a commit in one message) syncs after the primary's times are
applied, as a WRITE then an FSYNC would.
"""

from __future__ import annotations

import os
import stat

from hamirror import syscalls
from hamirror.link import apply
from hamirror.link.apply import EARLY_WRITEBACK_MIN, Applier
from hamirror.link.protocol import Op, decode, encode


def _message(op: Op, ints: tuple, path: bytes, data: bytes | None = None, times: tuple = ()):
    frames = [encode(op, 1, 1, ints, (path,), times)] + ([data] if data is not None else [])
    return decode(frames)


def test_large_writes_start_their_writeback_small_ones_do_not(tmp_path, monkeypatch):
    started: list[tuple[int, int]] = []
    real = syscalls.start_writeback

    def spy(fd: int, offset: int, length: int) -> None:
        started.append((offset, length))
        real(fd, offset, length)          # the real call still runs: it must accept these ranges

    monkeypatch.setattr(apply, "start_writeback", spy)
    applier = Applier(str(tmp_path), use_native=False)   # spies on the Python path (native: test_native_apply)
    try:
        applier.apply(_message(Op.CREATE, (stat.S_IFREG | 0o644, os.getuid(), os.getgid(), 0), b"f"))
        big = os.urandom(EARLY_WRITEBACK_MIN)
        applier.apply(_message(Op.WRITE, (0,), b"f", b"small"))
        applier.apply(_message(Op.WRITE, (4096,), b"f", big))
        assert started == []   # after the reply: the receiver calls start_writeback
        applier.start_writeback()
        applier.apply(_message(Op.WRITE, (4096 + len(big),), b"f", big[:-1]))
        applier.start_writeback()
    finally:
        applier.close()
    assert started == [(4096, len(big))]
    with open(tmp_path / "f", "rb") as f:
        assert f.read(5) == b"small"
        f.seek(4096)
        assert f.read() == big + big[:-1]


def test_a_commit_message_syncs_the_data_and_the_times(tmp_path, monkeypatch):
    mtime = 1_700_000_000_123_456_789
    synced: list[tuple[str, int, bytes]] = []
    for name in ("fsync", "fdatasync"):
        real = getattr(os, name)

        def spy(fd: int, name: str = name, real=real) -> None:
            with open(f"/proc/self/fd/{fd}", "rb") as f:
                content = f.read()
            synced.append((name, os.fstat(fd).st_mtime_ns, content))
            real(fd)

        monkeypatch.setattr(os, name, spy)
    applier = Applier(str(tmp_path), use_native=False)   # spies on the Python path (native: test_native_apply)
    try:
        applier.apply(_message(Op.CREATE, (stat.S_IFREG | 0o644, os.getuid(), os.getgid(), 0), b"wal"))
        applier.apply(_message(Op.WRITE_FSYNC, (0, 1), b"wal", b"commit", ((b"wal", mtime, mtime),)))
        applier.apply(_message(Op.WRITE_FSYNC, (6, 0), b"wal", b"+more", ((b"wal", mtime + 1, mtime + 1),)))
    finally:
        applier.close()
    assert synced == [("fdatasync", mtime, b"commit"), ("fsync", mtime + 1, b"commit+more")]
