"""The replication link's ZAP handler (ZeroMQ's authentication protocol, RFC 27) for CURVE.

A CURVE server socket asks the handler bound at ``inproc://zeromq.zap.01`` of its context whether
a client's public key may connect. pyzmq's ``ThreadAuthenticator`` does that in a thread that runs
an asyncio event loop, which imports asyncio and ssl: about 8 MB resident in every receiver and in
the agent's spawner, for a set lookup (docs/performance.md, "Idle memory of the data path"). This
is the same check in a plain thread: a client gets in only if its key is one of the trusted ones;
each refusal is audited with the client's address and key, as before.
"""

from __future__ import annotations

import threading

import zmq

from hamirror import audit
from hamirror.link import z85

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
VERSION = b"1.0"


def answer(request: list[bytes], trusted: frozenset[bytes]) -> tuple[list[bytes], tuple[str, str] | None]:
    """The reply to one ZAP request, and (address, audit text) if the client is refused (None if
    admitted). ``trusted``: Z85 public keys. Anything malformed is refused, never raised."""
    if len(request) < 6 or request[0] != VERSION:
        request_id = request[1] if len(request) > 1 else b""
        return ([VERSION, request_id, b"400", b"Malformed request", b"", b""],
                ("unknown", "replication link refused a client: Malformed request"))
    request_id, address, mechanism, credentials = request[1], request[3], request[5], request[6:]
    key = z85.encode(credentials[0]) if mechanism == b"CURVE" and len(credentials) == 1 \
        and len(credentials[0]) == 32 else b""
    if key and key in trusted:
        return [VERSION, request_id, b"200", b"OK", key, b""], None
    reason = b"Unknown key" if key else b"Unsupported mechanism"
    text = (f"replication link refused a client: {reason.decode()}" + (f" (public key {key.decode()})" if key else ""))
    return [VERSION, request_id, b"400", reason, b"", b""], (address.decode("utf-8", "replace") or "unknown", text)


class ZapHandler:
    """The ZAP handler of one ZeroMQ context, in its own thread, until :meth:`stop`."""

    def __init__(self, context: zmq.Context, trusted: frozenset[bytes]) -> None:
        self.trusted = trusted
        self._socket = context.socket(zmq.REP)
        self._socket.linger = 0
        self._socket.bind(ZAP_ENDPOINT)        # before any CURVE server socket asks: bound here, now
        self._wake_in = context.socket(zmq.PAIR)
        self._wake_out = context.socket(zmq.PAIR)
        endpoint = f"inproc://hamirror-zap-stop-{id(self)}"
        self._wake_out.bind(endpoint)
        self._wake_in.connect(endpoint)
        self._thread = threading.Thread(target=self._serve, name="hamirror-zap", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        poller.register(self._wake_out, zmq.POLLIN)
        try:
            while True:
                events = dict(poller.poll())
                if self._wake_out in events:
                    return
                if self._socket in events:
                    reply, refused = answer(self._socket.recv_multipart(), self.trusted)
                    self._socket.send_multipart(reply)
                    if refused is not None:
                        audit.refused("curve", *refused)
        except zmq.ContextTerminated:
            pass
        finally:
            self._socket.close(0)
            self._wake_out.close(0)

    def stop(self) -> None:
        try:
            self._wake_in.send(b"")
        except zmq.ZMQError:
            pass
        self._thread.join(5)
        self._wake_in.close(0)
