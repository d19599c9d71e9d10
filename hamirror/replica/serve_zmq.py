"""The receiver's ZeroMQ transport: one ROUTER socket, for the ``curve`` and ``aead`` engines.

With ``curve`` the socket is a CURVE server and ZeroMQ's own I/O thread decrypts the next
messages while the receiver's thread applies the current one; with ``aead`` (link/session.py)
the socket uses NULL and the receiver's thread opens each sealed frame. ZeroMQ drops a peer that
sends a frame above ``MAX_FRAME`` (+ a sealed frame's counter and tag) before buffering it; its
monitor counts the TCP connections for the receiver's status.
"""

from __future__ import annotations

import logging
import time

import zmq

from hamirror.link import keys, session
from hamirror.link.monitor import recv_monitor_message
from hamirror.link.protocol import MAX_FRAME

log = logging.getLogger(__name__)


def _recv(socket: zmq.Socket, flags: int) -> list[zmq.Frame]:
    """One multipart message as frames (no copy of a WRITE's data); raises zmq.Again."""
    frame = socket.recv(flags, copy=False)
    frames = [frame]
    while frame.more:
        frame = socket.recv(0, copy=False)
        frames.append(frame)
    return frames


class ZmqServer:
    """A bound ROUTER socket (CURVE server with ZAP, or NULL with ``sessions``) and its monitor."""

    def __init__(self, context: zmq.Context, bind: str, keys_dir: str, own: keys.KeyPair,
                 sessions: session.Sessions | None, idle_ms: int) -> None:
        self.sessions = sessions
        if sessions is None:
            keys.start_authenticator(context, keys_dir)
        self.socket = context.socket(zmq.ROUTER)
        self.socket.linger = 0
        # Refused before it is buffered whole: the largest frame (+ a sealed frame's counter and tag).
        self.socket.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME if sessions is None else session.MAX_SEALED)
        if sessions is None:
            keys.secure_server(self.socket, own)
        self.monitor = self.socket.get_monitor_socket(zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
        self.socket.bind(bind)
        self.socket.rcvtimeo = idle_ms
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.connections = 0
        self.closed_at: float | None = None
        self._opening: zmq.Frame | None = None   # (aead) the message being opened: its address, if refused

    def receive(self, wait: bool) -> tuple[zmq.Frame, list | None] | None:
        """One blocking receive per message (ZeroMQ's own wait, bounded by the idle time): no
        poller and no receive that fails with EAGAIN after each message (docs/performance.md,
        "The receiver's CPU per message")."""
        try:
            frames = _recv(self.socket, 0 if wait else zmq.NOBLOCK)
        except zmq.Again:
            return None
        identity = frames[0]
        return identity, self._open(identity, frames[1:])

    def _open(self, identity: zmq.Frame, body: list[zmq.Frame]) -> list | None:
        """The frames to handle (aead: authenticated and decrypted), or None when there is nothing
        to handle (a handshake message, answered here, or a refused frame)."""
        if self.sessions is None:
            return [f.buffer for f in body]
        self._opening = body[0] if body else None
        try:
            plain, answer = self.sessions.incoming(identity.bytes, [f.buffer for f in body])
        except Exception:   # a bug in the session layer: that peer's session ends, the receiver serves on
            log.exception("secure session error")
            self.sessions.close(identity.bytes)
            plain, answer = None, session.refuse_message("internal error in the receiver's session layer")
        if answer is not None:
            self.socket.send_multipart([identity, answer])
        return plain

    def send(self, identity: zmq.Frame, reply: list) -> None:
        if self.sessions is not None:
            reply = self.sessions.seal(identity.bytes, reply)
            if reply is None:   # its session ended meanwhile: nobody can read it
                return
        send = self.socket.send
        send(identity, zmq.SNDMORE)
        for frame in reply[:-1]:
            send(frame, zmq.SNDMORE)
        send(reply[-1])

    def send_all(self, replies: list[tuple[zmq.Frame, list]]) -> None:
        for identity, reply in replies:
            self.send(identity, reply)

    def connection_events(self) -> bool:
        """Count connections from the monitor; True when the last one just closed."""
        closed = False
        while True:
            try:
                event = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                return closed
            if event["event"] == zmq.EVENT_ACCEPTED:
                self.connections += 1
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                self.connections = max(0, self.connections - 1)
                if self.connections == 0:
                    self.closed_at, closed = time.time(), True

    def peer_address(self, identity: object) -> str:
        """(aead) The address of the message being opened (ZeroMQ's frame metadata)."""
        try:
            return (self._opening.get("Peer-Address") if self._opening is not None else "") or "unknown"
        except zmq.ZMQError:
            return "unknown"

    def close(self) -> None:
        self.socket.disable_monitor()
        self.monitor.close(0)
        self.socket.close(0)
