"""Interception.flush_needed: which closes the native engine hands to Python (a module of its
own: one engine per process, and tests/test_lowlevel.py keeps one mounted for its whole module)."""

from __future__ import annotations

import os

import pytest

from hamirror.fs import lowlevel
from hamirror.fs.operations import Interception
from hamirror.mirror.replicator import Replicator
from tests.conftest import needs_root
from tests.test_lowlevel import in_process

pytestmark = needs_root


class CountedFlush(Interception):
    """Counts the closes that reach Python."""

    flushes = 0

    def flush(self, path, fh):
        self.flushes += 1
        return super().flush(path, fh)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_close_reaches_python_only_where_flush_has_work(tmp_path, mode):
    """Sync mode: every call already waited for the peer, so close() has nothing to do and the
    engine leaves it in the kernel (Interception.flush_needed). Async mode: the close of a handle
    that changed something is a barrier, so each close is Python's to answer."""
    made: list[CountedFlush] = []

    def make(root_fd: int) -> CountedFlush:
        made.append(CountedFlush(root_fd, Replicator(None, None), mode, context=lowlevel.context()))
        return made[0]

    mnt = str(tmp_path / "mnt")
    with in_process(mnt, make, writeback=False) as lower:
        for i in range(3):
            with open(f"{mnt}/f{i}", "wb") as f:
                f.write(b"x")
        assert sorted(os.listdir(lower)) == ["f0", "f1", "f2"]
    assert made[0].flush_needed is (mode != "sync")
    assert made[0].flushes == 0 if mode == "sync" else made[0].flushes >= 3
