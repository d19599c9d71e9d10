"""The mount's FUSE threads keep their Python thread state from one request to the next.

A real FUSE mount in this process (libfuse's own threads calling into Python through ctypes),
with a filesystem that only answers lookups: each lookup notes whether its thread's
``threading.local`` still holds what an earlier request on the same thread put there. Without
the kept state, ctypes deletes it after every callback and no request ever finds it.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import threading

import mfusepy

from hamirror.fs.highlevel import _Fuse
from tests.mirror_fixtures import is_fuse_mounted, wait_for


class _Lookups(mfusepy.Operations):
    use_ns = True

    def __init__(self) -> None:
        self.local = threading.local()
        self.requests = 0
        self.kept = 0

    def getattr(self, path: str, fh=None) -> dict:
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2}
        self.requests += 1
        if getattr(self.local, "seen", False):
            self.kept += 1
        self.local.seen = True
        raise OSError(errno.ENOENT, "")


def test_fuse_threads_keep_their_python_state(tmp_path) -> None:
    ops = _Lookups()
    mnt = str(tmp_path / "mnt")
    os.mkdir(mnt)
    runner = threading.Thread(target=_Fuse, args=(ops, mnt), daemon=True,
                              kwargs={"foreground": True, "max_threads": 2, "max_idle_threads": 2})
    runner.start()
    try:
        wait_for(lambda: is_fuse_mounted(mnt), 10, what="the mount")
        for i in range(40):
            assert not os.path.exists(os.path.join(mnt, f"missing-{i}"))
    finally:
        subprocess.run(["fusermount3", "-u", mnt], capture_output=True)
        runner.join(10)
    assert ops.requests >= 40
    # At most max_threads requests start on a fresh thread; every other one finds its state.
    assert ops.kept >= ops.requests - 2, (ops.kept, ops.requests)
