#!/usr/bin/env python3
"""CPU per MiB of the replication link, ``curve`` vs ``aead``, through a real LinkClient and receiver.

The receiver is a real ``hamirror mirror receive`` process (directory on /dev/shm, so the disk
does not blur the figures); the sender is a LinkClient in this process, as in a mount daemon.
Each run: HELLO, CREATE, then ``--mib`` WRITEs of 1 MiB pipelined (the client's window), and
the wait for the last acknowledgement; then the same with ``--small`` WRITEs of 4 KiB (the
per-message cost, where CURVE works in C and ``aead`` calls OpenSSL from Python per frame). Measured per run: this process's CPU (every thread:
the caller, the link's I/O thread, ZeroMQ's), the receiver process's CPU (all threads), wall
time. Engines alternate run by run (interleaved); the median of ``--rounds`` runs is printed.

    .venv/bin/python scripts/bench/link_engines.py [--mib 256] [--small 5000] [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import psutil
import zmq

from hamirror.syscalls import keep_message_buffers
from hamirror.link import keys, session
from hamirror.link.client import LinkClient
from hamirror.link.protocol import Op

MIB = 1 << 20
ENGINES = (session.CURVE, session.AEAD)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_run(engine: str, count: int, size: int, work: str) -> dict:
    directory = tempfile.mkdtemp(prefix="dir-", dir=work)
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    receiver = subprocess.Popen([sys.executable, "-m", "hamirror", "mirror", "receive", "--dir", directory,
                                 "--bind", endpoint, "--keys", os.path.join(work, "keys")],
                                env={**os.environ, session.ENGINE_ENV: engine},
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        receiver.stdout.readline()   # "receiving into ...": listening
        peer = psutil.Process(receiver.pid)
        context = zmq.Context()
        client = LinkClient(endpoint, os.path.join(work, "keys"), context=context, engine=engine, ack_timeout=60)
        try:
            client.hello(30)
            client.submit(Op.CREATE, (0o100644, 0, 0, 0), (b"f",)).wait(30)
            block = os.urandom(size)
            peer_before, own_before = peer.cpu_times(), time.process_time()
            started = time.perf_counter()
            for i in range(count):
                ticket = client.submit(Op.WRITE, (i * size,), (b"f",), data=block)
            assert ticket.wait(120) and ticket.error is None, ticket.error
            wall = time.perf_counter() - started
            own = time.process_time() - own_before
            peer_after = peer.cpu_times()
        finally:
            client.close()
            context.term()
        theirs = (peer_after.user - peer_before.user) + (peer_after.system - peer_before.system)
        assert os.path.getsize(os.path.join(directory, "f")) == count * size
        unit = 1000 * MIB / size if size == MIB else 1e6   # ms per MiB, or us per message
        return {"sender": own * unit / count, "receiver": theirs * unit / count,
                "total": (own + theirs) * unit / count, "MB_per_s": count * size / wall / 1e6}
    finally:
        receiver.terminate()
        receiver.wait(30)
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=256, help="MiB written per run (default %(default)s)")
    parser.add_argument("--small", type=int, default=5000, help="4 KiB WRITEs per run (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=5, help="runs per engine, interleaved (default %(default)s)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    keep_message_buffers()   # as the mount daemon does
    work = tempfile.mkdtemp(prefix="hamirror-link-engines-", dir="/dev/shm")
    try:
        keys.generate(os.path.join(work, "keys"), "bench")
        shapes = {"1MiB": (args.mib, MIB), "4KiB": (args.small, 4096)}
        runs = {(shape, engine): [] for shape in shapes for engine in ENGINES}
        for _ in range(args.rounds):
            for shape, (count, size) in shapes.items():
                for engine in ENGINES:
                    runs[shape, engine].append(one_run(engine, count, size, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {f"{shape} {engine}": {key: round(statistics.median(r[key] for r in results), 3) for key in results[0]}
              for (shape, engine), results in runs.items()}
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(f"median of {args.rounds} interleaved runs: {args.mib} x 1 MiB WRITE (CPU ms per MiB), "
          f"{args.small} x 4 KiB WRITE (CPU us per message); receiver on /dev/shm")
    print(f"{'run':12} {'sender':>10} {'receiver':>10} {'total':>10} {'MB/s':>8}")
    for name, r in result.items():
        print(f"{name:12} {r['sender']:10.3f} {r['receiver']:10.3f} {r['total']:10.3f} {r['MB_per_s']:8.1f}")


if __name__ == "__main__":
    main()
