"""What the receiver's loop needs of its transport, whichever link engine carries the messages.

Why: the loop (``Receiver.serve_forever``) decodes, applies and acknowledges; how the bytes
arrive is the engine's business: a ZeroMQ ROUTER for ``curve`` and ``aead``
(:mod:`hamirror.replica.serve_zmq`), a TCP listener of the receiver's own for ``stream``
(:mod:`hamirror.replica.serve_stream`). Each hands over authenticated plaintext only.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING, Protocol

from hamirror.link import keys, session
from hamirror.replica.serve_stream import StreamServer

if TYPE_CHECKING:   # pyzmq only where a ZeroMQ engine runs (link/z85.py says why)
    import zmq


class Transport(Protocol):
    """One listening endpoint and its connections, served from the receiver's one thread."""

    endpoint: str              # the real ``tcp://host:port`` after bind (a port 0 or ``*`` resolved)
    connections: int           # TCP connections open on the endpoint (authenticated or not)
    closed_at: float | None    # wall clock the last one closed

    def receive(self, wait: bool) -> tuple[Hashable, list | None] | None:
        """The next message as (connection id, plaintext frames), waiting up to the idle time if
        ``wait``; None when nothing came. Frames None: something arrived and was dealt with here
        (a handshake message, a refusal), nothing to handle."""

    def send(self, connection: Hashable, reply: list) -> None:
        """A reply to that connection; dropped if it is gone (its session ended meanwhile)."""

    def send_all(self, replies: list[tuple[Hashable, list]]) -> None:
        """Replies in order, as :meth:`send` sends each (the stream engine writes each
        connection's in one system call)."""

    def connection_events(self) -> bool:
        """Bring ``connections`` up to date; True when the last connection closed since the last call."""

    def peer_address(self, connection: Hashable) -> str:
        """The peer's IP address, for audit lines ("unknown" if not known)."""

    def close(self) -> None:
        """Stop listening and close every connection."""


def listen(engine: str, bind: str, keys_dir: str, own: keys.KeyPair, sessions: session.Sessions | None,
           context: zmq.Context | None, idle_ms: int) -> Transport:
    """The transport of ``engine`` bound on ``bind``; ``sessions`` (aead, stream) opens and seals."""
    if engine == session.STREAM:
        assert sessions is not None
        return StreamServer(bind, sessions, idle_ms)
    assert context is not None
    from hamirror.replica.serve_zmq import ZmqServer

    return ZmqServer(context, bind, keys_dir, own, sessions, idle_ms)
