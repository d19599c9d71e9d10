#!/usr/bin/env python3
"""One round trip on the link, three ways: what a waited message costs before any disk work.

Why: a commit waits for at least one round trip (sync mode: two). This separates its layers on
the same machine: (0) a plain TCP echo between two processes (no ZeroMQ: what a link whose
threads own their socket would start from); (1) ZeroMQ alone between two processes (a trivial
echo, NULL and CURVE), the transport's floor; (2) a raw DEALER in the caller's thread to a real ``hamirror mirror receive``
(PING, CURVE): the floor plus the receiver's Python per message; (3) the same PING through
``LinkClient`` (its I/O thread, the ticket's wake-up): what the mount pays. Then the ``stream``
engine (no ZeroMQ, link/transport_stream.py): (4) a plain socket in the caller's thread doing its
handshake and sealed records, and (5) ``LinkClient`` with ``engine="stream"``, both to the
in-test stream peer in another process (tests/stream_peer.py: the real session and record
layers, nothing applied); with ``--stream-receiver``, (6) the same ``LinkClient`` to a real
``hamirror mirror receive`` run with ``HAMIRROR_LINK_ENGINE=stream``.

    flock /tmp/hamirror-lab.lock .venv/bin/python scripts/bench/linkrtt.py [--count N] [--stream-receiver]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import socket
import sys
import tempfile
import time

import zmq

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
from hamirror.link import keys, session, stream  # noqa: E402
from hamirror.link.client import LinkClient  # noqa: E402
from hamirror.link.protocol import Op, decode_reply, encode  # noqa: E402
from tests.mirror_fixtures import SESSION, MirrorPair, RawSender, free_port  # noqa: E402
from tests.stream_peer import StreamPeer  # noqa: E402

WARM = 200


def p50_p90(samples: list[float]) -> str:
    s = sorted(samples[WARM:])
    return f"p50 {s[len(s) // 2] * 1e6:5.0f} us  p90 {s[int(len(s) * 0.9)] * 1e6:5.0f} us"


def _echo(port: int, public: bytes, secret: bytes, curve: bool) -> None:
    context = zmq.Context()
    sock = context.socket(zmq.ROUTER)
    if curve:
        sock.curve_server, sock.curve_publickey, sock.curve_secretkey = True, public, secret
    sock.bind(f"tcp://127.0.0.1:{port}")
    while True:
        frames = sock.recv_multipart()
        if frames[1] == b"quit":
            return
        sock.send_multipart([frames[0], b"k"])


def echo_rounds(count: int, round_trip, quit) -> list[float]:
    """Time ``count`` round trips after WARM unmeasured ones, then tell the echo to end."""
    samples = []
    for _ in range(count + WARM):
        t = time.perf_counter()
        round_trip()
        samples.append(time.perf_counter() - t)
    quit()
    return samples


def stop(echo: multiprocessing.Process) -> None:
    echo.join(10)
    if echo.is_alive():
        echo.kill()


def _tcp_echo(listener: socket.socket) -> None:
    conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        data = conn.recv(4096)
        if not data or data.endswith(b"quit"):
            return
        conn.sendall(b"k")


def tcp_alone(count: int) -> list[float]:
    """A 100-byte request, a 1-byte answer, each side's thread on its own blocking socket."""
    listener = socket.create_server(("127.0.0.1", 0))
    echo = multiprocessing.Process(target=_tcp_echo, args=(listener,))
    echo.start()
    sock = socket.create_connection(listener.getsockname())
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        return echo_rounds(count, lambda: (sock.sendall(b"x" * 100), sock.recv(16)), lambda: sock.sendall(b"quit"))
    finally:
        stop(echo)
        sock.close()
        listener.close()


def zmq_alone(count: int, curve: bool) -> list[float]:
    server_public, server_secret = zmq.curve_keypair()
    port = free_port()
    echo = multiprocessing.Process(target=_echo, args=(port, server_public, server_secret, curve))
    echo.start()
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    if curve:
        sock.curve_serverkey = server_public
        sock.curve_publickey, sock.curve_secretkey = zmq.curve_keypair()
    sock.connect(f"tcp://127.0.0.1:{port}")
    try:
        return echo_rounds(count, lambda: (sock.send(b"x" * 100), sock.recv()), lambda: sock.send(b"quit"))
    finally:
        stop(echo)
        sock.close(0)
        context.term()


def _stream_peer(keys_dir: str, port: int) -> None:
    StreamPeer(keys_dir, port)
    while True:
        time.sleep(3600)


def _raw_stream(endpoint: str, keys_dir: str, count: int) -> list[float]:
    """The stream engine's round trip with nothing around it: this thread seals, sends, reads."""
    own = keys.load_own(keys_dir)
    handshake = session.ClientHandshake(own.secret, own.public, own.public)
    sock = socket.create_connection(("127.0.0.1", int(endpoint.rsplit(":", 1)[1])))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    records = stream.Records()

    def record() -> memoryview:
        bodies: list = []
        while not bodies:
            bodies = records.feed(sock.recv(65536))
        return bodies[0]
    sock.sendall(stream.handshake_record(handshake.init))
    confirm, channel = handshake.accept(bytes(record()))
    records.limit = stream.MAX_MESSAGE
    sock.sendall(stream.handshake_record(confirm))
    seq = 0

    def round_trip() -> None:
        nonlocal seq
        sock.sendmsg(stream.seal_record(channel.send, [encode(Op.HELLO if seq == 0 else Op.PING, SESSION, seq,
                                                              (1, 0) if seq == 0 else ())]))
        decode_reply(stream.open_record(channel.recv, record()))
        seq += 1
    try:
        return echo_rounds(count, round_trip, lambda: None)
    finally:
        sock.close()


def linkclient_rounds(client: LinkClient, count: int) -> list[float]:
    client.hello(10)
    linked = []
    for _ in range(count + WARM):
        t = time.perf_counter()
        client.submit(Op.PING).wait()
        linked.append(time.perf_counter() - t)
    client.close()
    return linked


def stream_peer_rounds(count: int) -> tuple[list[float], list[float]]:
    """(4) and (5): a plain socket, then LinkClient, to the in-test stream peer in another process."""
    base = tempfile.mkdtemp(prefix="hamirror-linkrtt-", dir="/var/tmp")
    keys_dir = os.path.join(base, "keys")
    keys.generate(keys_dir, "test")
    port = free_port()
    peer = multiprocessing.Process(target=_stream_peer, args=(keys_dir, port), daemon=True)
    peer.start()
    endpoint = f"tcp://127.0.0.1:{port}"
    try:
        client = LinkClient(endpoint, keys_dir, engine=session.STREAM)   # retries until the peer listens
        linked = linkclient_rounds(client, count)
        return _raw_stream(endpoint, keys_dir, count), linked
    finally:
        peer.kill()
        peer.join(10)
        shutil.rmtree(base, ignore_errors=True)


def stream_receiver_rounds(count: int) -> list[float]:
    """(6): LinkClient with the stream engine to a real receiver run with the same engine."""
    base = tempfile.mkdtemp(prefix="hamirror-linkrtt-", dir="/var/tmp")
    pair = MirrorPair(base, mode="sync")
    os.environ[session.ENGINE_ENV] = session.STREAM
    try:
        pair.start_receiver()
        return linkclient_rounds(LinkClient(pair.endpoint, pair.keys), count)
    finally:
        del os.environ[session.ENGINE_ENV]
        pair.stop()
        shutil.rmtree(base, ignore_errors=True)


def receiver_rounds(count: int) -> tuple[list[float], list[float]]:
    base = tempfile.mkdtemp(prefix="hamirror-linkrtt-", dir="/var/tmp")
    pair = MirrorPair(base, mode="sync")
    try:
        pair.start_receiver()
        raw = RawSender(pair)
        raw.hello()
        direct = []
        for _ in range(count + WARM):
            t = time.perf_counter()
            raw.exchange([encode(Op.PING, SESSION, raw.seq)])
            raw.seq += 1
            direct.append(time.perf_counter() - t)
        raw.close()
        return direct, linkclient_rounds(LinkClient(pair.endpoint, pair.keys), count)
    finally:
        pair.stop()
        shutil.rmtree(base, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--stream-receiver", action="store_true",
                        help="add LinkClient (stream) to a real receiver (one that serves the stream engine)")
    args = parser.parse_args(argv)
    print(f"TCP echo, two processes, no ZeroMQ {p50_p90(tcp_alone(args.count))}")
    print(f"ZeroMQ echo, two processes, NULL   {p50_p90(zmq_alone(args.count, False))}")
    print(f"ZeroMQ echo, two processes, CURVE  {p50_p90(zmq_alone(args.count, True))}")
    direct, linked = receiver_rounds(args.count)
    print(f"raw DEALER -> receiver, PING       {p50_p90(direct)}")
    print(f"LinkClient -> receiver, PING       {p50_p90(linked)}")
    raw_stream, stream_linked = stream_peer_rounds(args.count)
    print(f"raw stream socket -> stream peer   {p50_p90(raw_stream)}")
    print(f"LinkClient stream -> stream peer   {p50_p90(stream_linked)}")
    if args.stream_receiver:
        print(f"LinkClient stream -> receiver      {p50_p90(stream_receiver_rounds(args.count))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
