"""Measure what recording costs: ``python -m hamirror.journal.bench [--dir DIR]``.

The FUSE write path calls the journal on every mutation while the peer is away, so the two
figures that matter are a new item (one durable commit) and an already-recorded one (no SQL).
Use ``--dir`` on the disk that will hold the real journal: a commit costs that disk's fsync.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from collections.abc import Callable

from hamirror.journal.blocks import BLOCK_SIZE
from hamirror.journal.journal import Journal


def _per_call(n: int, call: Callable[[int], None]) -> float:
    """Mean seconds per call over ``n`` calls."""
    start = time.perf_counter()
    for i in range(n):
        call(i)
    return (time.perf_counter() - start) / n


def _threaded(journal: Journal, threads: int, per_thread: int) -> float:
    """Mean seconds per new path when ``threads`` threads record at once (wall clock)."""
    def work(t: int) -> None:
        for i in range(per_thread):
            journal.record_paths([f"mt{t}/{i}"])
    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return (time.perf_counter() - start) / (threads * per_thread)


def measure(directory: str, durable_calls: int = 200, cached_calls: int = 100_000) -> dict:
    """Seconds per call for each recording case, in a fresh journal under ``directory``."""
    path = os.path.join(directory, "bench.journal")
    with Journal(path) as j:
        figures = {
            "record_paths new path": _per_call(durable_calls, lambda i: j.record_paths([f"n{i}"])),
            "record_paths known path": _per_call(cached_calls, lambda i: j.record_paths(["n1"])),
            "record_range new block": _per_call(
                durable_calls, lambda i: j.record_range("f", 2 * i * BLOCK_SIZE, 4096)),
            "record_range known block": _per_call(
                cached_calls, lambda i: j.record_range("f", 2 * (i % 100) * BLOCK_SIZE, 4096)),
            "set_state": _per_call(durable_calls, lambda i: j.set_state("k", str(i))),
            "record_paths new path, 8 threads": _threaded(j, 8, durable_calls // 8),
        }
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", help="directory for the scratch journal (default: a temp dir)")
    parser.add_argument("--calls", type=int, default=200, help="durable calls per case")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        for name, seconds in measure(directory, args.calls).items():
            print(f"{name:36s} {seconds * 1e6:10.1f} us/call")


if __name__ == "__main__":
    main()
