#!/usr/bin/env python3
"""One round trip on the link, three ways: what a waited message costs before any disk work.

Why: a commit waits for at least one round trip (sync mode: two). This separates its layers on
the same machine: (0) a plain TCP echo between two processes (no ZeroMQ: what a link whose
threads own their socket would start from); (1) ZeroMQ alone between two processes (a trivial
echo, NULL and CURVE), the transport's floor; (2) a raw DEALER in the caller's thread to a real ``hamirror mirror receive``
(PING, CURVE): the floor plus the receiver's Python per message; (3) the same PING through
``LinkClient`` (the transport's threads, the ticket's wake-up): what the mount pays. ``--engine``
picks the link engine of (2) and (3), and may be given several times: one receiver process per
engine, (2) for each in turn, then (3) interleaved, 100 round trips per engine at a time, so that
the machine's load (other work on two cores) falls on each alike (``stream``: a raw client on a
plain TCP connection, sealed records, no ZeroMQ; LinkClient then writes from the submitting
thread and reads on its reader thread).

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


BLOCK = 100   # round trips per engine before the next engine's turn (LinkClient rows)


def raw_rounds(pair: MirrorPair, count: int) -> list[float]:
    """(2): the raw client of ``$HAMIRROR_LINK_ENGINE`` in this thread."""
    raw = RawSender(pair)
    raw.hello()
    direct = []
    for _ in range(count + WARM):
        t = time.perf_counter()
        raw.exchange([encode(Op.PING, SESSION, raw.seq)])
        raw.seq += 1
        direct.append(time.perf_counter() - t)
    raw.close()
    return direct


def client_rounds(clients: dict[str, LinkClient], count: int) -> tuple[dict[str, list[float]], dict[str, float]]:
    """(3): each engine's LinkClient in turn, BLOCK round trips at a time, so that a change in the
    machine's load falls on every engine alike. Also this process's CPU (all its threads: the
    sender's side) per round trip."""
    samples: dict[str, list[float]] = {engine: [] for engine in clients}
    cpu = dict.fromkeys(clients, 0.0)
    while len(samples[next(iter(clients))]) < count + WARM:
        for engine, client in clients.items():
            started = time.process_time()
            for _ in range(BLOCK):
                t = time.perf_counter()
                client.submit(Op.PING).wait()
                samples[engine].append(time.perf_counter() - t)
            cpu[engine] += time.process_time() - started
    return samples, {engine: spent / len(samples[engine]) for engine, spent in cpu.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--engine", choices=(session.CURVE, session.AEAD, session.STREAM), action="append",
                        help="the link engine of the receiver, the raw client and LinkClient (repeatable; "
                             "default: curve)")
    args = parser.parse_args(argv)
    engines = list(dict.fromkeys(args.engine or [session.CURVE]))
    print(f"TCP echo, two processes, no ZeroMQ {p50_p90(tcp_alone(args.count))}")
    print(f"ZeroMQ echo, two processes, NULL   {p50_p90(zmq_alone(args.count, False))}")
    print(f"ZeroMQ echo, two processes, CURVE  {p50_p90(zmq_alone(args.count, True))}")
    bases, pairs, clients = [], {}, {}
    try:
        for engine in engines:   # one receiver process per engine, all up for the interleaved rows
            os.environ[session.ENGINE_ENV] = engine   # the receiver process and RawSender read it
            bases.append(tempfile.mkdtemp(prefix="hamirror-linkrtt-", dir="/var/tmp"))
            pairs[engine] = MirrorPair(bases[-1], mode="sync")
            pairs[engine].start_receiver()
            raw = "raw DEALER" if engine != session.STREAM else "raw TCP   "
            print(f"{raw} -> receiver, PING ({engine:6}) {p50_p90(raw_rounds(pairs[engine], args.count))}")
        for engine, pair in pairs.items():
            clients[engine] = LinkClient(pair.endpoint, pair.keys, engine=engine)
            clients[engine].hello(10)
        samples, cpu = client_rounds(clients, args.count)
        for engine, linked in samples.items():
            print(f"LinkClient -> receiver, PING ({engine:6}) {p50_p90(linked)}  sender CPU "
                  f"{cpu[engine] * 1e6:4.0f} us  (interleaved by {BLOCK})")
    finally:
        for client in clients.values():
            client.close()
        for pair in pairs.values():
            pair.stop()
        for base in bases:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
