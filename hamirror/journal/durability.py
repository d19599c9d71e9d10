"""Durability epochs: when a change applied to a directory is known to be on the disk.

Why: an acknowledgement means "applied" (in the page cache), and a power loss takes the page
cache. The receiver's unsynced log and the primary's activity log keep a path until its data is
durable; they learn that from here. A change is stamped with :meth:`Epochs.stamp` *after* it was
applied. :meth:`Epochs.sync` opens a new epoch, then syncs the filesystem: once it returns, every
change stamped with an older epoch is on the disk (``syncfs`` writes back all that was dirty when
it was called). :class:`Syncer` calls it in the background.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Callable

from hamirror.syscalls import syncfs

log = logging.getLogger(__name__)

DEFAULT_SYNC_INTERVAL = 5.0   # seconds between background syncs while something recorded is not durable
INTERVAL_ENV = "HAMIRROR_SYNC_INTERVAL"


def sync_interval(env: dict[str, str] | os._Environ = os.environ) -> float:
    """The background sync interval: ``$HAMIRROR_SYNC_INTERVAL`` seconds if set and valid (an
    operator's trade of resync work after a crash against disk writes; tests that need unsynced
    data to stay unsynced for a while), else 5 s."""
    raw = env.get(INTERVAL_ENV)
    if raw is None:
        return DEFAULT_SYNC_INTERVAL
    try:
        value = float(raw)
        if 0.1 <= value <= 3600:
            return value
    except ValueError:
        pass
    log.warning("$%s=%r is not a number of seconds in [0.1, 3600]: using %g s", INTERVAL_ENV, raw,
                DEFAULT_SYNC_INTERVAL)
    return DEFAULT_SYNC_INTERVAL


class Epochs:
    """The epoch counter of one filesystem (reached through ``fd``)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()   # one sync at a time, so ``durable`` only grows
        self.current = 1                     # stamp of a change applied now
        self.durable = 0                     # every stamp <= this is on the disk

    def stamp(self) -> int:
        """The stamp of a change that was just applied."""
        return self.current

    def is_durable(self, stamp: int) -> bool:
        return stamp <= self.durable

    def sync(self) -> int:
        """Close the current epoch and make it durable; the epoch closed (raises OSError)."""
        with self._sync_lock:
            with self._lock:
                closed = self.current
                self.current = closed + 1
            syncfs(self.fd)
            self.durable = closed
            return closed


class Syncer:
    """Calls ``epochs.sync()`` then ``on_durable(epoch)`` every ``interval`` while ``wanted()``
    says something recorded is not durable, or at once after :meth:`kick`."""

    def __init__(self, epochs: Epochs, wanted: Callable[[], bool], on_durable: Callable[[int], None],
                 interval: float | None = None, name: str = "durability") -> None:
        self.epochs = epochs
        self.wanted = wanted
        self.on_durable = on_durable
        self.interval = sync_interval() if interval is None else interval
        self.syncs = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def kick(self) -> None:
        """Sync now (a bounded record is full)."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            if self.wanted():
                self.sync_once()

    def sync_once(self) -> bool:
        """One sync and its callback; False (logged) when the sync failed: the record stays."""
        try:
            epoch = self.epochs.sync()
        except OSError as exc:
            log.warning("sync of the replicated directory failed: %s (unsynced paths stay recorded)", exc)
            return False
        self.syncs += 1
        self.on_durable(epoch)
        return True
