#!/usr/bin/env python3
"""PostgreSQL's commit pattern against each column: where a commit's time goes.

Why: pgbench's rate on a replicated mount is set by the latency of one commit (a WAL write, then
``fdatasync``; the other backends wait for it, group commit), not by CPU. This runs that pattern
alone: a 16 MiB WAL segment made as PostgreSQL makes one (zeros, then fsync, outside the timing),
then ``--commits`` commits of ``pwrite(--size bytes)`` at a growing offset + ``fdatasync``, from 1
thread and from N threads on the one file (each takes the next offset; no lock around the flush,
so concurrent fdatasyncs meet in the mount). Prints p50/p99 per commit and commits/s per column.

``--trace`` also records the kernel's FUSE tracepoints (``perf``, root) during the 1-thread run of
each hamirror column: which requests a commit sends to the mount, how many, and how long each
takes inside the mount (send to reply, median), per commit.

    flock /tmp/hamirror-lab.lock .venv/bin/python scripts/bench/walcommit.py --configs bce --trace
    options: --configs abcdeg --commits N --threads 1,4 --size BYTES --reps N --json
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
import cputime  # noqa: E402
import pgbench  # noqa: E402
from columns import CONFIGS, Column, hamirror_modes, unavailable  # noqa: E402

SEGMENT = 16 * 1024 * 1024
OPCODES = {1: "LOOKUP", 3: "GETATTR", 4: "SETATTR", 14: "OPEN", 15: "READ", 16: "WRITE", 18: "RELEASE",
           20: "FSYNC", 22: "GETXATTR", 25: "FLUSH", 35: "CREATE", 36: "INTERRUPT"}


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * q))] if s else float("nan")


def make_segment(path: str) -> int:
    """A WAL segment as PostgreSQL makes one: zeros written, fsynced, reopened."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    zeros = bytes(1024 * 1024)
    for off in range(0, SEGMENT, len(zeros)):
        os.pwrite(fd, zeros, off)
    os.fsync(fd)
    os.close(fd)
    return os.open(path, os.O_WRONLY)


def commits(fd: int, count: int, threads: int, size: int) -> tuple[list[float], float]:
    """``count`` commits split over ``threads``: per-commit latencies (ms) and the wall time (s)."""
    data = os.urandom(size)
    lock = threading.Lock()
    state = {"next": 0, "done": 0}
    samples: list[float] = []

    def worker() -> None:
        mine = []
        while True:
            with lock:
                if state["done"] >= count:
                    break
                state["done"] += 1
                off = state["next"] % (SEGMENT - size)
                state["next"] += size
            t = time.perf_counter()
            os.pwrite(fd, data, off)
            os.fdatasync(fd)
            mine.append((time.perf_counter() - t) * 1000)
        with lock:
            samples.extend(mine)

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    start = time.perf_counter()
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return samples, time.perf_counter() - start


class Trace:
    """``perf record`` of the FUSE tracepoints of one mount (its connection = the mount's st_dev)."""

    def __init__(self, mountpoint: str, out: str) -> None:
        dev = os.stat(mountpoint).st_dev
        self.connection = (os.major(dev) << 20) | os.minor(dev)
        self.out = out
        self.proc = subprocess.Popen(["perf", "record", "-q", "-a", "-o", out, "-e", "fuse:fuse_request_send",
                                      "-e", "fuse:fuse_request_end"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        time.sleep(1.0)   # perf needs a moment before it records

    def halt(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(30)

    def stop(self, commits_done: int) -> dict:
        """Per commit (or transaction): each request's count and its latency inside the mount."""
        self.halt()
        text = subprocess.run(["perf", "script", "-i", self.out, "-F", "time,event,trace"], capture_output=True,
                              text=True, timeout=120).stdout
        sent: dict[int, tuple[str, float]] = {}
        lat: dict[str, list[float]] = collections.defaultdict(list)
        for line in text.splitlines():
            parts = line.split()
            if len(parts) < 6 or f"connection {self.connection} " not in line + " ":
                continue
            t = float(parts[0].rstrip(":"))
            req = int(parts[parts.index("req") + 1])
            if "fuse_request_send" in parts[1]:
                op = parts[parts.index("opcode") + 1]
                sent[req] = (OPCODES.get(int(op), op), t)
            elif req in sent:
                op, t0 = sent.pop(req)
                lat[op].append((t - t0) * 1e6)
        return {op: {"per_commit": round(len(v) / commits_done, 2), "p50_us": round(pct(v, 0.5)),
                     "p99_us": round(pct(v, 0.99))} for op, v in sorted(lat.items())}


class TracedRun:
    """A pgbench probe (pgbench.Pgbench.run calls begin/end around the client's run): FUSE requests."""

    def __init__(self, column: Column, out: str) -> None:
        self.column, self.out = column, out
        self.trace: Trace | None = None
        self.fuse: dict = {}

    def begin(self, roots: dict) -> None:
        if self.column.pair is not None:
            self.trace = Trace(self.column.directory, self.out)

    def end(self, wait=None) -> None:
        if self.trace is not None:
            self.trace.halt()

    def finish(self, transactions: int) -> dict:
        return self.trace.stop(transactions) if self.trace is not None else {}


def run_column(root: str, key: str, args: argparse.Namespace, pg: "pgbench.Pgbench | None") -> dict:
    column = Column(root, key)
    result: dict = {}
    try:
        column.start()
        if pg is not None:
            probe = TracedRun(column, os.path.join(root, f"perf-pg-{key}.data")) if args.trace else cputime.NoProbe()
            tps, done = pg.run(column.directory, probe)
            result["pgbench"] = {"tps": tps, "transactions": done}
            if args.trace:
                result["pgbench"]["fuse"] = probe.finish(done)
        for threads in ([] if args.pgbench else args.threads):
            path = os.path.join(column.directory, f"wal-{threads}")
            fd = make_segment(path)
            try:
                commits(fd, 50, threads, args.size)   # warm-up (the first pages, the link)
                trace = None
                if args.trace and threads == 1 and column.pair is not None:
                    trace = Trace(column.directory, os.path.join(root, f"perf-{key}.data"))
                procs = column.processes()
                before = {name: cputime.read_stat(pid) for name, pid in procs}
                samples, wall = commits(fd, args.commits, threads, args.size)
                after = {name: cputime.read_stat(pid) for name, pid in procs}
                entry = {"p50_ms": round(pct(samples, 0.5), 3), "p99_ms": round(pct(samples, 0.99), 3),
                         "commits_per_s": round(args.commits / wall, 1),
                         "cpu_ms_per_commit": {name: round((after[name].own - before[name].own) * 1000 / args.commits, 3)
                                               for name in before if before[name] and after[name]}}
                if trace is not None:
                    entry["fuse"] = trace.stop(args.commits)
                result[f"t{threads}"] = entry
            finally:
                os.close(fd)
                os.unlink(path)
    finally:
        column.stop()
    return result


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="bce", help="column letters (a plain, b intercept, c sync, d async, "
                   "e barrier, g glusterfs)")
    p.add_argument("--commits", type=int, default=2000)
    p.add_argument("--threads", default="1,4", type=lambda s: [int(x) for x in s.split(",")])
    p.add_argument("--size", type=int, default=8192, help="bytes per commit (one WAL page: 8192)")
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--trace", action="store_true", help="FUSE requests per commit (perf, 1-thread run)")
    p.add_argument("--pgbench", type=int, default=0, metavar="SECONDS",
                   help="run pgbench (4 clients, scale 5) for SECONDS instead of the commit loop")
    p.add_argument("--json", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    modes = hamirror_modes()
    root = tempfile.mkdtemp(prefix="hamirror-walcommit-", dir="/var/tmp")
    runs: dict[str, list[dict]] = collections.defaultdict(list)
    pg = None
    try:
        if args.pgbench:
            pg = pgbench.Pgbench(os.path.join(root, "pg"), clients=4, scale=5, seconds=args.pgbench)
            os.chmod(root, 0o755)   # the postgres user reaches its scratch directory and the columns
            os.makedirs(pg.scratch, mode=0o755)
            pg.prepare()
        for rep in range(args.reps):
            for key in args.configs:
                why = unavailable(key, modes)
                if why:
                    print(f"skip {key}: {why}", file=sys.stderr)
                    continue
                base = os.path.join(root, f"r{rep}")
                os.makedirs(base, exist_ok=True)
                runs[key].append(run_column(base, key, args, pg))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps(runs, indent=1))
        return 0
    print(f"{args.commits} commits of pwrite {args.size} B + fdatasync, one file; per column and thread count:")
    for key, reps in runs.items():
        for rep, result in enumerate(reps):
            if "pgbench" in result:
                e = result["pgbench"]
                print(f"  {key} {CONFIGS[key]:10s} rep {rep} pgbench: {e['tps']:.0f} tps ({e['transactions']} transactions)")
                for op, f in e.get("fuse", {}).items():
                    print(f"      {op:9s} {f['per_commit']:5.2f}/txn  p50 {f['p50_us']:6d} us  p99 {f['p99_us']:6d} us")
                continue
            for t, e in result.items():
                cpu = " + ".join(f"{n} {v:.3f}" for n, v in e["cpu_ms_per_commit"].items())
                print(f"  {key} {CONFIGS[key]:10s} rep {rep} {t}: p50 {e['p50_ms']:.3f} ms  p99 {e['p99_ms']:.3f} ms"
                      f"  {e['commits_per_s']:.0f} commits/s  cpu ms/commit: {cpu or '-'}")
                for op, f in e.get("fuse", {}).items():
                    print(f"      {op:9s} {f['per_commit']:5.2f}/commit  p50 {f['p50_us']:6d} us  p99 {f['p99_us']:6d} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
