"""Replication semantics for the interception layer: sync, async, and ALONE.

Each mutating FUSE operation runs inside :meth:`Replicator.change`::

    with replicator.change(changes) as tx:   # ordering lock held
        ...apply locally...
        tx.send(Op.WRITE, ...)               # queued in the same order as the local apply
    # lock released; in sync mode we now wait for the peer's acknowledgement

- **sync**: the call returns once the peer applied the operation (fsync: once both fsynced).
- **async**: it returns after the local apply; at most ``window`` operations wait unacknowledged.
- **ALONE**: the peer stopped answering (or was never there). The call never fails because of
  that: the local apply stands, and every changed path/range is recorded in the journal *before*
  the call returns (and, once ALONE, before the local apply), so a later resync knows what to
  copy. ALONE is persisted; the mount never resumes streaming over a stale replica by itself.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from typing import Callable, Iterable, Protocol

from hamirror.link.client import Change, LinkClient, Ticket, flatten_changes
from hamirror.link.protocol import Op, Times

log = logging.getLogger(__name__)


class MirrorState(str, enum.Enum):
    PRIM = "PRIM"              # replicating to a live peer
    ALONE = "ALONE"            # peer gone: serving locally and recording changes
    STANDALONE = "STANDALONE"  # replication off (benchmarks, a module without a peer)


class ChangeJournal(Protocol):
    """What the replicator needs from the journal (hamirror.journal.Journal provides it)."""

    def record_paths(self, paths: Iterable[str]) -> None: ...
    def record_range(self, path: str, offset: int, length: int) -> None: ...
    def set_state(self, key: str, value: str) -> None: ...
    def get_state(self, key: str, default: str | None = None) -> str | None: ...


STATE_KEY = "mirror_state"
REASON_KEY = "mirror_alone_reason"


class _Transaction:
    """One operation between the local apply and the peer's acknowledgement."""

    __slots__ = ("_replicator", "changes", "ticket", "barrier", "deferred")

    def __init__(self, replicator: "Replicator", changes: tuple[Change, ...]) -> None:
        self._replicator = replicator
        self.changes = changes
        self.ticket: Ticket | None = None
        self.barrier = False
        self.deferred = False

    def send(self, op: Op, ints: tuple[int, ...] = (), strs: tuple[bytes, ...] = (),
             times: tuple[Times, ...] = (), data: bytes | None = None, barrier: bool = False) -> None:
        """Queue the operation for the peer; ``barrier`` waits for it even in async mode (fsync)."""
        client = self._replicator.client
        if self._replicator.state is MirrorState.PRIM and client is not None:
            self.ticket = client.submit(op, ints, strs, times, data, self.changes)
            self.barrier = barrier

    def defer_wait(self) -> None:
        """Leave the block without waiting; the caller overlaps local work, then calls wait()."""
        self.deferred = True

    def wait(self) -> None:
        if self.ticket is not None:
            self.ticket.wait()   # peer loss completes the ticket too, after recording its changes


class Replicator:
    """Orders local applies with link sends and turns peer loss into ALONE + journal records."""

    def __init__(self, client: LinkClient | None, journal: ChangeJournal | None, *, sync: bool = True,
                 on_state: Callable[[MirrorState, str], None] | None = None) -> None:
        self.client = client
        self.journal = journal
        self.sync = sync
        self.on_state = on_state
        self.lock = threading.Lock()
        self.alone_reason = ""
        self.alone_since: float | None = None
        if client is None:
            self.state = MirrorState.STANDALONE
        else:
            self.state = MirrorState.PRIM
            client.on_lost = self._peer_lost

    def start_alone(self, reason: str) -> None:
        """Start (or restart) without a peer: everything from now on is recorded."""
        self._go_alone(reason, ())

    # the FUSE side ---------------------------------------------------------------------------

    def change(self, changes: tuple[Change, ...]) -> "_Change":
        return _Change(self, changes)

    # peer loss -------------------------------------------------------------------------------

    def _peer_lost(self, reason: str, failed: list[Ticket]) -> None:
        """Called by the link's I/O thread before any waiter of ``failed`` wakes."""
        self._go_alone(reason, flatten_changes(failed))

    def _go_alone(self, reason: str, changes: list[Change] | tuple) -> None:
        if self.journal is not None:
            self.record(changes)
            self.journal.set_state(STATE_KEY, MirrorState.ALONE.value)
            self.journal.set_state(REASON_KEY, reason)
        first = self.state is not MirrorState.ALONE
        self.state = MirrorState.ALONE
        if first:
            self.alone_reason = reason
            self.alone_since = time.time()
            log.warning("mirror ALONE: %s", reason)
            if self.on_state is not None:
                self.on_state(self.state, reason)

    def record(self, changes: Iterable[Change]) -> None:
        """Durably record what the peer does not have (paths, and byte ranges of writes)."""
        if self.journal is None:
            return
        paths = []
        for change in changes:
            if len(change) == 3:
                self.journal.record_range(*change)
            else:
                paths.append(change[0])
        if paths:
            self.journal.record_paths(paths)


class _Change:
    """Context manager behind :meth:`Replicator.change` (see the module docstring)."""

    __slots__ = ("_replicator", "_tx")

    def __init__(self, replicator: Replicator, changes: tuple[Change, ...]) -> None:
        self._replicator = replicator
        self._tx = _Transaction(replicator, changes)

    def __enter__(self) -> _Transaction:
        replicator = self._replicator
        replicator.lock.acquire()
        if replicator.state is MirrorState.ALONE:
            try:
                replicator.record(self._tx.changes)   # write-ahead: recorded before applied
            except BaseException:
                replicator.lock.release()
                raise
        return self._tx

    def __exit__(self, exc_type, exc, tb) -> None:
        replicator = self._replicator
        replicator.lock.release()
        tx = self._tx
        if exc_type is None and not tx.deferred and (replicator.sync or tx.barrier):
            tx.wait()

