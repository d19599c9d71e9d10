"""Barrier mode: the kernel's own mtime (writeback cache), kept by the native engine from the
kernel's SETATTR until the next close, full fsync, setattr or release of the file
(native/hm_setattr.c), and a close's release answered without Python. A module of its own: one
engine per process (tests/test_lowlevel.py keeps one mounted for its whole module)."""

from __future__ import annotations

import collections
import os

from hamirror.fs import lowlevel
from hamirror.fs.operations import Interception
from hamirror.mirror.replicator import Replicator
from tests.conftest import needs_root
from tests.test_lowlevel import in_process
from tests.test_mirror_tools import settled

pytestmark = needs_root


class Counted(Interception):
    """Counts the calls that reach Python."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls: collections.Counter = collections.Counter()

    def utimens(self, path, times=None):
        self.calls["utimens"] += 1
        return super().utimens(path, times)

    def kernel_mtime(self, path, fh, sec, nsec):
        self.calls["kernel_mtime"] += 1
        return super().kernel_mtime(path, fh, sec, nsec)

    def release(self, path, fh):
        self.calls["release"] += 1
        return super().release(path, fh)


def test_the_kernels_mtime_and_the_release_stay_out_of_python_until_the_close(tmp_path):
    """The SETATTR carrying the kernel's mtime is answered in C, its time applied by the close
    that follows, once per close; the stored file then has the time the application sees; no
    RELEASE reaches Python. Each file: write, fdatasync, write, close."""
    made: list[Counted] = []

    def make(root_fd: int) -> Counted:
        made.append(Counted(root_fd, Replicator(None, None), "barrier", context=lowlevel.context()))
        return made[0]

    mnt = str(tmp_path / "mnt")
    with in_process(mnt, make, writeback=True) as lower:
        seen = {}
        for i in range(3):
            with open(f"{mnt}/f{i}", "wb") as f:
                f.write(b"x" * 5000)
                f.flush()
                os.fdatasync(f.fileno())
                f.write(b"y")
            seen[f"f{i}"] = os.stat(f"{mnt}/f{i}").st_mtime_ns
        stored = {name: os.stat(f"{lower}/{name}").st_mtime_ns for name in seen}
    assert stored == seen
    assert made[0].calls["utimens"] == 0 and made[0].calls["release"] == 0
    assert made[0].calls["kernel_mtime"] == 3


def test_the_peer_has_the_kernels_mtime_after_a_close_or_fsync_and_a_later_utime_wins(mirror_factory):
    """On a real pair: after a full fsync and after a close the secondary has the mtime the
    application sees; a time set by utime after the kernel's deferred one is the one both keep
    (the deferred one is applied before it); a file unlinked while a time is deferred is fine."""
    pair = mirror_factory("kmtime", mode="barrier").start()
    a, b, c = (f"{pair.primary}/{n}" for n in "abc")

    def secondary_mtime(name: str) -> int | None:
        try:
            return os.stat(f"{pair.secondary}/{name}").st_mtime_ns
        except FileNotFoundError:
            return None

    fd = os.open(a, os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, b"1" * 100)
    os.fdatasync(fd)
    os.write(fd, b"2" * 100)
    os.fsync(fd)
    assert secondary_mtime("a") == os.stat(a).st_mtime_ns
    os.write(fd, b"3" * 100)
    os.close(fd)
    assert secondary_mtime("a") == os.stat(a).st_mtime_ns

    fd = os.open(b, os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, b"x" * 100)
    os.fdatasync(fd)   # the kernel's mtime is deferred
    os.utime(b, ns=(1_010_000_000, 2_020_000_000))   # barrier mode keeps times to 10 ms
    os.close(fd)
    assert os.stat(b).st_mtime_ns == 2_020_000_000
    assert secondary_mtime("b") == 2_020_000_000

    fd = os.open(c, os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, b"c" * 100)
    os.fdatasync(fd)
    os.unlink(c)
    os.write(fd, b"d")
    os.close(fd)
    assert settled(lambda: [secondary_mtime("c")]) == [None]
    with open(f"{pair.primary}/d", "wb") as f:   # the mount still serves: a file after all this
        f.write(b"d")
    assert secondary_mtime("d") == os.stat(f"{pair.primary}/d").st_mtime_ns
