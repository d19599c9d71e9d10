"""The mount's FUSE threads keep their Python thread state from one request to the next.

The request loop in this process (libfuse's own threads calling into Python, native/hm_fuse_py.c),
on an ``Interception`` whose chmod notes whether its thread's ``threading.local`` still holds what
an earlier request on the same thread put there. A thread state made and dropped around every
request (as ctypes did for the first engine) costs a gettid, a 16 KiB mmap and munmap and the
state's setup each time, and no request would ever find its local.
"""

from __future__ import annotations

import os
import threading

from hamirror.fs import lowlevel
from hamirror.fs.mount import MAX_THREADS
from hamirror.fs.operations import Interception
from hamirror.mirror.replicator import Replicator
from tests.conftest import needs_root
from tests.test_lowlevel import in_process

pytestmark = needs_root
REQUESTS = 100


class NotingChmod(Interception):
    local = threading.local()
    requests = kept = 0

    def chmod(self, path: str, mode: int) -> int:
        NotingChmod.requests += 1
        if getattr(self.local, "seen", False):
            NotingChmod.kept += 1
        self.local.seen = True
        return super().chmod(path, mode)


def test_fuse_threads_keep_their_python_state(tmp_path) -> None:
    mnt = str(tmp_path / "mnt")
    with in_process(mnt, lambda root_fd: NotingChmod(root_fd, Replicator(None, None), "sync",
                                                     context=lowlevel.context()), writeback=False):
        open(f"{mnt}/f", "wb").close()
        for i in range(REQUESTS):
            os.chmod(f"{mnt}/f", 0o600 | (i & 0o7))
    assert NotingChmod.requests == REQUESTS
    # At most one request per worker thread starts on a fresh state; every other finds its own.
    assert NotingChmod.kept >= REQUESTS - MAX_THREADS, (NotingChmod.kept, REQUESTS)
