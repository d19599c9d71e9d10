"""The ``stream`` engine's transport: the ``aead`` session's records on a TCP connection of its
own (link/stream.py), no ZeroMQ, no I/O thread between a submit and the socket.

- **Sending.** The submitting thread seals its message under the client's ``_lock`` (the lock
  that gives the sequence number: counter order = sequence order) and appends the record to
  ``_unsent``; once ``_lock`` is released it takes ``_send_lock`` and writes whatever is unsent,
  in order, with ``sendmsg``. A thread blocked in a send never holds ``_lock``, so the readers
  go on completing tickets. A send that cannot go on for ``ack_timeout`` (``SO_SNDTIMEO``: the
  peer stopped reading) ends the link.
- **Reading: one thread at a time holds the read role** (``_reading``, under ``_role``) and only
  it calls ``recv`` on the socket; whoever holds it completes tickets cumulatively and declares
  every failure, so ``on_lost`` runs before any waiter wakes whichever thread reads.
  A thread that waits on a ticket while no one reads takes the role (leader/follower,
  :meth:`wait_for`): a synchronous caller wakes on its own data, not on another thread's
  hand-off. A waiter that finds the role taken sleeps on its ticket's ``bell`` (one per ticket,
  passed on from follower to follower), released when the ticket completes or when the role is
  handed to it. The background reader connects, runs the handshake, then reads whenever no
  waiter does: blocked in ``recv_into`` once nothing was sent and no one waited for
  ``QUIET`` seconds (its receive timeout, ``SO_RCVTIMEO``, drives the keepalive and the ack
  timeout); while the link is busy it stands aside: every ``STEP`` it reads what is there without
  blocking (unwaited acknowledgements, many per wake-up: barrier mode's window and activity log)
  and looks at the deadlines; a submit that finds the window used up calls it back at once. It
  cannot be woken from ``recv_into`` without data, so the first waiter after a quiet period is
  still handed its acknowledgement by it.
- **Held messages** leave when due from a timer thread, started at the first hold (barrier
  mode), notified by a hold while it is parked. (A timer that woke every ``HOLD`` on its own
  while holds kept coming, instead of a notify per hold, made barrier commits slower here:
  docs/performance.md, "The stream link's hand-offs".)
- ``abort``/``close`` wake the readers by shutting the connection down (an eventfd before it
  exists, the background reader's ``_park`` while it stands aside).
"""

from __future__ import annotations

import collections
import logging
import os
import select
import socket
import struct
import threading
import time
from _thread import allocate_lock as _allocate_lock
from typing import TYPE_CHECKING

from hamirror.link import keys, session, stream
from hamirror.link.client import KEEPALIVE
from hamirror.link.protocol import kept

if TYPE_CHECKING:
    from hamirror.link.client import LinkClient, Ticket

log = logging.getLogger(__name__)

RETRY = 0.1          # seconds between connection attempts while the receiver starts (ZeroMQ's reconnect_ivl)
CONNECT_TRY = 1.0    # seconds one attempt may take (an address that drops SYNs)
MAX_BATCH = 64       # records written by one sendmsg when several wait
LOOK = 0.01          # seconds: how often the reader looks at the deadlines while replies flow
STEP = 0.01          # seconds: how often the background reader, standing aside, reads what is there
QUIET = 0.1          # seconds without a waiter before the background reader blocks in recv again
_TIMEVAL = struct.Struct("@ll")
# Bytes asked of one recv on the mount's side: replies are acknowledgements of a few dozen bytes,
# and the rare large answer (a resync's) arrives in pieces. The receiver reads stream.READ_SIZE.
# Resident for the mount's life: 64 KiB rather than 256 (docs/performance.md, "Idle memory").
REPLY_READ_SIZE = 64 * 1024


def address(endpoint: str) -> tuple[str, int]:
    """(host, port) of ``tcp://HOST:PORT`` (an IPv6 host in brackets); ValueError otherwise."""
    host, _, port = endpoint.removeprefix("tcp://").rpartition(":")
    if not endpoint.startswith("tcp://") or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{session.ENGINE_ENV}={session.STREAM}: the peer must be tcp://HOST:PORT, "
                         f"not {endpoint!r}")
    return host.removeprefix("[").removesuffix("]"), int(port)


class StreamTransport:
    """See the module docstring; the methods are :class:`~hamirror.link.client.Transport`'s."""

    def __init__(self, client: "LinkClient", own: keys.KeyPair, server_key: bytes) -> None:
        self.client = client
        self.endpoint = client.endpoint
        self._address = address(client.endpoint)
        self._handshake = session.ClientHandshake(own.secret, own.public, server_key)
        self._channel: session.Channel | None = None
        self._records = stream.Records()
        self._waiting: list[tuple["Ticket", bytes, bytes | None]] = []   # queued before the handshake
        self._unsent: collections.deque[list] = collections.deque()    # sealed records, in order
        self._send_lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._failure: str | None = None    # a send's failure, declared by the reader
        self._wakeup = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._running = True
        self._created = time.monotonic()
        self._deadline = self._created + client.ack_timeout   # connected and handshaken by then
        self._recv_timeout = 0.0
        self._longest_wait = min(KEEPALIVE, client.ack_timeout)   # the reader looks at the clock this often
        self._reader = threading.Thread(target=self._read, name="hamirror-link", daemon=True)
        self._timer = threading.Condition(client._lock)
        self._timer_thread: threading.Thread | None = None
        self._timer_parked = False
        # The read role (module docstring): ``_role`` guards ``_reading`` and ``_followers`` for
        # a few statements at a time; the holder alone touches the socket's receive side,
        # ``_records``, ``_buffer`` and the receive timeout.
        self._role = _allocate_lock()
        self._reading = False
        self._followers: list["Ticket"] = []   # waiters asleep on their bell while another reads
        self._ready = False                    # the session is established: a waiter may read
        self._last_waiter = 0.0                # monotonic time a thread last waited on a ticket
        self._park = _allocate_lock()          # the background reader's sleep while it stands aside
        self._park.acquire()
        self._buffer = bytearray(REPLY_READ_SIZE)
        self._view = memoryview(self._buffer)
        self._next_look = 0.0

    def start(self) -> None:
        self._reader.start()

    # Transport API (see client.Transport) ----------------------------------------------------

    def queue(self, ticket: "Ticket", header: bytes, data: bytes | None) -> None:
        if self._channel is None:
            self._waiting.append((ticket, header, kept(data)))   # sealed once the session exists
        else:
            self._seal(ticket, header, data)

    def _seal(self, ticket: "Ticket", header: bytes, data: bytes | None) -> None:
        """(``_lock`` held) Seal the message into ``_unsent``: from here it awaits its ack."""
        self.client._sent(ticket, data)
        assert self._channel is not None
        try:
            self._unsent.append(stream.seal_record(self._channel.send, [header] if data is None else [header, data]))
        except session.SessionError as exc:   # the counter is exhausted: a new session is needed
            self._lost(f"secure session with peer {self.endpoint} ended: {exc}")

    def kick(self) -> None:
        """Write what is sealed and unsent, in this thread (whichever thread holds the send lock
        writes the records that others sealed meanwhile, in order)."""
        if not self._unsent:
            return
        with self._send_lock:
            unsent = self._unsent
            while unsent:
                buffers: list = []
                while unsent and len(buffers) < MAX_BATCH:
                    buffers += unsent.popleft()
                self._write(buffers)

    def held(self) -> None:
        if self._timer_thread is None:
            self._timer_thread = threading.Thread(target=self._time_holds, name="hamirror-link-hold", daemon=True)
            self._timer_thread.start()
        elif self._timer_parked:
            self._timer.notify()

    def starved(self) -> None:
        """The window is used up: the background reader stops standing aside and reads."""
        _ring(self._park)

    def wake(self) -> None:
        if self._wakeup >= 0:   # not closed (an abort after close() must not write a reused fd)
            os.eventfd_write(self._wakeup, 1)
        _ring(self._park)
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)   # the reader's recv returns at once
            except OSError:
                pass

    def take_queued(self) -> list["Ticket"]:
        tickets = [ticket for ticket, _, _ in self._waiting]
        self._waiting.clear()
        return tickets   # the unsent records' tickets are pending already; the reader drops them

    def expect_hello(self, timeout: float) -> None:
        """Keep trying to connect until just before the HELLO's own timeout (so the failure
        names the connection's error), or ``ack_timeout`` after the start if that is later."""
        self._deadline = max(self._deadline, time.monotonic() + max(timeout - RETRY, 0.0))

    @property
    def queued(self) -> int:
        return len(self._waiting) + len(self._unsent)

    def close(self) -> None:
        if self._wakeup < 0:
            return   # closed already
        self._running = False
        with self._timer:
            self._timer.notify()
        self.wake()
        self._reader.join(5)
        if self._timer_thread is not None:
            self._timer_thread.join(5)
        if self._sock is not None:
            self._sock.close()
        wakeup, self._wakeup = self._wakeup, -1
        os.close(wakeup)

    # Sending ---------------------------------------------------------------------------------

    def _write(self, buffers: list) -> None:
        """(``_send_lock`` held) All of ``buffers``, or the link's failure declared."""
        sock = self._sock
        if sock is None or self._failure is not None or self.client.lost_reason is not None:
            return
        total = sum(len(b) for b in buffers)
        try:
            sent = sock.sendmsg(buffers, (), socket.MSG_NOSIGNAL)
            while sent < total:   # only after SO_SNDTIMEO or a signal: what is left
                views = [memoryview(b).cast("B") for b in buffers]
                while sent >= len(views[0]):
                    sent -= len(views.pop(0))
                views[0] = views[0][sent:]
                buffers, total = views, sum(len(v) for v in views)
                sent = sock.sendmsg(buffers, (), socket.MSG_NOSIGNAL)
        except BlockingIOError:
            self._lost(f"peer {self.endpoint} did not read what was sent for {self.client.ack_timeout:g}s")
        except OSError as exc:
            self._lost(f"connection to peer {self.endpoint} lost ({exc.strerror or exc})")

    def _lost(self, reason: str) -> None:
        """A sending thread cannot fail the link itself (``on_lost`` runs on the reader, and the
        sender may hold its caller's locks): it records why and wakes the reader."""
        if self._failure is None:
            self._failure = reason
        self.wake()

    # The reader ------------------------------------------------------------------------------

    def _read(self) -> None:
        client = self.client
        try:
            sock = self._connect()
            if sock is not None:
                self._serve(sock)
        except Exception as exc:   # a bug: the waiters must still wake
            log.exception("link reader failed")
            client._fail(f"link to peer {self.endpoint} stopped: internal error {exc!r}")
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)   # the peer sees the session end
            except OSError:
                pass
        with self._send_lock:   # a send in progress has failed at the shutdown and let go of it
            self._unsent.clear()   # only the send lock's holder takes from it: never cleared under a sender

    def _connect(self) -> socket.socket | None:
        """The connection, retried as ZeroMQ would while the receiver starts; None if the link
        failed or closed first."""
        client, last = self.client, "not tried"
        poller = select.poll()
        poller.register(self._wakeup, select.POLLIN)
        while self._running:
            if client._abort_reason is not None:
                client._fail(client._abort_reason)
                return None
            try:
                sock = socket.create_connection(self._address, timeout=CONNECT_TRY)
                break
            except OSError as exc:
                last = exc.strerror or str(exc)
            if time.monotonic() > self._deadline and self._waiting:
                client._fail(f"could not connect to peer {self.endpoint} within "
                             f"{self._deadline - self._created:.3g}s ({last})")
                return None
            if poller.poll(RETRY * 1000):
                os.eventfd_read(self._wakeup)
        else:
            return None
        sock.settimeout(None)   # blocking: Python polls before every call on a socket with a timeout
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(client.ack_timeout))
        self._sock = sock
        if not self._running:   # close() saw no socket yet
            return None
        if client._abort_reason is not None:   # nor did abort()
            client._fail(client._abort_reason)
            return None
        with self._send_lock:
            self._write([stream.handshake_record(self._handshake.init)])
        return sock

    def _serve(self, sock: socket.socket) -> None:
        """The background reader: reads while no waiter does (module docstring)."""
        client = self.client
        self._timeout(min(self._longest_wait, self._deadline - time.monotonic()))
        while self._running and client.lost_reason is None:
            now = time.monotonic()
            # Aside while the link is busy: waiters read, and the others' acks are read STEP by
            # STEP (one wake-up for many), not one wake-up per reply.
            aside = self._ready and client._free > 0 and now - max(self._last_waiter, client._last_send) < QUIET
            with self._role:
                mine = not self._reading
                if mine:
                    self._reading = True
            if mine:
                try:
                    if aside:
                        size = self._drain(sock)
                    else:
                        wait = client._ack_wait(now)
                        if self._channel is None:
                            wait = min(wait, max(0.001, self._deadline - now))
                        self._timeout(min(wait, self._longest_wait))
                        size = self._read_once(sock, 0)
                finally:
                    self._hand_over()
                if size is None:
                    return
                if not aside:
                    continue
            self._park.acquire(True, STEP)   # a waiter reads: stand aside

    def wait_for(self, ticket: "Ticket", timeout: float | None) -> bool:
        """``Ticket.wait`` on this transport: read the socket while no one else does (the
        acknowledgement wakes this thread itself), else sleep until the ticket completes or the
        read role is handed over."""
        now = self._last_waiter = time.monotonic()
        deadline = None if timeout is None else now + max(timeout, 0.0)
        client, role = self.client, self._role
        while not ticket.done:
            role.acquire()
            if not self._reading and self._ready and self._running and client.lost_reason is None:
                self._reading = True
                role.release()
                try:
                    self._lead(ticket, deadline)
                except Exception as exc:   # a bug: as on the background reader, every waiter must wake
                    log.exception("link reader failed")
                    client._fail(f"link to peer {self.endpoint} stopped: internal error {exc!r}")
                finally:
                    self._hand_over()
            else:
                # One bell per ticket, for all its followers (several threads may wait on one
                # ticket: a barrier's newest): each one woken passes it on to the next.
                bell = ticket.bell
                if bell is None:
                    bell = _allocate_lock()
                    bell.acquire()
                    ticket.bell = bell   # set before looking at done: see Ticket.complete
                else:
                    bell.acquire(False)   # re-armed: a wake-up passed on earlier is spent
                self._followers.append(ticket)
                role.release()
                if ticket.done or bell.acquire(True, -1 if deadline is None else
                                               max(deadline - time.monotonic(), 0.0)):
                    _ring(bell)   # the next follower of this ticket wakes in turn
                with role:
                    self._followers.remove(ticket)
            if deadline is not None and time.monotonic() >= deadline:
                break
        return ticket.done

    def _lead(self, ticket: "Ticket", deadline: float | None) -> None:
        """(read role held) Read until ``ticket`` completes, ``deadline`` passes or reading ends."""
        client, sock = self.client, self._sock
        assert sock is not None
        while not ticket.done:
            now = time.monotonic()
            wait = min(client._ack_wait(now), self._longest_wait)
            if deadline is not None:
                if now >= deadline:
                    return
                wait = min(wait, deadline - now)
            self._timeout(wait)
            if self._read_once(sock, 0) is None:
                return

    def _hand_over(self) -> None:
        """Give up the read role: to a follower whose ticket is still pending, if any."""
        with self._role:
            self._reading = False
            bell = next((t.bell for t in self._followers if not t.done), None)
        if bell is not None:
            _ring(bell)
        elif self.client.lost_reason is not None or not self._running or self.client._free <= 0:
            _ring(self._park)   # the background reader: to stop, or to read for the window

    def _drain(self, sock: socket.socket) -> int | None:
        """(read role held) What the socket holds now, without blocking; None once reading ends."""
        size = self._read_once(sock, socket.MSG_DONTWAIT)
        while size is not None and size > 0:
            size = self._read_once(sock, socket.MSG_DONTWAIT)
        return size

    def _read_once(self, sock: socket.socket, flags: int) -> int | None:
        """(read role held) One ``recv`` and what it brings; then the deadlines, after a timeout or
        every LOOK seconds while replies flow. The size read (-1: nothing now), None once the link
        failed or closed."""
        client = self.client
        try:
            size = sock.recv_into(self._buffer, 0, flags)
        except BlockingIOError:   # SO_RCVTIMEO, or nothing there: time to look at the deadlines
            size = -1
        except OSError as exc:
            self._failure = self._failure or f"connection to peer {self.endpoint} lost ({exc.strerror or exc})"
            size = 0
        if not self._running:
            return None
        if size == 0:
            lost = self._failure or f"connection to peer {self.endpoint} lost"
            if self._channel is None:   # a stream receiver answers a handshake, even to refuse it
                lost = f"{lost} during the secure handshake ({self._same_engine()})"
            client._fail(client._abort_reason or lost)
            return None
        if size > 0 and not self._received(self._view[:size]):
            return None
        # Not after each reply: the waiter it woke wants the GIL back.
        now = time.monotonic()
        if size > 0 and now < self._next_look:
            return size
        self._next_look = now + LOOK
        if self._channel is None and now > self._deadline and self._waiting:
            client._fail(f"peer {self.endpoint} did not complete the secure handshake within "
                         f"{self._deadline - self._created:.3g}s")
        client._tick()
        return None if client.lost_reason is not None else size

    def _timeout(self, seconds: float) -> None:
        """The reader's receive timeout, set only when it changes (one system call)."""
        seconds = max(0.001, round(seconds, 3))
        if seconds != self._recv_timeout and self._sock is not None:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(seconds))
            self._recv_timeout = seconds

    def _received(self, data: memoryview) -> bool:
        """Feed received bytes; False once the link failed."""
        client = self.client
        try:
            bodies = self._records.feed(data)
        except stream.RecordError as exc:
            client._fail(self._mismatch(exc) if self._channel is None else
                         f"secure session with peer {self.endpoint} ended: {exc}")
            return False
        for body in bodies:
            try:
                if self._channel is None:
                    self._established(*self._handshake.accept(bytes(body)))
                    continue
                if session.is_handshake(body):   # REFUSE: the receiver ended the session
                    raise session.SessionError(session.refusal_text(bytes(body)) or
                                               "a handshake message inside the session")
                frames = stream.open_record(self._channel.recv, body)
            except session.SessionError as exc:
                client._fail(f"secure session with peer {self.endpoint} ended: {exc}")
                return False
            if not client._on_reply(frames):
                return False
        return True

    def _mismatch(self, exc: Exception) -> str:
        return f"secure handshake with peer {self.endpoint} failed: {exc} ({self._same_engine()})"

    @staticmethod
    def _same_engine() -> str:
        return f"is it a receiver with the same {session.ENGINE_ENV}? this node: {session.STREAM}"

    def _established(self, confirm: bytes, channel: session.Channel) -> None:
        """CONFIRM, then what waited for the session, back to back (no extra round trip)."""
        with self.client._lock:
            self._channel = channel
            self._records.limit = stream.MAX_MESSAGE
            self._unsent.append([stream.handshake_record(confirm)])
            for ticket, header, data in self._waiting:
                self._seal(ticket, header, data)
            self._waiting.clear()
            self._ready = True
        self.kick()

    # Held messages -----------------------------------------------------------------------------

    def _time_holds(self) -> None:
        """Send each held message when due (client.HOLD), unless a submit or a flush sent it."""
        client, timer = self.client, self._timer
        while self._running:
            with timer:   # the client's _lock: a hold cannot appear between the look and the wait
                held = client._held
                if held is None:
                    self._timer_parked = True
                    timer.wait()
                    self._timer_parked = False
                    continue
                delay = held.due - time.monotonic()
                if delay > 0:
                    timer.wait(delay)
                    continue
            client._flush_held(time.monotonic())


def _ring(lock) -> None:
    """Release ``lock`` (a bell or the park) unless it is released already: a sleeper on it wakes."""
    try:
        lock.release()
    except RuntimeError:
        pass


def _timeval(seconds: float) -> bytes:
    whole = int(seconds)
    return _TIMEVAL.pack(whole, int((seconds - whole) * 1_000_000))
