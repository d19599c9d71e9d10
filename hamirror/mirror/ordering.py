"""The ordering lock: the peer applies changes in the order they were applied here.

Every change is applied locally and queued for the peer under this lock, so the two orders agree.
Most operations take it whole (``with lock:``): namespace changes, metadata, truncation, and the
online resync's copies, which must see no change in the middle. Data writes only *share* it,
each holding the lock of the inode it writes (``acquire(key=inode)``): writes to different files
run their local disk writes at once, while the writes of one file, and everything that takes the
lock whole, keep one order on both sides. A writer that waits for the whole lock stops new
sharers, so a rename is never starved by a stream of writes.
"""

from __future__ import annotations

import threading
from typing import Hashable


class OrderLock:
    """See the module docstring. The state is guarded by a plain mutex; the condition is waited
    on, and notified, only when a caller has to wait (the common uncontended acquire and release
    run no Python-level Condition method)."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._whole = False
        self._waiting = 0                      # callers waiting for the whole lock
        self._sleeping = 0                     # callers inside _cond.wait(), whatever they wait for
        self._sharers = 0
        self._keys: dict[Hashable, list] = {}  # key -> [lock, users]

    def _sleep(self) -> None:
        """(``_mutex`` held) Wait for a release that may let us in."""
        self._sleeping += 1
        try:
            self._cond.wait()
        finally:
            self._sleeping -= 1

    def acquire(self, key: Hashable | None = None) -> None:
        """The whole lock (``key`` None), or a share of it plus ``key``'s own lock."""
        with self._mutex:
            if key is None:
                self._waiting += 1
                try:
                    while self._whole or self._sharers:
                        self._sleep()
                finally:
                    self._waiting -= 1
                self._whole = True
                return
            while self._whole or self._waiting:
                self._sleep()
            self._sharers += 1
            entry = self._keys.get(key)
            if entry is None:
                entry = self._keys[key] = [threading.Lock(), 0]
            entry[1] += 1
        entry[0].acquire()   # outside: another writer of the same inode may hold it

    def release(self, key: Hashable | None = None) -> None:
        with self._mutex:
            if key is None:
                self._whole = False
                if self._sleeping:
                    self._cond.notify_all()
                return
            entry = self._keys[key]
            entry[0].release()
            entry[1] -= 1
            if not entry[1]:
                del self._keys[key]
            self._sharers -= 1
            if not self._sharers and self._sleeping:
                self._cond.notify_all()

    def __enter__(self) -> "OrderLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
