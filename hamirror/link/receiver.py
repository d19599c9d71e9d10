"""The secondary's end of the link: receives operations, applies them in order, acknowledges.

One ROUTER socket, CURVE server, one thread. ZeroMQ's own I/O thread reads and decrypts the next
messages while this thread applies the current one, so a pipelining sender is never idle. A
session starts with HELLO; after that only the next sequence number of that session is applied,
so a stale or replayed stream (a primary that restarted, a duplicate) is refused, not merged.
"""

from __future__ import annotations

import errno
import logging
import threading
from dataclasses import dataclass, field

import zmq

from hamirror.link import keys
from hamirror.link.apply import Applier
from hamirror.link.protocol import ERROR, Message, Op, ProtocolError, decode, encode_reply

log = logging.getLogger(__name__)

EPROTO_STREAM = errno.EPROTO


@dataclass
class ReceiverStats:
    applied: int = 0
    bytes_applied: int = 0
    refused: int = 0
    errors: int = 0
    last_error: str = ""
    session: int = 0
    next_seq: int = 0
    by_op: dict[str, int] = field(default_factory=dict)


class Receiver:
    """Serves one replicated directory on one endpoint until stop() is called."""

    def __init__(self, directory: str, bind: str, keys_dir: str, context: zmq.Context | None = None) -> None:
        self.context = context or zmq.Context.instance()
        self.applier = Applier(directory)
        self.stats = ReceiverStats()
        self._stop = threading.Event()
        own = keys.load_own(keys_dir)
        keys.start_authenticator(self.context, keys_dir)
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.linger = 0
        keys.secure_server(self.socket, own)
        self.socket.bind(bind)
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self.socket.close(0)
        self.applier.close()

    def serve_forever(self) -> None:
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(200):
                continue
            while True:
                try:
                    frames = self.socket.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                identity, body = frames[0], frames[1:]
                reply = self.handle([f.buffer for f in body])
                self.socket.send_multipart([identity, *reply])

    def handle(self, frames: list) -> list[bytes]:
        """Decode, check the session order, apply; always return a reply, never raise."""
        try:
            msg = decode(frames)
        except ProtocolError as exc:
            return self._refuse(0, errno.EINVAL, f"malformed message: {exc}")
        if msg.op == Op.HELLO:
            return self._hello(msg)
        if msg.session != self.stats.session or msg.seq != self.stats.next_seq:
            return self._refuse(msg.seq, EPROTO_STREAM,
                                f"out of order: session {msg.session:x} seq {msg.seq}, "
                                f"expected session {self.stats.session:x} seq {self.stats.next_seq}")
        if msg.op == Op.PING:   # a barrier in the stream: it takes its sequence number too
            self.stats.next_seq += 1
            return encode_reply(msg.seq)
        try:
            self.applier.apply(msg)
        except OSError as exc:
            # Applying failed: this copy no longer matches the primary. Refuse the rest of the
            # session so the primary stops streaming over it and asks for a resync.
            self.stats.errors += 1
            self.stats.last_error = f"{msg.op.name} {msg.strs[0]!r}: {exc.strerror or exc}"
            self.stats.session = 0
            log.warning("apply failed, session closed: %s", self.stats.last_error)
            return encode_reply(msg.seq, ERROR, exc.errno or errno.EIO, self.stats.last_error)
        self._count(msg)
        return encode_reply(msg.seq)

    def _hello(self, msg: Message) -> list[bytes]:
        if msg.ints[0] != 1 or msg.session == 0:
            return self._refuse(msg.seq, errno.EPROTONOSUPPORT, "unsupported HELLO")
        self.stats.session = msg.session
        self.stats.next_seq = msg.seq + 1
        log.info("session %x started", msg.session)
        return encode_reply(msg.seq)

    def _count(self, msg: Message) -> None:
        stats = self.stats
        stats.next_seq += 1
        stats.applied += 1
        stats.by_op[msg.op.name] = stats.by_op.get(msg.op.name, 0) + 1
        if msg.data is not None:
            stats.bytes_applied += len(msg.data)

    def _refuse(self, seq: int, err: int, message: str) -> list[bytes]:
        self.stats.refused += 1
        self.stats.last_error = message
        log.warning("refused: %s", message)
        return encode_reply(seq, ERROR, err, message)
