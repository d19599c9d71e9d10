#!/usr/bin/env python3
"""Micro-measurements behind the sync-path profile (docs/performance.md):

1. cost of one 1 MiB pwrite on this disk: appending to a new file (page-cache allocation),
   and overwriting pages already cached;
2. ZeroMQ DEALER/ROUTER echo round trip over loopback, with and without CURVE, 1 B and 1 MiB.

    .venv/bin/python scripts/bench/micro.py [--count N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time

import zmq

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import workloads as w  # noqa: E402
from zmqpair import loopback  # noqa: E402


def pct(samples: list[float]) -> dict:
    s = sorted(samples)
    return {"p50": s[len(s) // 2], "p99": s[min(len(s) - 1, int(len(s) * 0.99))]}


def pwrite_costs(count: int) -> dict:
    work = tempfile.mkdtemp(prefix="hamirror-micro-", dir="/var/tmp")
    block = os.urandom(w.MIB)
    try:
        fd = os.open(os.path.join(work, "append"), os.O_WRONLY | os.O_CREAT, 0o644)
        append = []
        for i in range(count):
            t = time.perf_counter()
            os.pwrite(fd, block, i * w.MIB)
            append.append((time.perf_counter() - t) * 1000)
        over = []
        for i in range(count):
            t = time.perf_counter()
            os.pwrite(fd, block, i * w.MIB)
            over.append((time.perf_counter() - t) * 1000)
        os.close(fd)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"append_1MiB_ms": pct(append), "overwrite_cached_1MiB_ms": pct(over)}


def zmq_rtt(count: int, size: int, curve: bool) -> dict:
    ctx = zmq.Context()
    server, client = loopback(ctx, zmq.ROUTER, zmq.DEALER, curve)
    stop = threading.Event()

    def echo() -> None:
        poller = zmq.Poller()
        poller.register(server, zmq.POLLIN)
        while not stop.is_set():
            if poller.poll(100):
                ident, body = server.recv_multipart(copy=False)
                server.send_multipart([ident, b"k"])   # an ack, like the receiver's reply

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    payload = os.urandom(size)
    samples = []
    for i in range(count + 20):
        t = time.perf_counter()
        client.send(payload, copy=size < 65536)
        client.recv()
        if i >= 20:
            samples.append((time.perf_counter() - t) * 1000)
    stop.set()
    thread.join()
    server.close(0)
    client.close(0)
    ctx.term()
    return pct(samples)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=300)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    out = {"environment": w.environment(), **pwrite_costs(args.count)}
    for curve in (False, True):
        for size in (1, w.MIB):
            out[f"zmq_rtt_{'curve' if curve else 'plain'}_{'1B' if size == 1 else '1MiB'}_ms"] = \
                zmq_rtt(args.count, size, curve)
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        for key, value in out.items():
            if key != "environment":
                print(f"{key:32} p50 {value['p50']:7.3f}  p99 {value['p99']:7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
