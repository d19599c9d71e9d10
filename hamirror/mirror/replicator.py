"""Replication semantics for the interception layer: sync, barrier, async, and ALONE.

Each mutating FUSE operation runs inside :meth:`Replicator.change`::

    with replicator.change(changes) as tx:   # ordering lock held
        ...apply locally...
        tx.send(Op.WRITE, ...)               # queued in the same order as the local apply
    # lock released; in sync mode we now wait for the peer's acknowledgement

- **sync**: the call returns once the peer applied the operation (fsync: once both fsynced).
- **barrier** and **async**: it returns after the local apply; at most ``window`` operations wait
  unacknowledged. A barrier (:meth:`Replicator.settle`, or ``send(..., barrier=True)``) returns
  once the peer applied everything before it: fsync, and close in the modes that promise it.
- **ALONE**: the peer stopped answering (or was never there). The local apply stands, and every
  changed path/range is recorded in the journal *before* the call returns (and, once ALONE,
  before the local apply), so a later resync knows what to copy. ALONE is persisted; the mount
  never resumes streaming over a stale replica by itself.
- **FENCED** (``fence=True``, what the agent runs): when the peer stops acknowledging, the mount
  does *not* go ALONE on its own. What the peer missed is recorded, and every mutating call stays
  blocked (not failed, not acknowledged) until the agent, which knows whether the peer may be
  primary now, says :meth:`Replicator.grant_alone` (the calls then succeed, ALONE) or
  :meth:`Replicator.refuse` (they fail with EIO: REFUSED, the node is stepping down). With no
  verdict within ``fence_timeout`` the mount refuses by itself: a frozen or dead agent never
  turns into acknowledged writes that the other node does not have (DRBD's
  ``fencing resource-and-stonith``, design section 2).
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from typing import Callable, Iterable, Protocol, Sequence

from hamirror.link.client import SUBTREE, WHOLE, Change, LinkClient, Ticket, flatten_changes
from hamirror.link.protocol import PING_DELEGATE, PING_SYNC, Op, Times, offers_delegation
from hamirror.mirror import record
from hamirror.mirror.ordering import OrderLock
from hamirror.mirror.pending import PendingSet
from hamirror.mirror.states import BLOCKED as _BLOCKED
from hamirror.mirror.states import SHARING as _SHARING
from hamirror.mirror.states import STREAMING as _STREAMING
from hamirror.mirror.states import MirrorState, is_allowed

log = logging.getLogger(__name__)


class ActivityRecorder(Protocol):
    """What the replicator needs from the activity log (hamirror.journal.activity provides it)."""

    peer: Callable[[Ticket], bool] | None

    def enter(self, paths: Iterable[str], new: Iterable[str] = (),
              moved: Iterable[tuple[str, str]] = ()) -> Sequence[str]: ...
    def leave(self, paths: Iterable[str], ticket: Ticket | None, carried: Iterable[str] = ()) -> None: ...
    def not_on_peer(self) -> list[str]: ...
    def subtrees_not_on_peer(self) -> list[str]: ...
    def recorded(self) -> None: ...


class ChangeJournal(Protocol):
    """What the replicator needs from the journal (hamirror.journal.Journal provides it)."""

    def record_batch(self, paths: Iterable[str] = (), ranges: Iterable[tuple[str, int, int]] = (),
                     wholes: Iterable[str] = (), subtrees: Iterable[str] = ()) -> None: ...
    def new_generation(self) -> str: ...
    def set_state(self, key: str, value: str) -> None: ...
    def get_state(self, key: str, default: str | None = None) -> str | None: ...


class Refused(OSError):
    """A mutating call while the mount is REFUSED: the application sees EIO, nothing acknowledged."""

    def __init__(self, reason: str) -> None:
        super().__init__(errno.EIO, f"replication fenced: {reason}")


class _Transaction:
    """One operation between the local apply and the peer's acknowledgement."""

    __slots__ = ("_replicator", "changes", "ticket", "client", "barrier", "deferred", "held", "unsent", "logged",
                 "carried")

    def __init__(self, replicator: "Replicator", changes: tuple[Change, ...]) -> None:
        self._replicator = replicator
        self.changes = changes
        self.ticket: Ticket | None = None
        self.client: LinkClient | None = None
        self.barrier = False
        self.deferred = False
        self.held = False   # SYNCING: touches a path the resync has not reached; recorded, not sent
        self.unsent = False  # the link was lost before this was queued: it waits for the verdict
        self.logged = False  # its paths are in the activity log (streaming): leave it at the end
        self.carried: Sequence[str] = ()   # hot keys a directory rename entered under its destination

    def send(self, op: Op, ints: tuple[int, ...] = (), strs: tuple[bytes, ...] = (),
             times: tuple[Times, ...] = (), data: bytes | None = None, barrier: bool = False,
             hold: bool = False) -> None:
        """Queue the operation for the peer; ``barrier`` waits for it even in async mode (fsync);
        ``hold`` lets a UTIMENS of the same path that follows travel in it (LinkClient.submit)."""
        replicator = self._replicator
        client = replicator.client
        if replicator.state in _STREAMING and client is not None and not self.held:
            self.ticket = client.submit(op, ints, strs, times, data, self.changes, hold=hold)
            self.client = client
            self.barrier = barrier
            if self.ticket.done and self.ticket.error is not None:
                # The link was lost before this was queued, so on_lost never saw it: record it
                # here, before the call returns (the state may not say ALONE yet).
                self._replicator.record(self.changes)
                self.unsent = True

    def retime(self, path: bytes, retime: Callable[[], tuple[Times, ...]]) -> bool:
        """A change of ``path``'s times folded into the message held for that path
        (LinkClient.retime_held): ``retime()`` makes it locally and returns the resulting times.
        False, nothing done, when there is no such message (or nothing is sent: ALONE, a path the
        resync has not reached); the caller then changes and sends as usual."""
        replicator = self._replicator
        client = replicator.client
        if replicator.state not in _STREAMING or client is None or self.held:
            return False
        return client.retime_held(path, retime, self.changes)

    def follow(self, sent: Ticket) -> None:
        """A barrier without a message of its own, for an operation already ``sent`` that did its
        work (an fsync whose page went as WRITE_FSYNC): wait() then waits for the newest operation
        submitted (a held one leaves now): its acknowledgement covers ``sent`` and all before."""
        replicator = self._replicator
        client = replicator.client
        if replicator.state not in _STREAMING or client is None:
            return
        client.flush_held()
        self.ticket = client.last_ticket or sent
        self.client = client
        self.barrier = True

    def hold_if_pending(self, path: str) -> None:
        """Hold an operation that names ``path`` without changing it (fsync) when the resync has not
        reached the path: the peer may not have the file yet (its fsync would fail there, closing
        the session); the resync copies the content later. Call inside the block (lock held)."""
        replicator = self._replicator
        if replicator.state is MirrorState.SYNCING and replicator.pending.held(path):
            self.held = True

    def defer_wait(self) -> None:
        """Leave the block without waiting; the caller overlaps local work, then calls wait()."""
        self.deferred = True

    def wait(self) -> None:
        """Until the peer applied it; if the peer was lost instead, until the agent's verdict
        (raises :class:`Refused` when ALONE was refused)."""
        if self.ticket is not None:
            self.ticket.wait()   # peer loss completes the ticket too, after recording its changes
            if self.ticket.error is not None or self.unsent:
                self._replicator.await_loss_verdict(self.client)


class Replicator:
    """Orders local applies with link sends and turns peer loss into ALONE + journal records."""

    def __init__(self, client: LinkClient | None, journal: ChangeJournal | None, *, sync: bool = True,
                 on_state: Callable[[MirrorState, str], None] | None = None, fence: bool = False,
                 fence_timeout: float = 60.0, activity: ActivityRecorder | None = None) -> None:
        self.client = client
        self.journal = journal
        self.activity = activity              # streaming: paths being changed, recorded before the apply
        # Called with True (False after an exception) once a change block has queued its message
        # (or recorded its change) and released the ordering lock, before any wait for the peer:
        # the native FUSE engine lets go of its path lock there (docs/native.md).
        self.on_queued: Callable[[bool], None] | None = None
        self.sync = sync
        self.on_state = on_state
        self.fence = fence                    # peer loss waits for the agent's verdict (FENCED)
        self.fence_timeout = fence_timeout
        self.fenced_since: float | None = None
        self.fence_reason = ""
        self._lost_from = MirrorState.PRIM    # what a FENCED mount was doing when the peer was lost
        self._granted = False                 # the agent said ALONE: the next loss needs no verdict
        self._done_sent = False               # RESYNC_DONE sent, not yet acknowledged (see resync_done_sent)
        self._verdict = threading.Condition(threading.Lock())
        self._fence_timer: threading.Timer | None = None
        self.lock = OrderLock()               # orders local applies with link sends
        self._state_lock = threading.Lock()   # orders state changes with journal records/clears
        self.alone_reason = ""
        self.alone_since: float | None = None
        self.pending = PendingSet()           # SYNCING: paths the resync has not reached yet
        if activity is not None:
            activity.peer = self._on_peer_disk
        if client is None:
            self.state = MirrorState.STANDALONE
        else:
            self.state = MirrorState.PRIM
            client.on_lost = self._peer_lost
            self._delegate(client)

    # the peer's durability (docs/journal.md, "Durability") -------------------------------------

    def _delegate(self, client: LinkClient) -> None:
        """Take over the peer's record of what it acknowledged but has not made durable: the
        activity log keeps each path until the peer's replies say its disk has it, and a lost
        link puts those paths in the journal. Only with an activity log (else the peer keeps its
        own record, one fsync per new path) and a peer that offers it (an older one keeps its own)."""
        if self.activity is None or not offers_delegation(getattr(client, "hello_answer", b"")):
            return
        ticket = client.submit(Op.PING, (PING_DELEGATE,))
        ticket.wait(getattr(client, "ack_timeout", 5.0) * 2)   # a loss is handled by on_lost as any

    def _on_peer_disk(self, ticket: Ticket) -> bool:
        """Whether an acknowledged operation is on the peer's disk. A failed one was recorded in
        the journal (on_lost, or by its caller when unsent); a session the peer did not delegate
        acknowledges only what its own unsynced log recorded (``peer_durable`` is None)."""
        if ticket.error is not None:
            return True
        client = self.client
        durable = getattr(client, "peer_durable", None)
        return durable is None or ticket.seq <= durable

    def settle_durable(self) -> bool:
        """Before a clean unmount: ask the peer to sync (PING_SYNC) so that every path of the
        activity log is on its disk. False when that cannot be shown: the stop is then not clean,
        and the next start folds the activity log, which still names those paths."""
        client = self.client
        if getattr(client, "peer_durable", None) is None or self.state not in _STREAMING or self.activity is None:
            return True
        assert client is not None
        with self.lock:
            ticket = client.submit(Op.PING, (PING_SYNC,))
        if not ticket.wait(getattr(client, "ack_timeout", 5.0) * 2) or ticket.error is not None:
            return False
        return not (self.activity.not_on_peer() or self.activity.subtrees_not_on_peer())

    def _not_on_peer(self) -> list[Change]:
        """(link lost) The activity log's paths the peer may not have on its disk, as changes to
        compare whole, and its renamed directories as subtrees (the peer's disk may have lost the
        rename); empty unless the session was delegated."""
        client = self.client
        if self.activity is None or getattr(client, "peer_durable", None) is None:
            return []
        return ([(path, WHOLE) for path in self.activity.not_on_peer()]
                + [(top, SUBTREE) for top in self.activity.subtrees_not_on_peer()])

    def start_alone(self, reason: str, new_generation: bool = True) -> None:
        """Start without a peer (failover): a new generation, then everything is recorded."""
        self._go_alone(reason, (), new_generation=new_generation)

    def declare_lost(self, reason: str) -> None:
        """The agent saw the peer die: stop waiting for the ack timeout (and grant ALONE)."""
        self.grant_alone(reason)

    # fencing -----------------------------------------------------------------------------------

    def start_fenced(self, reason: str, lost_from: MirrorState) -> None:
        """Start blocked (a remount after a crash while streaming): the agent decides."""
        self._fence(reason, (), lost_from)

    def grant_alone(self, reason: str) -> None:
        """The agent's verdict: the peer cannot be primary, go on ALONE (blocked calls succeed)."""
        with self._state_lock:
            state = self.state
            if state in _STREAMING:
                self._granted = True
        if state in _STREAMING:
            assert self.client is not None
            self.client.abort(reason)        # -> _peer_lost -> ALONE at once (granted)
        elif state in _BLOCKED:
            try:
                self._go_alone(reason, (), new_generation=self._lost_from is MirrorState.PRIM)
            except Exception as exc:   # a new generation cannot be recorded: never ALONE without it
                self._unrecordable(reason, exc)

    def refuse(self, reason: str) -> None:
        """The agent's verdict: the peer may be primary. Blocked and later calls fail with EIO."""
        with self._state_lock:
            state = self.state
        if state in _STREAMING:
            assert self.client is not None
            self.client.abort(reason)        # -> FENCED (on_lost records what the peer missed)
        with self._state_lock:
            if self.state is MirrorState.ALONE or self.state is MirrorState.STANDALONE:
                return
            self._set_state(MirrorState.REFUSED, reason)
        self._notify(MirrorState.REFUSED, reason)

    def await_verdict(self) -> None:
        """Block while FENCED; raise :class:`Refused` if REFUSED (called without ``lock``)."""
        with self._verdict:
            self._verdict.wait_for(lambda: self.state is not MirrorState.FENCED)
        if self.state is MirrorState.REFUSED:
            raise Refused(self.fence_reason)

    def await_loss_verdict(self, client: LinkClient | None) -> None:
        """``client``'s link was lost under a call: wait until the loss is handled (the state
        leaves the streaming states: the link thread may still be recording what the peer
        missed), then as :meth:`await_verdict`."""
        with self._verdict:
            self._verdict.wait_for(lambda: self.client is not client or self.state not in _STREAMING)
        self.await_verdict()

    def settle(self) -> None:
        """A barrier without a message: return once the peer applied every operation submitted so
        far (acknowledgements are cumulative, so the newest one covers all), or, if the peer was
        lost meanwhile, once the agent's verdict allows it (raises :class:`Refused`)."""
        client = self.client
        if client is None:
            if self.state in _BLOCKED:
                self.await_verdict()
            return
        client.flush_held()
        ticket = client.last_ticket
        if ticket is not None:
            ticket.wait()
        if client.lost_reason is not None or self.state in _BLOCKED:
            # Something may have failed unsent (recorded, not acknowledged): never answer before
            # the verdict, or a close would acknowledge what the serving node may lack.
            self.await_loss_verdict(client)

    def _fence(self, reason: str, changes: list[Change] | tuple, lost_from: MirrorState) -> None:
        with self._state_lock:
            self.record(changes)
            if self.state in _BLOCKED:
                return
            self._lost_from = lost_from
            if self.journal is not None:
                record.LOST_FROM.set(self.journal, lost_from)
            self.fenced_since = time.time()
            self._set_state(MirrorState.FENCED, reason)
            timer = self._fence_timer = threading.Timer(self.fence_timeout, self._fence_expired)
            timer.daemon = True
            timer.start()
        log.warning("mirror FENCED: %s; writes wait for the agent's verdict (at most %.0f s)",
                    reason, self.fence_timeout)
        self._notify(MirrorState.FENCED, reason)

    def _fence_expired(self) -> None:
        if self.state is MirrorState.FENCED:
            log.error("mirror: no verdict within %.0f s: refusing writes", self.fence_timeout)
            self.refuse(f"no verdict from the agent within {self.fence_timeout:g}s")

    def _set_state(self, state: MirrorState, reason: str) -> None:
        """Persist, then switch; wakes the calls waiting for a verdict (under ``_state_lock``).
        REFUSED is entered even when it cannot be persisted (a restart after an unclean stop asks
        the agent anyway); any other state is entered only once persisted."""
        if self.journal is not None:
            try:
                record.STATE.set(self.journal, state)
                record.ALONE_REASON.set(self.journal, reason)
            except Exception as exc:
                if state is not MirrorState.REFUSED:
                    raise
                log.error("mirror REFUSED not persisted: %s", exc)
        with self._verdict:
            self._switch(state)
            if state in _BLOCKED:
                self.fence_reason = reason
            self._verdict.notify_all()
        if state is not MirrorState.FENCED and self._fence_timer is not None:
            self._fence_timer.cancel()
            self._fence_timer = None

    def _switch(self, target: MirrorState) -> None:
        """The one place the state changes (callers hold ``_state_lock``). A change the table
        (hamirror/mirror/states.py) does not list is a bug, logged; it is still made: the data
        path never stops over its own bookkeeping."""
        if not is_allowed(self.state, target):
            log.error("mirror: %s -> %s is not in the transition table (a bug: report it)",
                      self.state.value, target.value)
        self.state = target

    def _notify(self, state: MirrorState, reason: str) -> None:
        """Tell ``on_state`` (the status file) of a change already made and recorded. Its failure
        is logged, never raised: a report that cannot be written must not turn into a decision
        (a link loss whose status write failed was taken for a journal failure: REFUSED)."""
        if self.on_state is not None:
            try:
                self.on_state(state, reason)
            except Exception as exc:   # OSError (a full disk...), or a bug in the report
                log.warning("mirror %s (%s): the status could not be written: %s", state.value, reason, exc)

    # online resync -----------------------------------------------------------------------------

    def begin_sync(self, client: LinkClient, pending: Iterable[str]) -> None:
        """Stream to a returning peer again while the resync copies ``pending`` paths."""
        self._delegate(client)   # nothing else uses ``client`` yet: the resync waits for this
        with self.lock, self._state_lock:
            self.client = client
            client.on_lost = self._peer_lost
            self.pending = PendingSet(pending)
            self._granted = False
            self._switch(MirrorState.SYNCING)
        self._notify(self.state, "resync started")

    def resync_done_sent(self) -> None:
        """The resync is about to send RESYNC_DONE (call under ``lock``, before the send): from
        here the peer may adopt our current generation even if its reply is lost, so leaving
        SYNCING, or a restart, must start a new one, or two nodes would share a generation with
        different data (issue 15, finding 5). Durable: a crash before the reply is covered too."""
        with self._state_lock:
            self._done_sent = True
            if self.journal is not None:
                record.DONE_SENT.set(self.journal, True)

    def _peer_may_share_generation(self) -> bool:
        return self._done_sent or (self.journal is not None and record.DONE_SENT.get(self.journal))

    def _generation_is_ours_again(self) -> None:
        """A new generation started (or the resync completed): the flag of resync_done_sent is spent."""
        if self._done_sent or self._peer_may_share_generation():
            self._done_sent = False
            if self.journal is not None:
                record.DONE_SENT.set(self.journal, False)

    def finish_sync(self) -> bool:
        """Called once the peer acknowledged RESYNC_DONE: clear the changed set, back to PRIM."""
        with self._state_lock:
            if self.state is not MirrorState.SYNCING:
                return False
            if self.journal is not None:
                self.journal.clear_changes()
                record.STATE.set(self.journal, MirrorState.PRIM)
            self._generation_is_ours_again()
            self._switch(MirrorState.PRIM)
            self.alone_reason = ""
            self.alone_since = None
        self._notify(self.state, "resync finished")
        return True

    # the FUSE side ---------------------------------------------------------------------------

    def change(self, changes: tuple[Change, ...], key: int | None = None, new: tuple[str, ...] = (),
               moved: tuple[tuple[str, str], ...] = ()) -> "_Change":
        """The block around one operation; ``key`` (an inode number) for a data write or fsync,
        which then shares the ordering lock with those of other inodes; ``new``: the paths of
        ``changes`` whose name the operation creates (the activity log may enter their directory);
        ``moved``: a rename's (source, destination) pairs (the log carries what is hot beneath)."""
        return _Change(self, changes, key, new, moved)

    # peer loss -------------------------------------------------------------------------------

    def _peer_lost(self, reason: str, failed: list[Ticket]) -> None:
        """Called by the link's I/O thread before any waiter of ``failed`` wakes."""
        changes = flatten_changes(failed)
        undurable: list[Change] = []
        try:
            # Acknowledged, but maybe not on the peer's disk (a hot directory is listed: an
            # error there leaves what it covers unknown, so it cannot be recorded either).
            undurable = self._not_on_peer()
            if self.fence and not self._granted:
                self._fence(reason, changes + undurable, self.state if self.state in _STREAMING else self._lost_from)
            else:
                self._go_alone(reason, changes + undurable)
        except Exception as exc:   # sqlite3.Error, OSError: the journal's disk is full or failing
            self._unrecordable(reason, exc)
            return
        if self.activity is not None:
            # The next session's tickets number from 0 again: none of this one's may pin a path.
            self.activity.recorded()
        if undurable:
            log.info("link lost: %d path(s) the peer may not have on its disk recorded", len(undurable))

    def _unrecordable(self, reason: str, exc: Exception) -> None:
        """What the peer missed could not be recorded. ALONE would acknowledge writes no resync
        would copy, and left as it was (PRIM with a dead link) the mount hung the application:
        it refuses instead (EIO) and the agent steps the node down (issue 15, finding 12)."""
        why = f"{reason}; the journal cannot record what the peer missed: {exc}"
        log.error("mirror REFUSED: %s", why)
        with self._state_lock:
            self._set_state(MirrorState.REFUSED, why)
        self._notify(MirrorState.REFUSED, why)

    def _go_alone(self, reason: str, changes: list[Change] | tuple, new_generation: bool | None = None) -> None:
        with self._state_lock:
            first = self.state is not MirrorState.ALONE
            if new_generation is None:
                new_generation = self.state is MirrorState.PRIM
            # Leaving a live mirror starts a new generation. A failed resync does too once its
            # RESYNC_DONE went out (the peer may have adopted our generation, its reply lost);
            # before that the peer cannot hold our generation and our changed set covers it.
            new_generation = new_generation or self._peer_may_share_generation()
            if self.journal is not None:
                if new_generation:
                    self.journal.new_generation()
                self.record(changes)
            if new_generation:
                self._generation_is_ours_again()
            self._set_state(MirrorState.ALONE, reason)
            self.pending = PendingSet()
            self.fenced_since = None
        if first:
            self.alone_reason = reason
            self.alone_since = time.time()
            log.warning("mirror ALONE: %s", reason)
            self._notify(self.state, reason)

    def record(self, changes: Iterable[Change]) -> None:
        """Durably record what the peer does not have (paths, and byte ranges of writes), in one
        journal transaction: a lost link's thousands of paths cost one fsync, not one each,
        while every mutating call waits for the state to change (docs/journal.md)."""
        if self.journal is None:
            return
        paths: list[str] = []
        ranges: list[tuple[str, int, int]] = []
        wholes: list[str] = []
        subtrees: list[str] = []
        for change in changes:
            if len(change) == 3:
                ranges.append(change)
            elif len(change) == 2 and change[1] == SUBTREE:   # a directory renamed there, and all beneath
                subtrees.append(change[0])
            elif len(change) == 2:       # (path, WHOLE): content replaced without a write
                wholes.append(change[0])
            else:
                paths.append(change[0])
        self.journal.record_batch(paths, ranges, wholes, subtrees)


class _Change:
    """Context manager behind :meth:`Replicator.change` (see the module docstring)."""

    __slots__ = ("_replicator", "_tx", "_key", "_new", "_moved")

    def __init__(self, replicator: Replicator, changes: tuple[Change, ...], key: int | None,
                 new: tuple[str, ...] = (), moved: tuple[tuple[str, str], ...] = ()) -> None:
        self._replicator = replicator
        self._tx = _Transaction(replicator, changes)
        self._key = key
        self._new = new
        self._moved = moved

    def __enter__(self) -> _Transaction:
        replicator = self._replicator
        lock = replicator.lock
        tx = self._tx
        wanted = self._key
        while True:
            key = wanted if replicator.state in _SHARING else None
            lock.acquire(key)
            state = replicator.state
            if key is not None and state not in _SHARING:
                lock.release(key)      # the state changed meanwhile: take the whole lock
                continue
            if state in _BLOCKED:
                # Fenced: wait for the verdict before any local apply (nothing to undo if refused).
                lock.release(key)
                replicator.await_verdict()
                continue
            break
        self._key = key
        if state is MirrorState.SYNCING and any(replicator.pending.held(c[0]) for c in tx.changes):
            tx.held = True
        try:
            if state is MirrorState.ALONE or tx.held:
                replicator.record(tx.changes)   # write-ahead: recorded before applied
                if tx.held:
                    replicator.pending.update(c[0] for c in tx.changes)
            elif state in _STREAMING and replicator.activity is not None and tx.changes:
                # write-ahead, for a crash
                tx.carried = replicator.activity.enter([c[0] for c in tx.changes], self._new, self._moved)
                tx.logged = True
        except BaseException:
            lock.release(key)
            raise
        return tx

    def __exit__(self, exc_type, exc, tb) -> None:
        replicator = self._replicator
        replicator.lock.release(self._key)
        tx = self._tx
        if tx.logged:
            if tx.ticket is None and exc_type is None and replicator.state not in _STREAMING:
                replicator.record(tx.changes)   # the peer was lost before this could be sent
            replicator.activity.leave([c[0] for c in tx.changes], tx.ticket, tx.carried)
        if replicator.on_queued is not None:
            replicator.on_queued(exc_type is None)
        if exc_type is None and not tx.deferred and (replicator.sync or tx.barrier):
            tx.wait()

