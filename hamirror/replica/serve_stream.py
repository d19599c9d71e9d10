"""The receiver's transport for the ``stream`` engine: a TCP listener of its own, no ZeroMQ.

Why: ZeroMQ's I/O threads cost about 89 µs of CPU per small message on each side
(docs/native.md, "Not native yet: the link"). Here the receiver's one thread reads its
connections itself (epoll, non-blocking sockets): each connection carries the ``aead``
session's messages as records (link/stream.py), opened and sealed through one
``session.Sessions`` keyed by a connection id.

What ZeroMQ's ZAP handshake and MAXMSGSIZE gave for free is bounded here, before anything
scarce is spent on a peer that has not proved its key (docs/security.md, "The stream engine"):
at most :data:`MAX_UNAUTHENTICATED` connections wait for their handshake (a new one closes the
oldest), each for at most :data:`HANDSHAKE_DEADLINE` seconds, and before the session exists
nothing is read beyond the next handshake record (at most ``stream.MAX_HANDSHAKE`` bytes);
established sessions are capped (``session.MAX_SESSIONS``, the oldest closed), and a peer that
leaves more than :data:`MAX_QUEUED` bytes of replies unread is closed. Whatever a peer sends
ends at worst its own connection, logged.
"""

from __future__ import annotations

import collections
import errno
import itertools
import logging
import select
import socket
import time

from hamirror.link import session, stream

log = logging.getLogger(__name__)

MAX_UNAUTHENTICATED = 8      # connections waiting for their handshake (a new one closes the oldest)
HANDSHAKE_DEADLINE = 5.0     # seconds from accept to an established session
MAX_QUEUED = 32 << 20        # reply bytes a connection may leave unread: above, it is closed
BACKLOG = 100                # as ZeroMQ's listen()
ACCEPTS = 16                 # connections accepted per wake-up (then the established ones are read)
ACCEPT_PAUSE = 0.5           # seconds the listener rests after running out of descriptors or memory
LOWAT_MAX = 2 << 20          # the most SO_RCVLOWAT asks (the kernel grows the receive buffer to hold it)
IOV = 64                     # buffers per sendmsg (a batch of replies with more is queued, then flushed)
_READ, _WRITE = select.EPOLLIN, select.EPOLLIN | select.EPOLLOUT
_EXHAUSTED = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))


class ListenError(Exception):
    """The endpoint cannot be bound (the receiver says so with the endpoint)."""


def parse_endpoint(bind: str) -> tuple[str, int]:
    """(host, port) of ``tcp://HOST:PORT`` as ZeroMQ binds it: ``*`` for every IPv4 address,
    ``[v6]`` in brackets, port ``*`` or 0 for one the system picks."""
    if not bind.startswith("tcp://") or ":" not in bind[6:]:
        raise ValueError(f"{bind!r}: the stream engine listens on tcp://HOST:PORT")
    host, port = bind[6:].rsplit(":", 1)
    host = "0.0.0.0" if host == "*" else host.removeprefix("[").removesuffix("]")
    if port == "*":
        return host, 0
    if not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{bind!r}: the port must be a number (0 to 65535) or *")
    return host, int(port)


class _Connection:
    """One accepted TCP connection: its records, its unsent reply bytes, its session's state."""

    __slots__ = ("id", "sock", "address", "accepted", "records", "established", "out", "queued", "open", "lowat")

    def __init__(self, ident: bytes, sock: socket.socket, address: str) -> None:
        self.id, self.sock, self.address = ident, sock, address
        self.accepted = time.monotonic()
        self.records = stream.Records(stream.MAX_HANDSHAKE)
        self.established = False
        self.out: collections.deque[memoryview] = collections.deque()
        self.queued = 0
        self.open = True
        self.lowat = 1


class StreamServer:
    """The listener and its connections; see the module's docstring."""

    def __init__(self, bind: str, sessions: session.Sessions, idle_ms: int) -> None:
        host, port = parse_endpoint(bind)
        try:
            family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                          flags=socket.AI_PASSIVE)[0]
        except socket.gaierror as exc:
            raise ListenError(f"{host!r}: {exc.strerror}") from None
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind(address)
            self.listener.listen(BACKLOG)
        except OSError as exc:
            self.listener.close()
            raise ListenError(exc.strerror or str(exc)) from None
        self.listener.setblocking(False)
        name = self.listener.getsockname()
        self.endpoint = f"tcp://[{name[0]}]:{name[1]}" if family == socket.AF_INET6 else f"tcp://{name[0]}:{name[1]}"
        self.sessions = sessions
        self.idle = idle_ms / 1000
        # epoll itself, not ``selectors``: its select() costs ~0.6 µs more per wake-up, and the
        # receiver wakes once per message (docs/performance.md)
        self.epoll = select.epoll()
        self.epoll.register(self.listener.fileno(), _READ)
        self._listener_fd = self.listener.fileno()
        self._by_fd: dict[int, _Connection] = {}
        self.connections = 0
        self.closed_at: float | None = None
        self._last_closed = False
        self._ids = itertools.count(1)
        self._open: dict[bytes, _Connection] = {}
        self._waiting: dict[bytes, _Connection] = {}        # not yet authenticated, oldest first
        self._established: dict[bytes, _Connection] = {}    # oldest first
        self._ready: collections.deque[tuple[bytes, list]] = collections.deque()
        self._accept_paused_until: float | None = None

    # the loop's interface ---------------------------------------------------------------------

    def receive(self, wait: bool) -> tuple[bytes, list | None] | None:
        """The next opened message: one recv may bring many; None when none came."""
        ready = self._ready
        if not ready:
            if self._waiting:
                self._expire(time.monotonic())
            if self._accept_paused_until is not None:
                self._resume_accepting(time.monotonic())
            by_fd = self._by_fd
            for fd, events in self.epoll.poll(self.idle if wait else 0):
                conn = by_fd.get(fd)
                try:
                    if conn is None:
                        if fd == self._listener_fd:
                            self._accept()
                        continue   # (closed meanwhile: by a cap, in this round)
                    # as ``selectors``: an error or a hang-up wakes the reader (and the writer)
                    if events & _NOT_IN and conn.out:
                        self._flush(conn)
                    if conn.open and events & _NOT_OUT:
                        self._read(conn)
                except Exception:   # a bug, or a socket call that failed unexpectedly: one connection ends
                    log.exception("stream transport error")
                    if conn is not None:
                        self._close(conn)
        return ready.popleft() if ready else None

    def send(self, ident: bytes, reply: list) -> None:
        self.send_all([(ident, reply)])

    def send_all(self, replies: list[tuple[bytes, list]]) -> None:
        """Replies in order, sealed; each connection's as one ``sendmsg`` (a batch of replies held
        for the unsynced log's flush goes out in one system call)."""
        sender = self.sessions.sender
        if len(replies) == 1:   # the common case: one reply, one record, one buffer
            ident, reply = replies[0]
            conn = self._open.get(ident)
            direction = sender(ident) if conn is not None else None
            if direction is not None:   # else the connection or its session is gone: nobody can read it
                record = stream.seal_record(direction, reply)
                self._queue(conn, record, len(record[0]))
            return
        batches: dict[bytes, list] = {}
        for ident, reply in replies:
            conn = self._open.get(ident)
            direction = sender(ident) if conn is not None else None
            if direction is not None:
                batches.setdefault(ident, []).extend(stream.seal_record(direction, reply))
        for ident, buffers in batches.items():
            conn = self._open.get(ident)
            if conn is not None:   # (closed meanwhile: by a cap, in this batch)
                self._queue(conn, buffers)

    def connection_events(self) -> bool:
        closed, self._last_closed = self._last_closed, False
        return closed

    def peer_address(self, ident: object) -> str:
        conn = self._open.get(ident)   # type: ignore[call-overload]
        return conn.address if conn is not None else "unknown"

    def close(self) -> None:
        for conn in list(self._open.values()):
            self._close(conn)
        self.epoll.close()
        self.listener.close()

    # connections ------------------------------------------------------------------------------

    def _accept(self) -> None:
        for _ in range(ACCEPTS):
            try:
                sock, address = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _EXHAUSTED:
                    self._pause_accepting(exc)
                else:   # e.g. a connection reset before it was accepted: the next wake-up goes on
                    log.warning("cannot accept a connection: %s", exc)
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(next(self._ids).to_bytes(8, "big"), sock, str(address[0]))
            self.epoll.register(sock.fileno(), _READ)
            self._by_fd[sock.fileno()] = conn
            self._open[conn.id] = self._waiting[conn.id] = conn
            self.connections += 1
            if len(self._waiting) > MAX_UNAUTHENTICATED:
                self._end(next(iter(self._waiting.values())),
                          f"more than {MAX_UNAUTHENTICATED} connections without a session: the oldest closed")

    def _pause_accepting(self, exc: OSError) -> None:
        """Out of descriptors or memory, the pending connection stays in the backlog and the
        listener stays readable: polling it again at once would spin a core until something is
        freed. The listener rests :data:`ACCEPT_PAUSE` seconds instead (its connections keep
        being served), then accepting resumes; one warning per rest."""
        log.warning("cannot accept a connection: %s; accepting again in %g s", exc, ACCEPT_PAUSE)
        self.epoll.modify(self._listener_fd, 0)
        self._accept_paused_until = time.monotonic() + ACCEPT_PAUSE

    def _resume_accepting(self, now: float) -> None:
        if now >= self._accept_paused_until:   # type: ignore[operator]
            self._accept_paused_until = None
            self.epoll.modify(self._listener_fd, _READ)

    def _expire(self, now: float) -> None:
        """Close the connections whose handshake is late (the oldest are first)."""
        while self._waiting:
            conn = next(iter(self._waiting.values()))
            if now - conn.accepted < HANDSHAKE_DEADLINE:
                return
            self._end(conn, f"no session within {HANDSHAKE_DEADLINE:g} s of connecting")

    def _read(self, conn: _Connection) -> None:
        """Before the session: the next handshake record only (its size, then its body); after:
        whatever is there, in one recv, or the rest of a large record, in place."""
        records = conn.records
        room = records.reserve() if conn.established else None
        try:
            if room is not None:
                received = conn.sock.recv_into(room)
                closed = received == 0
            else:
                data = conn.sock.recv(stream.READ_SIZE if conn.established else records.wanted())
                closed = not data
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:   # e.g. reset by the peer
            log.info("connection from %s: %s", conn.address, exc)
            closed = True
        if closed:
            self._close(conn)
            return
        try:
            bodies = records.commit(received) if room is not None else records.feed(data)
            if conn.established:
                self._wake_at(conn, records.awaited())
            for body in bodies:
                self._record(conn, body)
                if not conn.open:
                    return
        except (stream.RecordError, session.SessionError) as exc:
            self._end(conn, str(exc))
        except Exception:   # a bug here: that connection ends, the receiver serves on
            log.exception("stream connection error")
            self._end(conn, "internal error in the receiver's session layer")

    def _wake_at(self, conn: _Connection, missing: int) -> None:
        """While a large record comes, epoll wakes this receiver once the rest of it is there
        (``SO_RCVLOWAT``), not for every piece TCP delivers (a 1 MiB write on loopback: several
        wake-ups and reads, each a round of this loop). A hang-up or an error still wakes it."""
        wanted = max(1, min(missing, LOWAT_MAX))
        if wanted != conn.lowat:
            try:
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, wanted)
                conn.lowat = wanted
            except OSError as exc:   # a hint: reading piece by piece is correct too
                log.debug("SO_RCVLOWAT %d: %s", wanted, exc)

    def _record(self, conn: _Connection, body: memoryview) -> None:
        frames = stream.record_frames(body) if conn.established else [body]
        plain, answer = self.sessions.incoming(conn.id, frames)
        if plain is not None:
            self._ready.append((conn.id, plain))
        elif answer is not None:
            self._queue(conn, [stream.handshake_record(answer)])
            if session.refusal_text(answer) is not None:   # logged and audited by the session layer
                self._close(conn)
        elif not conn.established and self.sessions.established(conn.id):
            self._established_now(conn)

    def _established_now(self, conn: _Connection) -> None:
        conn.established = True
        conn.records.limit = stream.MAX_MESSAGE
        del self._waiting[conn.id]
        self._established[conn.id] = conn
        if len(self._established) > session.MAX_SESSIONS:   # as Sessions: the oldest session goes
            oldest = next(iter(self._established.values()))
            log.warning("more than %d sessions: the oldest (from %s) closed", session.MAX_SESSIONS, oldest.address)
            self._close(oldest)

    def _end(self, conn: _Connection, reason: str) -> None:
        """A failure found here (not by the session layer): logged and audited as a refusal,
        answered with REFUSE if the connection can take it now, closed."""
        self.sessions.close(conn.id)
        if self.sessions.on_refused is not None:
            self.sessions.on_refused(conn.id, reason, b"", conn.established)
        if not conn.out:
            try:
                conn.sock.send(stream.handshake_record(session.refuse_message(reason)))
            except OSError:
                pass
        self._close(conn)

    def _close(self, conn: _Connection) -> None:
        if not conn.open:
            return
        conn.open = False
        self.sessions.close(conn.id)
        fd = conn.sock.fileno()
        self.epoll.unregister(fd)
        del self._by_fd[fd]
        conn.sock.close()
        conn.out.clear()
        del self._open[conn.id]
        self._waiting.pop(conn.id, None)
        self._established.pop(conn.id, None)
        self.connections -= 1
        if self.connections == 0:
            self.closed_at, self._last_closed = time.time(), True

    # sending ----------------------------------------------------------------------------------

    def _queue(self, conn: _Connection, buffers: list, size: int | None = None) -> None:
        """Send now what the socket takes (``size``: the bytes of ``buffers``, if known); the
        rest waits for EPOLLOUT, in order."""
        if size is None:
            size = sum(len(b) for b in buffers)
        if conn.out:   # behind what waits already
            views, sent = [memoryview(b) for b in buffers], 0
        else:
            if len(buffers) > IOV:   # a large batch of small replies: one buffer
                buffers = [b"".join(buffers)]
            sent = self._sendmsg(conn, buffers)
            if sent is None or sent == size:
                return
            views = _after([memoryview(b) for b in buffers], sent)
            self.epoll.modify(conn.sock.fileno(), _WRITE)
        conn.out.extend(views)
        conn.queued += size - sent
        if conn.queued > MAX_QUEUED:
            self._end(conn, f"more than {_size(MAX_QUEUED)} of replies left unread")

    def _flush(self, conn: _Connection) -> None:
        while conn.out:
            sent = self._sendmsg(conn, list(itertools.islice(conn.out, IOV)))
            if not sent:   # full, or closed
                return
            conn.queued -= sent
            while sent:
                head = conn.out[0]
                if sent < len(head):
                    conn.out[0] = head[sent:]
                    return   # the socket took less than offered: full again
                sent -= len(head)
                conn.out.popleft()
        self.epoll.modify(conn.sock.fileno(), _READ)

    def _sendmsg(self, conn: _Connection, views: list) -> int | None:
        """Bytes the socket took (0: its buffer is full); None if the connection failed (closed)."""
        try:
            return conn.sock.sendmsg(views)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            log.info("connection from %s: %s", conn.address, exc)
            self._close(conn)
            return None


_NOT_IN, _NOT_OUT = ~select.EPOLLIN, ~select.EPOLLOUT   # as ``selectors``: HUP and ERR wake both


def _after(views: list[memoryview], sent: int) -> list[memoryview]:
    """What is left of ``views`` once ``sent`` bytes went out."""
    for index, view in enumerate(views):
        if sent < len(view):
            return [view[sent:], *views[index + 1:]]
        sent -= len(view)
    return []


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n >> 10} KiB"
