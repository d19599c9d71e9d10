"""Two ZeroMQ sockets of one process joined over loopback, plain or CURVE with fresh keys.

Shared by the benchmarks that time the transport alone (aead.py, micro.py), so both set CURVE up
the way the link does (the server end holds the server key) and a comparison of their figures is
not a comparison of two setups.
"""

from __future__ import annotations

import zmq


def loopback(ctx: zmq.Context, server_type: int, client_type: int, curve: bool) -> tuple[zmq.Socket, zmq.Socket]:
    """(server, client): the server bound to a free port of 127.0.0.1, the client connected to it."""
    server, client = ctx.socket(server_type), ctx.socket(client_type)
    if curve:
        spub, ssec = zmq.curve_keypair()
        cpub, csec = zmq.curve_keypair()
        server.curve_secretkey, server.curve_publickey, server.curve_server = ssec, spub, True
        client.curve_secretkey, client.curve_publickey, client.curve_serverkey = csec, cpub, spub
    port = server.bind_to_random_port("tcp://127.0.0.1")
    client.connect(f"tcp://127.0.0.1:{port}")
    return server, client
