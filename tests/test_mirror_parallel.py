"""Writes from many threads at once: data writes share the ordering lock (each holding its inode's
lock), namespace changes take it whole, and both copies still end equal, byte for byte, whatever
the interleaving. (Two names of one file written at once are left out: each such write waits up to
0.5 s for the other name's cache invalidation, see docs/architecture.md.)
"""

from __future__ import annotations

import os
import random
import threading

import pytest

from tests.conftest import needs_root
from tests.test_mirror_tools import assert_same

pytestmark = needs_root


def _overlapping_writer(path: str, seed: int, errors: list) -> None:
    rng = random.Random(seed)
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            for _ in range(60):
                size = rng.choice((4096, 65536, 300_000))
                os.pwrite(fd, bytes([rng.randrange(256)]) * size, rng.randrange(0, 1_000_000))
        finally:
            os.close(fd)
    except OSError as exc:   # pragma: no cover - reported by the assertion below
        errors.append(exc)


def _own_files(root: str, n: int, errors: list) -> None:
    try:
        for i in range(40):
            with open(os.path.join(root, f"own{n}-{i}"), "wb") as f:
                f.write(os.urandom(20_000 + i))
    except OSError as exc:   # pragma: no cover
        errors.append(exc)


def _renamer(root: str, errors: list) -> None:
    try:
        os.mkdir(os.path.join(root, "moving"))
        for i in range(60):
            with open(os.path.join(root, "moving", "f"), "wb") as f:
                f.write(b"%d" % i)
            os.rename(os.path.join(root, "moving"), os.path.join(root, "moved"))
            os.rename(os.path.join(root, "moved"), os.path.join(root, "moving"))
    except OSError as exc:   # pragma: no cover
        errors.append(exc)


@pytest.mark.parametrize("mode", ["sync", "barrier"])
def test_concurrent_writers_leave_equal_copies(mirror_factory, mode):
    pair = mirror_factory(mode, mode=mode).start()
    errors: list = []
    for n in range(4):
        with open(os.path.join(pair.primary, f"big{n}"), "wb") as f:
            f.truncate(1_300_000)
    threads = [threading.Thread(target=_overlapping_writer, args=(os.path.join(pair.primary, f"big{n // 2}"), n, errors))
               for n in range(8)]
    threads += [threading.Thread(target=_own_files, args=(pair.primary, n, errors)) for n in range(3)]
    threads.append(threading.Thread(target=_renamer, args=(pair.primary, errors)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    pair.umount()   # every write back and acknowledged; then compare the two directories themselves
    assert_same(pair)
