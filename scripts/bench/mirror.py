#!/usr/bin/env python3
"""Replicated-mount benchmark: plain directory vs interception vs sync vs async, in one run.

    sudo .venv/bin/python scripts/bench/mirror.py [--quick] [--json] [--size-mib N] [--files N]
                                                  [--txns N] [--samples N] [--reps N]

Configurations (each in its own fresh directory under --workdir, same disk for the receiver):
  a  plain   the directory itself, no FUSE
  b  intercept  ``hamirror mirror mount --no-replication``
  c  sync    ``hamirror mirror mount --mode sync`` to ``hamirror mirror receive`` over loopback
  d  async   the same with ``--mode async``
All four are mounted at once and the runs are interleaved (for each repetition, for each
workload, every configuration in turn), so drift of this noisy machine hits all alike; the
figure is the median of the repetitions. Before each timed run the filesystem's dirty pages are
written back (syncfs); no cache is dropped. Every mount and process started here is ended by
PID, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(os.path.dirname(HERE))]

import workloads as w  # noqa: E402
from tests.mirror_fixtures import MirrorPair  # noqa: E402

CONFIGS = {"a": "plain", "b": "intercept", "c": "sync", "d": "async"}
# (metric, unit, higher is better)
METRICS = [("seq_write_fsync", "MB/s", True), ("small_files", "files/s", True),
           ("sqlite_txn", "txn/s", True), ("fsync4k_p50", "ms", False), ("fsync4k_p99", "ms", False)]
# (label, metric, numerator config, denominator config, minimum ratio): from the issue
TARGETS = [("sync sequential write >= 60% of interception", "seq_write_fsync", "c", "b", 0.60),
           ("sync small-file rate >= 50% of interception", "small_files", "c", "b", 0.50),
           ("interception sequential write >= 25% of plain", "seq_write_fsync", "b", "a", 0.25)]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short run: 128 MiB, 1,000 files/txns, 2 reps")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--size-mib", type=int, help="sequential write size (default 1024)")
    p.add_argument("--files", type=int, help="small files per run (default 10000)")
    p.add_argument("--txns", type=int, help="SQLite transactions per run (default 10000)")
    p.add_argument("--samples", type=int, help="4 KiB write+fsync latency samples (default 1000)")
    p.add_argument("--reps", type=int, help="repetitions, median taken (default 3)")
    p.add_argument("--configs", default="abcd", help="subset of a,b,c,d to run (default abcd)")
    p.add_argument("--workloads", default="seq,small,sqlite,lat", help="subset of seq,small,sqlite,lat")
    p.add_argument("--workdir", help="parent of the fresh directories (default: a new one in /var/tmp)")
    args = p.parse_args(argv)
    unknown = set(args.workloads.split(",")) - {"seq", "small", "sqlite", "lat"}
    if unknown or set(args.configs) - set(CONFIGS):
        p.error(f"unknown workload or config: {sorted(unknown) or args.configs} "
                "(workloads: seq,small,sqlite,lat; configs: a,b,c,d)")
    quick = dict(size_mib=128, files=1000, txns=1000, samples=200, reps=2)
    full = dict(size_mib=1024, files=10000, txns=10000, samples=1000, reps=3)
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.root = args.workdir or tempfile.mkdtemp(prefix="hamirror-bench-", dir="/var/tmp")
        self.dirs: dict[str, str] = {}
        self.pairs: list[MirrorPair] = []

    def setup(self) -> None:
        for key in self.args.configs:
            name = CONFIGS[key]
            base = os.path.join(self.root, f"{key}-{name}")
            os.makedirs(base)
            if key == "a":
                self.dirs[key] = os.path.join(base, "primary")
                os.mkdir(self.dirs[key])
                continue
            pair = MirrorPair(base, mode="async" if key == "d" else "sync", replicate=key != "b", timeout=30)
            self.pairs.append(pair)
            pair.start()
            self.dirs[key] = pair.primary
            pids = [str(p.pid) for p in (pair.mounter, pair.receiver) if p is not None]
            print(f"# {key} {name}: {pair.primary} (mount, receiver pids: {' '.join(pids)})", file=sys.stderr)

    def teardown(self) -> None:
        for pair in self.pairs:
            try:
                pair.stop()
            except Exception as exc:  # keep going: every other pair must still be stopped
                print(f"# stopping {pair.base}: {exc}", file=sys.stderr)

    def run(self) -> dict[str, dict[str, list[float]]]:
        a = self.args
        chosen = a.workloads.split(",")
        jobs = [("seq", lambda d: {"seq_write_fsync": w.seq_write(d, a.size_mib)}),
                ("small", lambda d: {"small_files": w.small_files(d, a.files)}),
                ("sqlite", lambda d: {"sqlite_txn": w.sqlite_txns(d, a.txns)}),
                ("lat", lambda d: dict(zip(("fsync4k_p50", "fsync4k_p99"), w.fsync_latency(d, a.samples))))]
        results: dict[str, dict[str, list[float]]] = {k: {} for k in a.configs}
        for rep in range(a.reps):
            for job, fn in jobs:
                if job not in chosen:
                    continue
                for key in a.configs:
                    self._check_alive()
                    w.settle(self.dirs[key])
                    for metric, value in fn(self.dirs[key]).items():
                        results[key].setdefault(metric, []).append(value)
                        print(f"# rep {rep + 1} {CONFIGS[key]:9} {metric:16} {value:10.2f}", file=sys.stderr)
        return results

    def _check_alive(self) -> None:
        for pair in self.pairs:
            for proc in (pair.mounter, pair.receiver):
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"a process of {pair.base} exited ({proc.returncode}); see its logs")


def summarize(args: argparse.Namespace, raw: dict) -> dict:
    med = {k: {m: w.median(v) for m, v in per.items()} for k, per in raw.items()}

    def ratio(metric, num, den):
        try:
            return med[num][metric] / med[den][metric]
        except (KeyError, ZeroDivisionError):
            return None

    ratios = {f"{n}/{d}": {m: ratio(m, n, d) for m, _, _ in METRICS}
              for n, d in (("b", "a"), ("c", "a"), ("c", "b"), ("d", "b"))}
    targets = []
    for label, metric, num, den, minimum in TARGETS:
        value = ratio(metric, num, den)
        verdict = "n/a" if value is None else ("PASS" if value >= minimum else "MISS")
        targets.append({"target": label, "metric": metric, "ratio": value, "minimum": minimum, "result": verdict})
    params = {k: getattr(args, k) for k in ("size_mib", "files", "txns", "samples", "reps", "quick")}
    return {"environment": w.environment(), "parameters": params, "configs": CONFIGS,
            "median": med, "runs": raw, "ratios": ratios, "targets": targets}


def render(summary: dict) -> str:
    keys = [k for k in CONFIGS if k in summary["median"]]
    env, par = summary["environment"], summary["parameters"]
    lines = [f"hamirror mirror benchmark  {env['date']}  nproc={env['nproc']} kernel={env['kernel']} "
             f"disk={env['disk']}",
             f"size={par['size_mib']} MiB, files={par['files']}, txns={par['txns']}, "
             f"latency samples={par['samples']}, median of {par['reps']} interleaved runs", ""]
    ratio_keys = [r for r in summary["ratios"] if all(c in keys for c in r.split("/"))]
    head = f"{'metric':18}{'unit':8}" + "".join(f"{k + ' ' + CONFIGS[k]:>13}" for k in keys)
    lines.append(head + "".join(f"{r:>8}" for r in ratio_keys))
    for metric, unit, _ in METRICS:
        if not any(metric in summary["median"][k] for k in keys):
            continue
        row = f"{metric:18}{unit:8}" + "".join(f"{summary['median'][k].get(metric, float('nan')):13.2f}" for k in keys)
        for r in ratio_keys:
            v = summary["ratios"][r][metric]
            row += f"{v:8.2f}" if v is not None else f"{'-':>8}"
        lines.append(row)
    lines.append("(latency ratios: higher is worse)")
    lines.append("")
    for t in summary["targets"]:
        shown = "-" if t["ratio"] is None else f"{t['ratio']:.2f}"
        lines.append(f"{t['result']:5} {t['target']}: {shown} (need >= {t['minimum']:.2f})")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (FUSE mounts with allow_other)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    bench = Bench(args)
    try:
        bench.setup()
        raw = bench.run()
    finally:
        bench.teardown()
        if not args.workdir:
            shutil.rmtree(bench.root, ignore_errors=True)
    summary = summarize(args, raw)
    summary["workdir"] = bench.root
    print(json.dumps(summary, indent=1) if args.json else render(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
