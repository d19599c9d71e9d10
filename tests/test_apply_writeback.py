"""The secondary starts writing large writes back at once (sync_file_range), small ones not.

Streaming writes on the replica then reach its disk while the primary goes on, so the primary's
next fsync (which waits for the secondary's) finds little left to write. Small writes (a database
page rewritten again and again) stay in the page cache until their fsync, as on the primary.
"""

from __future__ import annotations

import os
import stat

from hamirror.fs import syscalls
from hamirror.link import apply
from hamirror.link.apply import EARLY_WRITEBACK_MIN, Applier
from hamirror.link.protocol import Op, decode, encode


def _message(op: Op, ints: tuple, path: bytes, data: bytes | None = None):
    frames = [encode(op, 1, 1, ints, (path,))] + ([data] if data is not None else [])
    return decode(frames)


def test_large_writes_start_their_writeback_small_ones_do_not(tmp_path, monkeypatch):
    started: list[tuple[int, int]] = []
    real = syscalls.start_writeback

    def spy(fd: int, offset: int, length: int) -> None:
        started.append((offset, length))
        real(fd, offset, length)          # the real call still runs: it must accept these ranges

    monkeypatch.setattr(apply, "start_writeback", spy)
    applier = Applier(str(tmp_path))
    try:
        applier.apply(_message(Op.CREATE, (stat.S_IFREG | 0o644, os.getuid(), os.getgid(), 0), b"f"))
        big = os.urandom(EARLY_WRITEBACK_MIN)
        applier.apply(_message(Op.WRITE, (0,), b"f", b"small"))
        applier.apply(_message(Op.WRITE, (4096,), b"f", big))
        applier.apply(_message(Op.WRITE, (4096 + len(big),), b"f", big[:-1]))
    finally:
        applier.close()
    assert started == [(4096, len(big))]
    with open(tmp_path / "f", "rb") as f:
        assert f.read(5) == b"small"
        f.seek(4096)
        assert f.read() == big + big[:-1]
