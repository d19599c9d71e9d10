#!/usr/bin/env python3
"""What the activity log costs on the write path: sync mirror with it vs without it, one run.

    sudo .venv/bin/python scripts/bench/activity_log.py [--quick] [--reps N] [--json]

Two ``hamirror mirror mount --mode sync`` pairs over loopback, one with the activity log (the
default) and one with ``--no-activity-log``, both mounted at once; for each repetition and each
workload the two run in turn (interleaved, so drift hits both; which goes first alternates),
medians reported. Workloads from scripts/bench/workloads.py: new 4 KiB files (every file a new
name: one durable log append each before directory entries, one per directory since), 1 GiB
(or 128 MiB with --quick) write + fsync of one file, SQLite transactions and 4 KiB write+fsync
latency (the same files stay hot: no log write). Then the log by itself: ``enter`` of a hot
path, of a path that is not hot and of a new file in a hot directory, on the disk of --workdir.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(os.path.dirname(HERE))]

import workloads as w  # noqa: E402
from hamirror.journal.activity import ActivityLog  # noqa: E402
from tests.mirror_fixtures import MirrorPair  # noqa: E402

CONFIGS = {"log": (), "nolog": ("--no-activity-log",)}


class _Acked:
    done = True
    error = None


def micro(directory: str, n: int) -> dict:
    """Seconds per ``enter``+``leave`` of a hot path, of a path that is not hot (one durable
    append) and of a new file in a hot directory (covered by its directory entry)."""
    root_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    al = ActivityLog(os.path.join(directory, "bench.log"), capacity=4096, root_fd=root_fd)
    try:
        al.enter(["hot"])
        al.leave(["hot"], _Acked())
        t0 = time.perf_counter()
        for _ in range(n * 100):
            al.enter(["hot"])
            al.leave(["hot"], _Acked())
        hot = (time.perf_counter() - t0) / (n * 100)
        t0 = time.perf_counter()
        for i in range(n):
            al.enter([f"new/{i}"])
            al.leave([f"new/{i}"], _Acked())
        new = (time.perf_counter() - t0) / n
        al.enter(["spool/0"], new=["spool/0"])
        al.leave(["spool/0"], _Acked())
        t0 = time.perf_counter()
        for i in range(1, n * 100):
            al.enter([f"spool/{i}"], new=[f"spool/{i}"])
            al.leave([f"spool/{i}"], _Acked())
        covered = (time.perf_counter() - t0) / (n * 100)
    finally:
        al.close()
        os.close(root_fd)
    return {"enter_hot_us": hot * 1e6, "enter_new_us": new * 1e6, "enter_new_in_hot_dir_us": covered * 1e6}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (FUSE mounts)", file=sys.stderr)
        return 2
    reps = args.reps or (2 if args.quick else 3)
    size, files, txns, samples = (128, 1000, 1000, 200) if args.quick else (1024, 10000, 10000, 1000)
    root = tempfile.mkdtemp(prefix="hamirror-al-bench-", dir=args.workdir or "/var/tmp")
    pairs: dict[str, MirrorPair] = {}
    results: dict[str, dict[str, list[float]]] = {k: {} for k in CONFIGS}
    try:
        for key, extra in CONFIGS.items():
            pair = pairs[key] = MirrorPair(os.path.join(root, key), timeout=30)
            pair.start_receiver()
            pair.mount(extra=extra)
        jobs = [("seq_write_fsync", lambda d: w.seq_write(d, size)),
                ("small_files", lambda d: w.small_files(d, files)),
                ("sqlite_txn", lambda d: w.sqlite_txns(d, txns)),
                ("fsync4k_p50", lambda d: w.fsync_latency(d, samples)[0])]
        for rep in range(reps):
            for metric, fn in jobs:
                order = list(pairs.items())
                for key, pair in order if rep % 2 == 0 else order[::-1]:   # neither always goes first
                    w.settle(pair.primary)
                    value = fn(pair.primary)
                    results[key].setdefault(metric, []).append(value)
                    print(f"# rep {rep + 1} {key:6} {metric:16} {value:10.2f}", file=sys.stderr)
        summary = {k: {m: w.median(v) for m, v in r.items()} for k, r in results.items()}
        summary["micro"] = micro(root, 200 if args.quick else 1000)
    finally:
        for pair in pairs.values():
            pair.stop()
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps(summary, indent=1))
    units = {"seq_write_fsync": "MB/s", "small_files": "files/s", "sqlite_txn": "txn/s", "fsync4k_p50": "ms"}
    print(f"{'':18} {'with log':>10} {'without':>10} {'ratio':>7}")
    for metric, unit in units.items():
        a, b = summary["log"][metric], summary["nolog"][metric]
        print(f"{metric:18} {a:10.2f} {b:10.2f} {a / b:7.2f}  {unit}")
    m = summary["micro"]
    print(f"activity log alone: enter of a hot path {m['enter_hot_us']:.1f} us, of a new path "
          f"{m['enter_new_us']:.0f} us (one durable append), of a new file in a hot directory "
          f"{m['enter_new_in_hot_dir_us']:.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
