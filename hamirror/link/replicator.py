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
from hamirror.link.pending import PendingSet
from hamirror.link.protocol import Op, Times

log = logging.getLogger(__name__)


class MirrorState(str, enum.Enum):
    PRIM = "PRIM"              # replicating to a live peer
    SYNCING = "SYNCING"        # online resync to a returning peer, live operations streamed too
    ALONE = "ALONE"            # peer gone: serving locally and recording changes
    STANDALONE = "STANDALONE"  # replication off (benchmarks, a module without a peer)


class ChangeJournal(Protocol):
    """What the replicator needs from the journal (hamirror.journal.Journal provides it)."""

    def record_paths(self, paths: Iterable[str]) -> None: ...
    def record_range(self, path: str, offset: int, length: int) -> None: ...
    def new_generation(self) -> str: ...
    def set_state(self, key: str, value: str) -> None: ...
    def get_state(self, key: str, default: str | None = None) -> str | None: ...


_STREAMING = (MirrorState.PRIM, MirrorState.SYNCING)
STATE_KEY = "mirror_state"
REASON_KEY = "mirror_alone_reason"


class _Transaction:
    """One operation between the local apply and the peer's acknowledgement."""

    __slots__ = ("_replicator", "changes", "ticket", "barrier", "deferred", "held")

    def __init__(self, replicator: "Replicator", changes: tuple[Change, ...]) -> None:
        self._replicator = replicator
        self.changes = changes
        self.ticket: Ticket | None = None
        self.barrier = False
        self.deferred = False
        self.held = False   # SYNCING: touches a path the resync has not reached; recorded, not sent

    def send(self, op: Op, ints: tuple[int, ...] = (), strs: tuple[bytes, ...] = (),
             times: tuple[Times, ...] = (), data: bytes | None = None, barrier: bool = False) -> None:
        """Queue the operation for the peer; ``barrier`` waits for it even in async mode (fsync)."""
        replicator = self._replicator
        client = replicator.client
        if replicator.state in _STREAMING and client is not None and not self.held:
            self.ticket = client.submit(op, ints, strs, times, data, self.changes)
            self.barrier = barrier
            if self.ticket.done and self.ticket.error is not None:
                # The link was lost before this was queued, so on_lost never saw it: record it
                # here, before the call returns (the state may not say ALONE yet).
                self._replicator.record(self.changes)

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
        self.lock = threading.Lock()          # orders local applies with link sends
        self._state_lock = threading.Lock()   # orders state changes with journal records/clears
        self.alone_reason = ""
        self.alone_since: float | None = None
        self.pending = PendingSet()           # SYNCING: paths the resync has not reached yet
        if client is None:
            self.state = MirrorState.STANDALONE
        else:
            self.state = MirrorState.PRIM
            client.on_lost = self._peer_lost

    def start_alone(self, reason: str, new_generation: bool = True) -> None:
        """Start without a peer (failover): a new generation, then everything is recorded."""
        self._go_alone(reason, (), new_generation=new_generation)

    def declare_lost(self, reason: str) -> None:
        """The agent saw the peer die: stop waiting for the ack timeout."""
        if self.client is not None and self.state in _STREAMING:
            self.client.abort(reason)

    # online resync -----------------------------------------------------------------------------

    def begin_sync(self, client: LinkClient, pending: Iterable[str]) -> None:
        """Stream to a returning peer again while the resync copies ``pending`` paths."""
        with self.lock, self._state_lock:
            self.client = client
            client.on_lost = self._peer_lost
            self.pending = PendingSet(pending)
            self.state = MirrorState.SYNCING
        if self.on_state is not None:
            self.on_state(self.state, "resync started")

    def finish_sync(self) -> bool:
        """Called once the peer acknowledged RESYNC_DONE: clear the changed set, back to PRIM."""
        with self._state_lock:
            if self.state is not MirrorState.SYNCING:
                return False
            if self.journal is not None:
                self.journal.clear_changes()
                self.journal.set_state(STATE_KEY, MirrorState.PRIM.value)
            self.state = MirrorState.PRIM
            self.alone_reason = ""
            self.alone_since = None
        if self.on_state is not None:
            self.on_state(self.state, "resync finished")
        return True

    # the FUSE side ---------------------------------------------------------------------------

    def change(self, changes: tuple[Change, ...]) -> "_Change":
        return _Change(self, changes)

    # peer loss -------------------------------------------------------------------------------

    def _peer_lost(self, reason: str, failed: list[Ticket]) -> None:
        """Called by the link's I/O thread before any waiter of ``failed`` wakes."""
        self._go_alone(reason, flatten_changes(failed))

    def _go_alone(self, reason: str, changes: list[Change] | tuple, new_generation: bool | None = None) -> None:
        with self._state_lock:
            first = self.state is not MirrorState.ALONE
            if new_generation is None:
                # Leaving a live mirror starts a new generation; a failed resync does not (the
                # peer never adopted our history, and our changed set still covers it).
                new_generation = self.state is MirrorState.PRIM
            if self.journal is not None:
                if new_generation:
                    self.journal.new_generation()
                self.record(changes)
                self.journal.set_state(STATE_KEY, MirrorState.ALONE.value)
                self.journal.set_state(REASON_KEY, reason)
            self.state = MirrorState.ALONE
            self.pending = PendingSet()
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
            elif len(change) == 2:       # (path, WHOLE): content replaced without a write
                self.journal.record_whole(change[0])
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
        tx = self._tx
        state = replicator.state
        if state is MirrorState.SYNCING and any(replicator.pending.held(c[0]) for c in tx.changes):
            tx.held = True
        if state is MirrorState.ALONE or tx.held:
            try:
                replicator.record(tx.changes)   # write-ahead: recorded before applied
                if tx.held:
                    replicator.pending.update(c[0] for c in tx.changes)
            except BaseException:
                replicator.lock.release()
                raise
        return tx

    def __exit__(self, exc_type, exc, tb) -> None:
        replicator = self._replicator
        replicator.lock.release()
        tx = self._tx
        if exc_type is None and not tx.deferred and (replicator.sync or tx.barrier):
            tx.wait()

