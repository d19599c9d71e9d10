#!/usr/bin/env python3
"""One round trip on the link, three ways: what a waited message costs before any disk work.

Why: a commit waits for at least one round trip (sync mode: two). This separates its layers on
the same machine: (0) a plain TCP echo between two processes (no ZeroMQ: what a link whose
threads own their socket would start from); (1) ZeroMQ alone between two processes (a trivial
echo, NULL and CURVE), the transport's floor; (2) a raw DEALER in the caller's thread to a real ``hamirror mirror receive``
(PING, CURVE): the floor plus the receiver's Python per message; (3) the same PING through
``LinkClient`` (the transport's threads, the ticket's wake-up): what the mount pays. ``--engine``
picks the link engine of (2) and (3), and may be given several times: one run, one receiver per
engine, in that order (``stream``: a raw client on a plain TCP connection, sealed records, no
ZeroMQ; LinkClient then writes from the submitting thread and reads on its reader thread).

    flock /tmp/hamirror-lab.lock .venv/bin/python scripts/bench/linkrtt.py [--count N] [--engine E ...]
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
from hamirror.link import session  # noqa: E402
from hamirror.link.client import LinkClient  # noqa: E402
from hamirror.link.protocol import Op, encode  # noqa: E402
from tests.mirror_fixtures import SESSION, MirrorPair, RawSender, free_port  # noqa: E402

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
        client = LinkClient(pair.endpoint, pair.keys)
        client.hello(10)
        linked = []
        for _ in range(count + WARM):
            t = time.perf_counter()
            client.submit(Op.PING).wait()
            linked.append(time.perf_counter() - t)
        client.close()
        return direct, linked
    finally:
        pair.stop()
        shutil.rmtree(base, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--engine", choices=(session.CURVE, session.AEAD, session.STREAM), action="append",
                        help="the link engine of the receiver, the raw client and LinkClient (repeatable; "
                             "default: curve)")
    args = parser.parse_args(argv)
    print(f"TCP echo, two processes, no ZeroMQ {p50_p90(tcp_alone(args.count))}")
    print(f"ZeroMQ echo, two processes, NULL   {p50_p90(zmq_alone(args.count, False))}")
    print(f"ZeroMQ echo, two processes, CURVE  {p50_p90(zmq_alone(args.count, True))}")
    for engine in args.engine or [session.CURVE]:
        os.environ[session.ENGINE_ENV] = engine   # the receiver process, RawSender and LinkClient read it
        direct, linked = receiver_rounds(args.count)
        raw = "raw DEALER" if engine != session.STREAM else "raw TCP   "
        print(f"{raw} -> receiver, PING ({engine:6}) {p50_p90(direct)}")
        print(f"LinkClient -> receiver, PING ({engine:6}) {p50_p90(linked)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
