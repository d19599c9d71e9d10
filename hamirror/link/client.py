"""The primary's end of the link: a pipelining sender with one I/O thread.

FUSE threads call :meth:`LinkClient.submit` (in operation order, under the caller's ordering
lock); it assigns the sequence number, encodes the header and hands the frames to the I/O
thread, which owns the only DEALER socket. Many operations are in flight at once; each
:class:`Ticket` is completed when its acknowledgement arrives. When the peer goes away (TCP
disconnect, no acknowledgement within ``ack_timeout``, or a refusal), every pending ticket is
failed at once and ``on_lost`` is called first, so the caller can record what the peer missed
before any waiter wakes.
"""

from __future__ import annotations

import collections
import logging
import os
import random
import threading
import time
from _thread import allocate_lock as _allocate_lock
from typing import Callable, Iterable

import zmq

from hamirror.link import fencing, keys, session
from hamirror.link.monitor import recv_monitor_message
from hamirror.link.protocol import (ERROR, HELLO_TOKEN, VERSION, Op, ProtocolError, Times, decode_reply, encode,
                                    parse_hello_answer)

log = logging.getLogger(__name__)

# What an operation changed, for the journal: (path,) names only, (path, WHOLE) content replaced
# wholesale, (path, offset, length) a written byte range.
Change = tuple
WHOLE = "whole"
KEEPALIVE = 0.5   # seconds: an idle link still carries a PING this often (the secondary's proof of life)
_NOBLOCK = int(zmq.NOBLOCK)   # plain ints: pyzmq's enum flags cost an Enum call per use
_NOBLOCK_MORE = int(zmq.NOBLOCK | zmq.SNDMORE)
_EVENTS, _POLLIN, _RCVMORE = int(zmq.EVENTS), int(zmq.POLLIN), int(zmq.RCVMORE)
HOLD = 0.002      # seconds: how long a held message waits for a UTIMENS to merge (see submit)


class PeerLost(Exception):
    """The peer did not apply an operation; the text says why."""


class Ticket:
    """One operation in flight.

    Completed once, by the link's I/O thread (or by submit for one that could not be queued).
    A lock held from birth to completion is the waiters' wake-up: a release costs a fraction of a
    threading.Event's set() (a Condition and its notify_all in Python), paid for every operation."""

    __slots__ = ("seq", "changes", "sent_at", "error", "payload", "done", "_lock")

    def __init__(self, seq: int, changes: tuple[Change, ...]) -> None:
        self.seq = seq
        self.changes = changes
        self.sent_at = 0.0
        self.error: str | None = None
        self.payload = b""
        self.done = False                 # set after error and payload: a reader of done sees them
        self._lock = _allocate_lock()
        self._lock.acquire()

    def complete(self, error: str | None = None, payload: bytes = b"") -> None:
        if self.done:
            return
        self.error = error
        self.payload = payload
        self.done = True
        self._lock.release()

    def wait(self, timeout: float | None = None) -> bool:
        """Whether it completed (within ``timeout`` seconds; None: for ever)."""
        if self.done:
            return True
        lock = self._lock
        if lock.acquire(True, -1 if timeout is None else max(timeout, 0)):
            lock.release()   # the next waiter of the same ticket wakes in turn
            return True
        return self.done


class LinkClient:
    """Sends operations to one receiver; see the module docstring for the contract."""

    def __init__(self, endpoint: str, keys_dir: str, *, peer_key_name: str | None = None,
                 ack_timeout: float = 5.0, window: int = 256,
                 on_lost: Callable[[str, list[Ticket]], None] | None = None,
                 context: zmq.Context | None = None, token_file: str | None = None,
                 engine: str | None = None) -> None:
        self.endpoint = endpoint
        self.engine = session.engine(engine)   # curve, or aead (link/session.py): never negotiated
        self.token_file = token_file   # this node's fencing token, sent in every HELLO (link/fencing.py)
        self.ack_timeout = ack_timeout
        self.on_lost = on_lost
        self.context = context or zmq.Context.instance()
        own = keys.load_own(keys_dir)
        server_key = keys.peer_public_key(keys_dir, own, peer_key_name)
        self.session = random.getrandbits(63) | 1
        self._seq = 0
        self._outbox: collections.deque = collections.deque()
        self._pending: collections.OrderedDict[int, Ticket] = collections.OrderedDict()
        self._wakeup = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
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
        # The I/O thread is (about to be) in poll: a submit must wake it. While it works it looks
        # at the outbox and the held message before it polls again, so a submit then needs no
        # eventfd write (a syscall, and a GIL hand-over, per operation in barrier mode).
        self._asleep = True
        self.bytes_sent = 0
        self.ops_sent = 0
        self.peer_versions: tuple[int, str] | None = None   # the receiver's (link protocol, release)
        self.hello_answer = b""                  # the receiver's answer to HELLO (what it offers)
        self.peer_durable: int | None = None     # delegated session: newest seq durable on the peer
        self._last_send = time.monotonic()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.linger = 0
        self.socket.sndhwm = self.socket.rcvhwm = 0
        # aead: ZeroMQ's NULL mechanism, and every frame sealed here once the handshake is done.
        self._handshake: session.ClientHandshake | None = None
        self._channel: session.Channel | None = None
        if self.engine == session.AEAD:
            self._handshake = session.ClientHandshake(own.secret, own.public, server_key)
        else:
            keys.secure_client(self.socket, own, server_key)
        self._monitor = self.socket.get_monitor_socket(
            zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
            | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
        self.socket.connect(endpoint)
        self._started = time.monotonic()
        if self._handshake is not None:
            self.socket.send(self._handshake.init)   # queued by ZeroMQ until connected
        self._thread = threading.Thread(target=self._run, name="hamirror-link", daemon=True)
        self._running = True
        self._thread.start()

    # API for the FUSE side -----------------------------------------------------------------

    def hello(self, timeout: float, flags: int = 0) -> None:
        """Start the session; raise PeerLost if the peer does not answer within ``timeout``."""
        token = fencing.read(self.token_file) if self.token_file is not None else None
        ints = (VERSION, flags) if token is None else (VERSION, flags | HELLO_TOKEN, token)
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
        WRITE_FSYNC, sent at once. Any other submit, :meth:`flush_held` and the I/O thread send a
        held message first, so the stream's order is the submit order."""
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
            self._wake()
            return merged.ticket
        with self._lock:
            while self._free <= 0 and self.lost_reason is None:
                self._room.wait()
            seq = self._seq
            self._seq += 1
            ticket = Ticket(seq, changes)
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
                self._held = _Held(ticket, header, op, ints, strs, times, data, time.monotonic() + HOLD)
            else:
                self._outbox.append((ticket, header, data))
        self._wake()
        return ticket

    def _wake(self) -> None:
        """After queueing or holding a message: wake the I/O thread if it sleeps (see _asleep)."""
        if self._asleep:
            os.eventfd_write(self._wakeup, 1)

    def flush_held(self) -> None:
        """Send a held message now (a barrier waits for it)."""
        if self._held is None:
            return
        with self._lock:
            held, self._held = self._held, None
            if held is None:
                return
            self._queue_held(held)
        self._wake()

    def _queue_held(self, held: "_Held") -> None:
        """(``_lock`` held) The held message joins the outbox, in its own place in the order."""
        self._outbox.append((held.ticket, held.header, held.data))

    def query(self, op: Op, ints: tuple[int, ...] = (), strs: tuple[bytes, ...] = ()) -> Ticket:
        """Submit a query (the caller holds its ordering lock); wait on the ticket for the payload."""
        return self.submit(op, ints, strs)

    def abort(self, reason: str) -> None:
        """Declare the peer lost now (the agent's heartbeats saw it die before any timeout)."""
        self._abort_reason = reason
        os.eventfd_write(self._wakeup, 1)

    def close(self, drain_timeout: float = 5.0) -> None:
        """Wait for in-flight operations (up to drain_timeout), then stop the I/O thread."""
        self.flush_held()
        deadline = time.monotonic() + drain_timeout
        while (self._pending or self._outbox) and self.lost_reason is None and time.monotonic() < deadline:
            time.sleep(0.005)
        self._running = False
        os.eventfd_write(self._wakeup, 1)
        self._thread.join(5)
        self.socket.disable_monitor()
        self._monitor.close(0)
        self.socket.close(0)
        os.close(self._wakeup)

    @property
    def in_flight(self) -> int:
        return len(self._pending) + len(self._outbox) + (self._held is not None)

    # I/O thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        sock, wakeup, monitor = self.socket, self._wakeup, self._monitor
        # zmq.zmq_poll itself: zmq.Poller.poll and a dict of its answer cost as much as the poll.
        items = [(sock, _POLLIN), (wakeup, _POLLIN), (monitor, _POLLIN)]
        while self._running:
            self._asleep = True   # before looking at the outbox: a submit after this look wakes us
            timeout = 0 if self._outbox or self._abort_reason is not None else self._poll_timeout_ms()
            ready = zmq.zmq_poll(items, timeout)
            self._asleep = False
            replies = monitored = False
            for what, _ in ready:
                if what is sock:
                    replies = True
                elif what is monitor:
                    monitored = True
                else:
                    try:
                        os.eventfd_read(wakeup)
                    except BlockingIOError:
                        pass
            held = self._held
            if held is not None and time.monotonic() >= held.due:
                with self._lock:
                    if self._held is held:
                        self._held = None
                        self._queue_held(held)
            if self._outbox:
                self._send_outbox()
            if replies:
                self._receive_replies()
            if monitored:
                self._check_monitor()
            if self._abort_reason is not None:
                self._fail(self._abort_reason)
            self._check_timeouts()
            self._keepalive()

    def _keepalive(self) -> None:
        """On an idle link, a PING now and then: the secondary's agent reads it as "the primary's
        data path is alive" even when the primary's agent (and its heartbeats) is not."""
        if (self._pending or self._outbox or self._held or self.lost_reason is not None or self.ops_sent == 0
                or time.monotonic() - self._last_send < KEEPALIVE):
            return
        with self._lock:
            if self._free <= 0:
                return
            self._free -= 1
            seq = self._seq
            self._seq += 1
            self._outbox.append((Ticket(seq, ()), encode(Op.PING, self.session, seq), None))
        self._send_outbox()

    def _poll_timeout_ms(self) -> int:
        held = self._held
        if held is not None:
            return max(0, int((held.due - time.monotonic()) * 1000) + 1)
        if not self._pending:
            return int(KEEPALIVE * 1000)
        oldest = next(iter(self._pending.values()))
        return max(1, int((oldest.sent_at + self.ack_timeout - time.monotonic()) * 1000) + 1)

    def _send_outbox(self) -> None:
        if self._handshake is not None and self._channel is None:
            return   # nothing leaves before the receiver proved its key (the handshake sends it then)
        while self._outbox:
            ticket, header, data = self._outbox.popleft()
            if self.lost_reason is not None:
                self._give_back(1)
                ticket.complete(self.lost_reason)
                continue
            ticket.sent_at = self._last_send = time.monotonic()
            self._pending[ticket.seq] = ticket
            parts = [header] if data is None else [header, data]
            if self._channel is not None:
                try:
                    parts = self._channel.send.seal(parts)
                except session.SessionError as exc:
                    self._fail(f"secure session with peer {self.endpoint} ended: {exc}")
                    return
            try:   # never blocks while connected (no HWM); blocks for ever once libzmq dropped the peer
                if data is None:
                    self.socket.send(parts[0], _NOBLOCK, copy=True)
                else:   # send_multipart's checks and enum flags cost more than the sends
                    for part in parts[:-1]:
                        self.socket.send(part, _NOBLOCK_MORE, copy=False)
                    self.socket.send(parts[-1], _NOBLOCK, copy=False)
            except zmq.Again:   # after a failed handshake: the monitor usually says why
                self._check_monitor()
                self._fail(f"peer {self.endpoint} dropped the connection (a failed secure handshake?)")
                return
            if data is not None:
                self.bytes_sent += len(data)
            self.ops_sent += 1

    def _receive_replies(self) -> None:
        sock = self.socket
        # Asking ZMQ_EVENTS whether a reply waits costs less than the zmq.Again raised by a
        # receive that finds none (once per wake-up: once per operation in sync mode).
        while sock.getsockopt(_EVENTS) & _POLLIN:
            frames = [sock.recv(_NOBLOCK)]
            while sock.getsockopt(_RCVMORE):
                frames.append(sock.recv(_NOBLOCK))
            if self._handshake is not None:
                try:
                    frames = self._unseal(frames)
                except session.SessionError as exc:
                    self._fail(f"secure session with peer {self.endpoint} ended: {exc}")
                    return
                except Exception as exc:   # a bug: the I/O thread must live to fail the waiters
                    log.exception("secure session error")
                    self._fail(f"secure session with peer {self.endpoint} ended: internal error {exc!r}")
                    return
                if frames is None:
                    continue
            try:
                reply = decode_reply(frames)
            except ProtocolError as exc:
                self._fail(f"malformed reply from peer: {exc}")
                return
            if reply.status == ERROR:
                self._fail(f"peer refused operation {reply.seq}: {reply.message or os.strerror(reply.errno)}")
                return
            if reply.durable is not None:   # before any ticket it covers completes
                self.peer_durable = reply.durable
            # The receiver applies in order, so an ack for seq n also covers everything before it.
            pending = self._pending
            acked = []
            while pending:
                seq = next(iter(pending))
                if seq > reply.seq:
                    break
                acked.append(pending.pop(seq))
            if acked:
                self._give_back(len(acked))
                for ticket in acked:
                    ticket.complete(payload=reply.payload if ticket.seq == reply.seq else b"")

    def _give_back(self, count: int) -> None:
        """``count`` operations left the window (acknowledged, or failed)."""
        with self._lock:
            self._free += count
            if self._free <= count:      # it was used up: a submit may be waiting
                self._room.notify_all()

    def _unseal(self, frames: list[bytes]) -> list | None:
        """(aead) The reply's plaintext frames, or None for the handshake's ACCEPT (answered here)."""
        assert self._handshake is not None
        if session.is_handshake(frames[0]):
            if self._channel is not None or len(frames) != 1:
                raise session.SessionError(session.refusal_text(frames[0]) or "a handshake message inside the session")
            confirm, self._channel = self._handshake.accept(frames[0])
            try:
                self.socket.send(confirm, zmq.NOBLOCK)
            except zmq.Again:
                raise session.SessionError("the connection was dropped during the handshake") from None
            self._send_outbox()   # right behind CONFIRM: no extra round trip
            return None
        if self._channel is None:
            raise session.SessionError("a sealed frame before the handshake")
        return self._channel.recv.open(frames)

    def _check_monitor(self) -> None:
        while True:
            try:
                event = recv_monitor_message(self._monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            if event["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self._fail(f"peer {self.endpoint} refused this node's key (is its public key in the "
                           "peer's keys directory?)")
            elif event["event"] in (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
                self._fail(f"secure handshake with peer {self.endpoint} failed (do both sides have "
                           f"each other's public key, and the same {session.ENGINE_ENV}? this node: {self.engine})")
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                self._fail(f"connection to peer {self.endpoint} lost")

    def _check_timeouts(self) -> None:
        if (self._channel is None and self._handshake is not None and self._outbox
                and time.monotonic() - self._started > self.ack_timeout):
            self._fail(f"peer {self.endpoint} did not complete the secure handshake within {self.ack_timeout:g}s")
        if self._pending:
            oldest = next(iter(self._pending.values()))
            if time.monotonic() - oldest.sent_at > self.ack_timeout:
                self._fail(f"peer {self.endpoint} did not acknowledge within {self.ack_timeout:g}s")

    def _fail(self, reason: str) -> None:
        """Fail every pending ticket; later submits fail at once. Only the first reason counts."""
        with self._lock:
            if self.lost_reason is not None:
                return
            self.lost_reason = reason
            failed = list(self._pending.values()) + [t for t, _, _ in self._outbox]
            if self._held is not None:
                failed.append(self._held.ticket)
                self._held = None
            self._pending.clear()
            self._outbox.clear()
        log.warning("replication stopped: %s", reason)
        if self.on_lost is not None:
            try:
                self.on_lost(reason, failed)
            except Exception:  # noqa: BLE001 - the waiters must wake whatever happens
                log.exception("on_lost handler failed")
        self._give_back(len(failed))
        for ticket in failed:
            ticket.complete(reason)


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
