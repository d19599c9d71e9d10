"""The primary's end of the link: a pipelining sender of tickets over one transport.

FUSE threads call :meth:`LinkClient.submit` (in operation order, under the caller's ordering
lock); it assigns the sequence number, encodes the header and hands the message to the
transport: ``link/transport_zmq.py`` (engines ``curve`` and ``aead``: one I/O thread owns the
DEALER socket) or ``link/transport_stream.py`` (engine ``stream``: the submitting thread writes
its record to a TCP connection of its own; a waiting thread reads its own acknowledgement when
no one else reads, a background reader the rest). Many operations are in flight at once; each
:class:`Ticket` is completed when its acknowledgement arrives. When the peer goes away (TCP
disconnect, no acknowledgement within ``ack_timeout``, or a refusal), every pending ticket is
failed at once and ``on_lost`` is called first, on the thread that read or timed the loss (never
a submitting one), so the caller can record what the peer missed before any waiter wakes.

This module keeps what does not depend on the transport: tickets, the window, held messages,
cumulative acknowledgements, the keepalive and the ack timeout, and the one way to fail.
"""

from __future__ import annotations

import collections
import logging
import os
import random
import threading
import time
from _thread import LockType
from _thread import allocate_lock as _allocate_lock
from typing import TYPE_CHECKING, Callable, Iterable, Protocol

from hamirror.link import fencing, keys, session
from hamirror.link.protocol import (ERROR, HELLO_TOKEN, VERSION, Op, ProtocolError, Times, decode_reply, encode, kept,
                                    parse_hello_answer)

if TYPE_CHECKING:
    import zmq

log = logging.getLogger(__name__)

# What an operation changed, for the journal: (path,) names only, (path, WHOLE) content replaced
# wholesale, (path, SUBTREE) a directory renamed to this name (it and everything beneath it, whole),
# (path, offset, length) a written byte range.
Change = tuple
WHOLE = "whole"
SUBTREE = "subtree"
KEEPALIVE = 0.5   # seconds: an idle link still carries a PING this often (the secondary's proof of life)
HOLD = 0.002      # seconds: how long a held message waits for a UTIMENS to merge (see submit)


class PeerLost(Exception):
    """The peer did not apply an operation; the text says why."""


class Ticket:
    """One operation in flight.

    Completed once, by whichever thread reads its acknowledgement (or by submit for one that
    could not be queued). A lock held from birth to completion is the waiters' wake-up: a release
    costs a fraction of a threading.Event's set() (a Condition and its notify_all in Python), paid
    for every operation. With a transport that lets a waiter read (``lead``: the ``stream``
    engine), :meth:`wait` goes there instead: the waiting thread may read its own acknowledgement,
    and ``bell`` is the wake-up of a waiter that another thread reads for."""

    __slots__ = ("seq", "changes", "sent_at", "error", "payload", "done", "bell", "_lock", "_lead")

    def __init__(self, seq: int, changes: tuple[Change, ...],
                 lead: Callable[["Ticket", float | None], bool] | None = None) -> None:
        self.seq = seq
        self.changes = changes
        self.sent_at = 0.0
        self.error: str | None = None
        self.payload = b""
        self.done = False                 # set after error and payload: a reader of done sees them
        self.bell: LockType | None = None   # the followers' wake-up (transport_stream): released at completion
        self._lock = _allocate_lock()
        self._lock.acquire()
        self._lead = lead

    def complete(self, error: str | None = None, payload: bytes = b"") -> None:
        if self.done:
            return
        self.error = error
        self.payload = payload
        self.done = True
        self._lock.release()
        bell = self.bell   # read after done: a follower sets bell, then looks at done
        if bell is not None:
            try:
                bell.release()
            except RuntimeError:   # released already (a follower was handed the read role)
                pass

    def wait(self, timeout: float | None = None) -> bool:
        """Whether it completed (within ``timeout`` seconds; None: for ever)."""
        if self.done:
            return True
        if self._lead is not None:
            return self._lead(self, timeout)
        return self.wait_completed(timeout)

    def wait_completed(self, timeout: float | None = None) -> bool:
        """As :meth:`wait`, never reading: sleep until another thread completes it."""
        if self.done:
            return True
        lock = self._lock
        if lock.acquire(True, -1 if timeout is None else max(timeout, 0)):
            lock.release()   # the next waiter of the same ticket wakes in turn
            return True
        return self.done


class Transport(Protocol):
    """What :class:`LinkClient` asks of a transport. ``queue`` and ``held`` are called with the
    client's ``_lock`` held, in sequence order; the transport calls back ``_sent`` (the message
    is about to travel), ``_on_reply``, ``_tick`` and ``_fail`` from its own thread."""

    def start(self) -> None: ...
    def queue(self, ticket: "Ticket", header: bytes, data: bytes | None) -> None: ...
    def kick(self) -> None: ...                 # after queue, once ``_lock`` is released
    def held(self) -> None: ...                 # a message was held: see that it leaves when due
    def starved(self) -> None: ...              # (``_lock`` held) a submit waits for the window
    def wake(self) -> None: ...                 # abort: look at ``_abort_reason`` now
    def take_queued(self) -> list["Ticket"]: ...  # (``_lock`` held, failing) queued, never sent
    def expect_hello(self, timeout: float) -> None: ...
    def close(self) -> None: ...
    @property
    def queued(self) -> int: ...


class LinkClient:
    """Sends operations to one receiver; see the module docstring for the contract."""

    def __init__(self, endpoint: str, keys_dir: str, *, peer_key_name: str | None = None,
                 ack_timeout: float = 5.0, window: int = 256,
                 on_lost: Callable[[str, list[Ticket]], None] | None = None,
                 context: zmq.Context | None = None, token_file: str | None = None,
                 engine: str | None = None) -> None:
        self.endpoint = endpoint
        self.engine = session.engine(engine)   # curve, aead or stream (link/session.py): never negotiated
        self.token_file = token_file   # this node's fencing token, sent in every HELLO (link/fencing.py)
        self.ack_timeout = ack_timeout
        self.on_lost = on_lost
        own = keys.load_own(keys_dir)
        server_key = keys.peer_public_key(keys_dir, own, peer_key_name)
        self.session = random.getrandbits(63) | 1
        self._seq = 0
        # Sent (or sealed, about to be), not yet acknowledged, in sequence order: only the
        # transport's thread removes from the front, under ``_lock``.
        self._pending: collections.deque[Ticket] = collections.deque()
        self._lock = threading.Lock()
        # The window: operations that may be unacknowledged at once. A count under ``_lock``
        # (submit takes it anyway) and a condition waited on only when it is used up: a
        # BoundedSemaphore cost a Python-level Condition on every submit and every ack.
        self._free = window
        self._room = threading.Condition(self._lock)
        self.lost_reason: str | None = None
        self._abort_reason: str | None = None
        self.last_ticket: Ticket | None = None   # newest submitted: its ack covers all before it
        self._held: _Held | None = None          # the newest submitted, kept back for a merge
        self.bytes_sent = 0
        self.ops_sent = 0
        self.peer_versions: tuple[int, str] | None = None   # the receiver's (link protocol, release)
        self.hello_answer = b""                  # the receiver's answer to HELLO (what it offers)
        self.peer_durable: int | None = None     # delegated session: newest seq durable on the peer
        self._last_send = time.monotonic()
        self._transport: Transport
        # Imported here: each transport imports this module (Ticket, KEEPALIVE).
        if self.engine == session.STREAM:
            from hamirror.link.transport_stream import StreamTransport
            self._transport = StreamTransport(self, own, server_key)
        else:
            import zmq   # only here: a stream daemon never maps libzmq (link/z85.py)

            from hamirror.link.transport_zmq import ZmqTransport
            self._transport = ZmqTransport(self, own, server_key, context or zmq.Context.instance())
        # What a ticket's wait calls to read its own acknowledgement (None: wait for the I/O thread).
        self._lead: Callable[[Ticket, float | None], bool] | None = getattr(self._transport, "wait_for", None)
        self._transport.start()

    # API for the FUSE side -----------------------------------------------------------------

    def hello(self, timeout: float, flags: int = 0) -> None:
        """Start the session; raise PeerLost if the peer does not answer within ``timeout``."""
        token = fencing.read(self.token_file) if self.token_file is not None else None
        ints = (VERSION, flags) if token is None else (VERSION, flags | HELLO_TOKEN, token)
        self._transport.expect_hello(timeout)
        ticket = self.submit(Op.HELLO, ints)
        if not ticket.wait(timeout):
            raise PeerLost(f"peer {self.endpoint} did not answer within {timeout:g}s "
                           "(is 'hamirror mirror receive' running there, and does it trust this node's key?)")
        if ticket.error:
            raise PeerLost(ticket.error)
        self.peer_versions = parse_hello_answer(ticket.payload)
        self.hello_answer = ticket.payload
        log.info("session with %s: the receiver runs hamirror %s (link protocol %d, engine %s)", self.endpoint,
                 self.peer_versions[1], self.peer_versions[0], self.engine)

    def submit(self, op: Op, ints: tuple[int, ...] = (), strs: tuple[bytes, ...] = (),
               times: tuple[Times, ...] = (), data: bytes | None = None,
               changes: tuple[Change, ...] = (), hold: bool = False) -> Ticket:
        """Queue one operation; the caller holds its ordering lock so seq order = apply order.

        ``hold`` (a WRITE or UTIMENS that names one path and carries only that path's times):
        keep it back for at most ``HOLD`` seconds, so that a UTIMENS of the same path submitted
        next travels in it (its times replace the held ones) instead of as a message of its own.
        Barrier mode's writeback sends exactly that pair: the dirty page, then the kernel's mtime.
        An FSYNC of the path of a held WRITE (a commit: write, then fsync) turns it into one
        WRITE_FSYNC, sent at once. Any other submit, :meth:`flush_held` and the transport send a
        held message first, so the stream's order is the submit order.

        ``data`` may be a view valid only until the caller's operation returns (the mount's
        writes): whatever keeps it past this call keeps a copy (``protocol.kept``)."""
        with self._lock:
            held = merged = self._held
            if held is not None and op == Op.UTIMENS and data is None and _mergeable(held, strs, times):
                held.header = encode(held.op, self.session, held.ticket.seq, held.ints, held.strs, times)
                held.times = times
                held.ticket.changes += changes
                if hold:
                    return held.ticket        # stays held: the kernel may send another mtime
                self._held = None
                self._queue_held(held)
            elif (held is not None and op == Op.FSYNC and held.op == Op.WRITE and strs == held.strs
                  and not times and data is None):
                # A commit: the page written back, then fsync of its file: one message.
                held.header = encode(Op.WRITE_FSYNC, self.session, held.ticket.seq,
                                     (held.ints[0], ints[0]), held.strs, held.times)
                held.ticket.changes += changes
                self._held = None
                self._queue_held(held)
            else:
                merged = None
        if merged is not None:
            self._transport.kick()
            return merged.ticket
        with self._lock:
            while self._free <= 0 and self.lost_reason is None:
                self._transport.starved()
                self._room.wait()
            seq = self._seq
            self._seq += 1
            ticket = Ticket(seq, changes, self._lead)
            if self.lost_reason is not None:
                ticket.complete(self.lost_reason)
                return ticket
            self._free -= 1
            if self._held is not None:
                self._queue_held(self._held)
                self._held = None
            self.last_ticket = ticket
            header = encode(op, self.session, seq, ints, strs, times)
            if hold and len(strs) == 1 and _only_times_of(strs[0], times):
                self._held = _Held(ticket, header, op, ints, strs, times, kept(data), time.monotonic() + HOLD)
                self._transport.held()
            else:
                self._transport.queue(ticket, header, data)
        self._transport.kick()
        return ticket

    def retime_held(self, path: bytes, retime: Callable[[], tuple[Times, ...]],
                    changes: tuple[Change, ...] = ()) -> bool:
        """Fold a change of ``path``'s times into the message held for that path, if one is: the
        result on the peer is a UTIMENS submitted now (:meth:`submit` merges one so), without its
        encoding twice and its second ticket. ``retime()`` makes the change locally and returns
        the resulting times; it runs under ``_lock``, so the message cannot leave in between and
        its acknowledgement covers the change. False, ``retime`` not called, when nothing of
        ``path`` alone is held."""
        with self._lock:
            held = self._held
            if held is None or held.strs != (path,) or not _only_times_of(path, held.times):
                return False
            times = retime()
            held.header = encode(held.op, self.session, held.ticket.seq, held.ints, held.strs, times)
            held.times = times
            held.ticket.changes += changes
        return True

    def flush_held(self) -> None:
        """Send a held message now (a barrier waits for it)."""
        self._flush_held(0.0)

    def _flush_held(self, due: float) -> None:
        """Send the held message if it is due by ``due`` (monotonic time; 0: whatever its due)."""
        held = self._held
        if held is None or held.due > due > 0:
            return
        with self._lock:
            if self._held is not held:
                return
            self._held = None
            self._queue_held(held)
        self._transport.kick()

    def _queue_held(self, held: "_Held") -> None:
        """(``_lock`` held) The held message leaves, in its own place in the order."""
        self._transport.queue(held.ticket, held.header, held.data)

    def query(self, op: Op, ints: tuple[int, ...] = (), strs: tuple[bytes, ...] = ()) -> Ticket:
        """Submit a query (the caller holds its ordering lock); wait on the ticket for the payload."""
        return self.submit(op, ints, strs)

    def abort(self, reason: str) -> None:
        """Declare the peer lost now (the agent's heartbeats saw it die before any timeout)."""
        self._abort_reason = reason
        self._transport.wake()

    def close(self, drain_timeout: float = 5.0) -> None:
        """Wait for in-flight operations (up to drain_timeout), then stop the transport."""
        self.flush_held()
        deadline = time.monotonic() + drain_timeout
        while ((self._pending or self._transport.queued) and self.lost_reason is None
               and time.monotonic() < deadline):
            time.sleep(0.005)
        self._transport.close()

    @property
    def in_flight(self) -> int:
        return len(self._pending) + self._transport.queued + (self._held is not None)

    # Called by the transport -------------------------------------------------------------------

    def _sent(self, ticket: Ticket, data: bytes | None) -> None:
        """``ticket``'s message travels now: it waits for its acknowledgement from here on."""
        ticket.sent_at = self._last_send = time.monotonic()
        self._pending.append(ticket)
        if data is not None:
            self.bytes_sent += len(data)
        self.ops_sent += 1

    def _on_reply(self, frames: list) -> bool:
        """One reply's plaintext frames; False if it ended the link."""
        try:
            reply = decode_reply(frames)
        except ProtocolError as exc:
            self._fail(f"malformed reply from peer: {exc}")
            return False
        if reply.status == ERROR:
            self._fail(f"peer refused operation {reply.seq}: {reply.message or os.strerror(reply.errno)}")
            return False
        if reply.durable is not None:   # before any ticket it covers completes
            self.peer_durable = reply.durable
        # The receiver applies in order, so an ack for seq n also covers everything before it.
        pending, acked = self._pending, []
        with self._lock:
            while pending and pending[0].seq <= reply.seq:
                acked.append(pending.popleft())
        if acked:
            self._give_back(len(acked))
        for ticket in acked:
            ticket.complete(payload=reply.payload if ticket.seq == reply.seq else b"")
        return True

    def _tick(self) -> None:
        """What the transport's thread does each time it wakes: a held message due, an abort,
        the oldest acknowledgement overdue, a keepalive."""
        now = time.monotonic()
        self._flush_held(now)
        if self._abort_reason is not None:
            self._fail(self._abort_reason)
        if self._pending and now - self._pending[0].sent_at > self.ack_timeout:
            self._fail(f"peer {self.endpoint} did not acknowledge within {self.ack_timeout:g}s")
        self._keepalive(now)

    def _keepalive(self, now: float) -> None:
        """On an idle link, a PING now and then: the secondary's agent reads it as "the primary's
        data path is alive" even when the primary's agent (and its heartbeats) is not."""
        if (self._pending or self._transport.queued or self._held or self.lost_reason is not None
                or self.ops_sent == 0 or now - self._last_send < KEEPALIVE):
            return
        with self._lock:
            if self._free <= 0:
                return
            self._free -= 1
            seq = self._seq
            self._seq += 1
            self._transport.queue(Ticket(seq, ()), encode(Op.PING, self.session, seq), None)
        self._transport.kick()

    def _wait(self, now: float) -> float:
        """Seconds until the transport's thread has something to do unless a reply comes."""
        held = self._held
        if held is not None:
            return max(0.0, held.due - now)
        return self._ack_wait(now)

    def _ack_wait(self, now: float) -> float:
        """Seconds until the oldest pending acknowledgement is overdue, or the keepalive's period."""
        if not self._pending:
            return KEEPALIVE
        return max(0.001, self._pending[0].sent_at + self.ack_timeout - now)

    def _fail(self, reason: str) -> None:
        """Fail every pending ticket; later submits fail at once. Only the first reason counts."""
        with self._lock:
            if self.lost_reason is not None:
                return
            self.lost_reason = reason
            failed = list(self._pending) + self._transport.take_queued()
            if self._held is not None:
                failed.append(self._held.ticket)
                self._held = None
            self._pending.clear()
        log.warning("replication stopped: %s", reason)
        if self.on_lost is not None:
            try:
                self.on_lost(reason, failed)
            except Exception:  # noqa: BLE001 - the waiters must wake whatever happens
                log.exception("on_lost handler failed")
        self._give_back(len(failed))
        for ticket in failed:
            ticket.complete(reason)

    def _give_back(self, count: int) -> None:
        """``count`` operations left the window (acknowledged, or failed)."""
        with self._lock:
            self._free += count
            if self._free <= count:      # it was used up: a submit may be waiting
                self._room.notify_all()


class _Held:
    """A message kept back by :meth:`LinkClient.submit` (``hold``), encoded, not yet queued."""

    __slots__ = ("ticket", "header", "op", "ints", "strs", "times", "data", "due")

    def __init__(self, ticket: Ticket, header: bytes, op: Op, ints: tuple[int, ...],
                 strs: tuple[bytes, ...], times: tuple[Times, ...], data: bytes | None, due: float) -> None:
        self.ticket, self.header, self.op, self.ints, self.strs = ticket, header, op, ints, strs
        self.times, self.data, self.due = times, data, due


def _mergeable(held: _Held, strs: tuple[bytes, ...], times: tuple[Times, ...]) -> bool:
    """A UTIMENS of ``strs`` with ``times`` only sets times the held message sets too (same one
    path), so the held message can carry them instead: the result on the peer is the same."""
    return strs == held.strs and bool(times) and _only_times_of(strs[0], times)


def _only_times_of(path: bytes, times: tuple[Times, ...]) -> bool:
    return all(t[0] == path for t in times)


def flatten_changes(tickets: Iterable[Ticket]) -> list[Change]:
    return [change for ticket in tickets for change in ticket.changes]
