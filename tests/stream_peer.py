"""A receiver of the ``stream`` engine, enough for the client's tests and linkrtt.py: the real
session layer (``session.Sessions``) and record layer (``stream.Records``) on a real socket over
loopback, answering each message with what ``answer`` makes of it (``protocol.encode_reply``).
Not the product's receiver (hamirror/replica/): nothing is applied.
"""

from __future__ import annotations

import socket
import threading
from typing import Callable

from hamirror.link import keys, protocol, session, stream
from hamirror.link.protocol import Op

CLOSE = object()   # an answer: close the connection


def acknowledge(message: protocol.Message):
    payload = protocol.hello_answer() if message.op == Op.HELLO else b""
    return protocol.encode_reply(message.seq, payload=payload)


class StreamPeer:
    """A ``stream`` receiver, enough for the client's tests (see the module docstring)."""

    def __init__(self, keys_dir: str, port: int = 0, trust: bool = True,
                 answer: Callable[[protocol.Message], object] = acknowledge) -> None:
        own = keys.load_own(keys_dir)
        self.sessions = session.Sessions(own.secret, own.public, {"test": own.public} if trust else {})
        self.listener = socket.create_server(("127.0.0.1", port))
        self.endpoint = f"tcp://127.0.0.1:{self.listener.getsockname()[1]}"
        self.answer = answer
        self.messages: list[protocol.Message] = []
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        identity = b"%d" % id(conn)
        records = stream.Records(stream.MAX_MESSAGE)   # CONFIRM and sealed records come back to back
        try:
            while data := conn.recv(1 << 20):
                for body in records.feed(data):
                    if not self.sessions.established(identity):
                        _, answer = self.sessions.incoming(identity, [bytes(body)])
                        if answer is not None:
                            conn.sendall(stream.handshake_record(answer))
                        continue
                    channel = self.sessions._sessions[identity]   # the established session's keys
                    message = protocol.decode([bytes(f) for f in stream.open_record(channel.recv, body)])
                    self.messages.append(message)
                    reply = self.answer(message)
                    if reply is CLOSE:
                        conn.close()
                        return
                    if reply is not None:
                        conn.sendmsg(stream.seal_record(channel.send, reply))
        except OSError:
            pass

    def ops(self) -> list[Op]:
        return [m.op for m in self.messages]

    def close(self) -> None:
        self.listener.close()
        for conn in self.connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
