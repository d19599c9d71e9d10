"""The ``curve`` and ``aead`` engines' transport: one I/O thread owns a ZeroMQ DEALER.

:class:`~hamirror.link.client.LinkClient` queues each message in an outbox; the I/O thread
sends it, reads the replies and watches the socket's monitor. A submit wakes the thread through
an eventfd only while it sleeps in poll (see ``_asleep``). With ``aead`` ZeroMQ runs its NULL
mechanism and every frame is sealed here (link/session.py) once the handshake is done.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from typing import TYPE_CHECKING

import zmq

from hamirror.link import keys, session
from hamirror.link.monitor import recv_monitor_message
from hamirror.link.protocol import kept

if TYPE_CHECKING:
    from hamirror.link.client import LinkClient, Ticket

log = logging.getLogger(__name__)

_NOBLOCK = int(zmq.NOBLOCK)   # plain ints: pyzmq's enum flags cost an Enum call per use
_NOBLOCK_MORE = int(zmq.NOBLOCK | zmq.SNDMORE)
_EVENTS, _POLLIN, _RCVMORE = int(zmq.EVENTS), int(zmq.POLLIN), int(zmq.RCVMORE)


class ZmqTransport:
    """See the module docstring; the methods are :class:`~hamirror.link.client.Transport`'s."""

    def __init__(self, client: "LinkClient", own: keys.KeyPair, server_key: bytes, context: zmq.Context) -> None:
        self.client = client
        self.endpoint = client.endpoint
        self._outbox: collections.deque = collections.deque()
        self._wakeup = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        # The I/O thread is (about to be) in poll: a submit must wake it. While it works it looks
        # at the outbox and the held message before it polls again, so a submit then needs no
        # eventfd write (a syscall, and a GIL hand-over, per operation in barrier mode).
        self._asleep = True
        self.socket = context.socket(zmq.DEALER)
        self.socket.linger = 0
        self.socket.sndhwm = self.socket.rcvhwm = 0
        # aead: ZeroMQ's NULL mechanism, and every frame sealed here once the handshake is done.
        self._handshake: session.ClientHandshake | None = None
        self._channel: session.Channel | None = None
        if client.engine == session.AEAD:
            self._handshake = session.ClientHandshake(own.secret, own.public, server_key)
        else:
            keys.secure_client(self.socket, own, server_key)
        self._monitor = self.socket.get_monitor_socket(
            zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
            | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
        self._thread = threading.Thread(target=self._run, name="hamirror-link", daemon=True)
        self._running = True
        self._started = 0.0

    def start(self) -> None:
        self.socket.connect(self.endpoint)
        self._started = time.monotonic()
        if self._handshake is not None:
            self.socket.send(self._handshake.init)   # queued by ZeroMQ until connected
        self._thread.start()

    def queue(self, ticket: "Ticket", header: bytes, data: bytes | None) -> None:
        self._outbox.append((ticket, header, kept(data)))   # sent by the I/O thread, later

    def kick(self) -> None:
        if self._asleep:
            os.eventfd_write(self._wakeup, 1)

    def held(self) -> None:
        pass   # kick() follows: the I/O thread's poll timeout covers the held message's due time

    def starved(self) -> None:
        pass   # the I/O thread reads every reply as it comes

    def wake(self) -> None:
        os.eventfd_write(self._wakeup, 1)

    def take_queued(self) -> list["Ticket"]:
        tickets = [t for t, _, _ in self._outbox]
        self._outbox.clear()
        return tickets

    def expect_hello(self, timeout: float) -> None:
        pass   # ZeroMQ reconnects on its own; the HELLO's ack timeout bounds the wait

    @property
    def queued(self) -> int:
        return len(self._outbox)

    def close(self) -> None:
        self._running = False
        os.eventfd_write(self._wakeup, 1)
        self._thread.join(5)
        self.socket.disable_monitor()
        self._monitor.close(0)
        self.socket.close(0)
        os.close(self._wakeup)

    # I/O thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        client, sock, wakeup, monitor = self.client, self.socket, self._wakeup, self._monitor
        # zmq.zmq_poll itself: zmq.Poller.poll and a dict of its answer cost as much as the poll.
        items = [(sock, _POLLIN), (wakeup, _POLLIN), (monitor, _POLLIN)]
        while self._running:
            self._asleep = True   # before looking at the outbox: a submit after this look wakes us
            if self._outbox or client._abort_reason is not None:
                timeout = 0
            else:
                timeout = int(client._wait(time.monotonic()) * 1000) + 1
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
            client._flush_held(time.monotonic())
            if self._outbox:
                self._send_outbox()
            if replies:
                self._receive_replies()
            if monitored:
                self._check_monitor()
            if (self._channel is None and self._handshake is not None and self._outbox
                    and time.monotonic() - self._started > client.ack_timeout):
                client._fail(f"peer {self.endpoint} did not complete the secure handshake within "
                             f"{client.ack_timeout:g}s")
            client._tick()

    def _send_outbox(self) -> None:
        if self._handshake is not None and self._channel is None:
            return   # nothing leaves before the receiver proved its key (the handshake sends it then)
        client = self.client
        while self._outbox:
            ticket, header, data = self._outbox.popleft()
            if client.lost_reason is not None:
                client._give_back(1)
                ticket.complete(client.lost_reason)
                continue
            client._sent(ticket, data)
            parts = [header] if data is None else [header, data]
            if self._channel is not None:
                try:
                    parts = self._channel.send.seal(parts)
                except session.SessionError as exc:
                    client._fail(f"secure session with peer {self.endpoint} ended: {exc}")
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
                client._fail(f"peer {self.endpoint} dropped the connection (a failed secure handshake?)")
                return

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
                    self.client._fail(f"secure session with peer {self.endpoint} ended: {exc}")
                    return
                except Exception as exc:   # a bug: the I/O thread must live to fail the waiters
                    log.exception("secure session error")
                    self.client._fail(f"secure session with peer {self.endpoint} ended: internal error {exc!r}")
                    return
                if frames is None:
                    continue
            if not self.client._on_reply(frames):
                return

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
        client = self.client
        while True:
            try:
                event = recv_monitor_message(self._monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            if event["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                client._fail(f"peer {self.endpoint} refused this node's key (is its public key in the "
                             "peer's keys directory?)")
            elif event["event"] in (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
                client._fail(f"secure handshake with peer {self.endpoint} failed (do both sides have "
                             f"each other's public key, and the same {session.ENGINE_ENV}? this node: "
                             f"{client.engine})")
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                client._fail(f"connection to peer {self.endpoint} lost")
