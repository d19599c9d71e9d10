#!/usr/bin/env python3
"""Replicated-mount benchmark: every configuration side by side in one interleaved run.

    sudo .venv/bin/python scripts/bench/mirror.py [--quick] [--json] [--size-mib N] [--files N]
        [--txns N] [--samples N] [--pgbench-seconds N] [--reps N] [--configs abcdegfw] [--workloads ...]
        [--engine curve|aead|stream] [--spread] [--free-pages hold|as-found]

Columns (each in its own fresh directory under --workdir, all on the same disk):
  a  plain      the directory itself, no FUSE
  b  intercept  ``hamirror mirror mount --no-replication``: the baseline of the ratios
  f  passthru   libfuse 3.14's low-level example passthrough_ll.c, compiled by the bench (cpassthrough.py):
                a FUSE file system written entirely in C, the ceiling of b; only when --configs names it
  w  passthr-wb the same with the kernel's writeback cache (-o writeback); only when named
  c  sync       ``hamirror mirror mount --mode sync`` to ``hamirror mirror receive`` over loopback,
                both with the link engine of ``--engine`` (default: ``$HAMIRROR_LINK_ENGINE``, else
                ``stream``, what a new cluster runs), named in the header and stored in the JSON
  d  async      the same with ``--mode async``
  e  barrier    the same with ``--mode barrier`` (only if this hamirror has it)
  g  glusterfs  a GlusterFS replica-2 volume, one brick per network namespace, FUSE client
                (only if glusterfs-server is installed; see gluster.py)
  k  ceiling    not a mount: the two-copy ceiling, half of a's sequential rate in the same run (both
                copies share one disk), which every replicated column's sequential rate is put against
All are mounted at once and the runs are interleaved (for each repetition, for each workload,
every column in turn), so drift of this noisy machine hits all alike; the figure is the median of
the repetitions. Before each timed run the filesystem's dirty pages are written back (syncfs); no
cache is dropped. A column that cannot start or fails is reported and left out; the others' figures
are still printed (also on Ctrl-C). Every mount, process and namespace started here is ended, by
PID or as the content of our own namespaces, also on failure or Ctrl-C.

CPU per operation: over the timed part of every run, the user+sys time of each process of the
column (mount, receiver; GlusterFS's client, bricks, self-heal daemons and glusterd), of the
application (this process, or the pgbench client) and of PostgreSQL's server (cputime.py), divided
by the operations done (MiB, files, transactions, fsyncs, pgbench transactions). The report ends
with issue 16's "Done when" ratios, each with its target and PASS/MISS, computed from this run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(os.path.dirname(HERE))]

import columns  # noqa: E402
import cputime  # noqa: E402
import gluster  # noqa: E402
import guestmem  # noqa: E402
import pgbench  # noqa: E402
import workloads as w  # noqa: E402
from columns import CONFIGS, DEFAULT, Column  # noqa: E402
from mirror_report import render, summarize  # noqa: E402
from mirror_targets import OPERATION  # noqa: E402

from hamirror.link import session  # noqa: E402

WORKLOADS = ("seq", "small", "sqlite", "lat", "pgbench")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="short run: 128 MiB, 1,000 files/txns, pgbench 10 s, 2 reps")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--size-mib", type=int, help="sequential write size (default 1024)")
    p.add_argument("--files", type=int, help="small files per run (default 10000)")
    p.add_argument("--txns", type=int, help="SQLite transactions per run (default 10000)")
    p.add_argument("--samples", type=int, help="4 KiB write+fsync latency samples (default 1000)")
    p.add_argument("--pgbench-seconds", type=int, help="duration of each pgbench run (default 30)")
    p.add_argument("--reps", type=int, help="repetitions, median taken (default 3)")
    p.add_argument("--configs", default=DEFAULT,
                   help=f"subset of {','.join(CONFIGS)} to run (default: {DEFAULT}, those this machine has)")
    p.add_argument("--workloads", default=",".join(WORKLOADS), help=f"subset of {','.join(WORKLOADS)}")
    p.add_argument("--engine", choices=(session.CURVE, session.AEAD, session.STREAM), default=None,
                   help=f"the replication link engine of c, d, e (default: ${session.ENGINE_ENV}, else "
                        f"{session.STREAM}: what a new cluster runs)")
    p.add_argument("--spread", action="store_true",
                   help="give each run's fresh directory an ext4 block group of its own (chattr +T on each "
                        "column's directory, not GlusterFS's bricks): this disk's ext4 has no journal, so a "
                        "clean-up slows file creation in its block group for 60-300 s (workloads.spread)")
    p.add_argument("--free-pages", choices=("hold", "as-found"), default="hold",
                   help="hold: keep memory freed during the run in this VM instead of handing it back to the "
                        "host at once (free page reporting's min_free_ms, restored at the end; guestmem.py); "
                        "as-found: leave the kernel's setting")
    p.add_argument("--workdir", help="where the bench makes its own directory (default: /var/tmp), removed at the end")
    args = p.parse_args(argv)
    unknown = set(args.workloads.split(",")) - set(WORKLOADS)
    if unknown or set(args.configs) - set(CONFIGS):
        p.error(f"unknown workload or config: {sorted(unknown) or args.configs} "
                f"(workloads: {','.join(WORKLOADS)}; configs: {','.join(CONFIGS)})")
    args.configs = "".join(k for k in CONFIGS if k in args.configs)
    try:
        args.engine = columns.link_engine(args.engine)
    except ValueError as exc:
        p.error(str(exc))
    quick = dict(size_mib=128, files=1000, txns=1000, samples=200, pgbench_seconds=10, reps=2)
    full = dict(size_mib=1024, files=10000, txns=10000, samples=1000, pgbench_seconds=30, reps=3)
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


START = time.monotonic()


def log(text: str) -> None:
    """Progress on stderr; a closed stderr (``| head``) must not cut the cleanup short."""
    try:
        print(f"# {time.monotonic() - START:7.1f} s  {text}", file=sys.stderr, flush=True)
    except OSError:
        pass


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        # Always a directory of its own, even under --workdir: the chmod below must never reach a
        # shared parent (--workdir /dev/shm once left /dev/shm 0711, and PostgreSQL could no
        # longer make its shared memory there).
        self.root = tempfile.mkdtemp(prefix="hamirror-bench-", dir=args.workdir or "/var/tmp")
        os.chmod(self.root, 0o711)                 # PostgreSQL's user must reach its data directories
        self.columns: list[Column] = []
        self.notes: list[str] = []
        self.pg: pgbench.Pgbench | None = None
        self.cpu: dict[str, dict[str, dict[str, list[float]]]] = {}   # [config][workload][process]: ms/op

    def note(self, text: str) -> None:
        self.notes.append(text)
        log(text)

    def setup(self) -> None:
        for ns in gluster.clean_stale():
            self.note(f"removed namespace {ns} left by an earlier run")
        modes = columns.hamirror_modes()
        for key in self.args.configs:
            reason = columns.unavailable(key, modes)
            if reason:
                self.note(f"skipped: {key} {CONFIGS[key]}: {reason}")
                continue
            column = Column(self.root, key, spread=self.args.spread)
            self.columns.append(column)            # listed first: a Ctrl-C while it starts still stops it
            try:
                column.start()
            except Exception as exc:  # one column failing must not cost the others' figures
                self.note(f"skipped: {key} {CONFIGS[key]}: could not start: {exc}")
                self.columns.remove(column)
                self._stop(column)
                continue
            log(f"{key} {column.name}: {column.directory} (pids: {' '.join(map(str, column.pids()))})")
        if "pgbench" in self.args.workloads.split(","):
            self._prepare_pgbench()

    def _prepare_pgbench(self) -> None:
        reason = pgbench.available()
        if reason:
            self.note(f"skipped: pgbench: {reason}")
            return
        pg = pgbench.Pgbench(tempfile.mkdtemp(prefix="pgbench-", dir=self.root), clients=4, scale=5,
                             seconds=self.args.pgbench_seconds)
        try:
            pg.prepare()
            self.pg = pg
        except Exception as exc:
            self.note(f"skipped: pgbench: could not make the template database: {exc}")

    def teardown(self) -> None:
        for column in reversed(self.columns):     # the last started first
            self._stop(column)

    def _stop(self, column: Column) -> None:
        try:
            column.stop()
            log(f"stopped {column.key} {column.name}")
        except Exception as exc:  # keep going: every other column must still be stopped
            log(f"stopping {column.base}: {exc}")

    def jobs(self) -> list[tuple[str, object]]:
        """(workload, fn(directory, probe) -> (figures, operations done)), in the order they run."""
        a = self.args
        jobs = [("seq", lambda d, p: ({"seq_write_fsync": w.seq_write(d, a.size_mib, probe=p)}, a.size_mib)),
                ("small", lambda d, p: ({"small_files": w.small_files(d, a.files, probe=p, keep=True)}, a.files)),
                ("sqlite", lambda d, p: ({"sqlite_txn": w.sqlite_txns(d, a.txns, probe=p)}, a.txns)),
                ("lat", lambda d, p: (dict(zip(("fsync4k_p50", "fsync4k_p99"), w.fsync_latency(d, a.samples, probe=p))),
                                      a.samples))]
        if self.pg is not None:
            jobs.append(("pgbench", self._pgbench))
        chosen = a.workloads.split(",")
        return [(name, fn) for name, fn in jobs if name in chosen]

    def _pgbench(self, directory: str, probe: cputime.Probe) -> tuple[dict[str, float], int]:
        tps, done = self.pg.run(directory, probe, keep=True)   # removed with the bench's directory
        return {"pgbench_tps": tps}, done

    def _record_cpu(self, column: Column, job: str, seconds: dict[str, float], operations: int) -> None:
        per_op = {label: s * 1000 / operations for label, s in seconds.items()} if operations else {}
        if not per_op:
            return
        per_op["total"] = sum(per_op.values())
        runs = self.cpu.setdefault(column.key, {}).setdefault(job, {})
        for label, ms in per_op.items():
            runs.setdefault(label, []).append(ms)
        log(f"      {column.name:9} CPU ms per {OPERATION[job]:11} "
            + ", ".join(f"{label} {ms:.3f}" for label, ms in per_op.items()))

    def run(self, results: dict[str, dict[str, list[float]]]) -> None:
        """Fill ``results`` as it goes, so whatever ran is kept if a column fails or Ctrl-C comes."""
        failed: set[tuple[str, str]] = set()
        for rep in range(self.args.reps):
            for job, fn in self.jobs():
                for column in list(self.columns):
                    key = column.key
                    if (key, job) in failed:
                        continue
                    dead = column.dead()
                    if dead:
                        self.note(f"{key} {column.name} left out from rep {rep + 1} on: {dead}")
                        self.columns.remove(column)
                        self._stop(column)
                        continue
                    probe = cputime.Probe(column.processes)
                    try:
                        w.prepare(job, self.root, column.directory, self.args.size_mib)
                        figures, operations = fn(column.directory, probe)
                    except Exception as exc:
                        failed.add((key, job))
                        self.note(f"{key} {column.name} {job} failed in rep {rep + 1} (not run again): {exc!r}")
                        traceback.print_exc(file=sys.stderr)
                        continue
                    for metric, value in figures.items():
                        results.setdefault(key, {}).setdefault(metric, []).append(value)
                        log(f"rep {rep + 1} {column.name:9} {metric:16} {value:10.2f}")
                    self._record_cpu(column, job, probe.seconds, operations)


def _interrupted(*_) -> None:
    """SIGTERM ends the run like Ctrl-C: clean up, then print what ran."""
    raise KeyboardInterrupt


def main(argv=None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (FUSE mounts with allow_other, network namespaces)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupted)
    os.environ[session.ENGINE_ENV] = args.engine     # every mount and receiver started here inherits it
    bench = Bench(args)
    results: dict[str, dict[str, list[float]]] = {}
    status = 0
    with guestmem.freed_memory_held(args.free_pages == "hold") as guest_memory:
        log(guest_memory)
        try:
            bench.setup()
            bench.run(results)
        except KeyboardInterrupt:
            bench.note("interrupted (Ctrl-C or SIGTERM): the figures below are what ran before")
            status = 130
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)   # a second Ctrl-C must not cut the cleanup short
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            bench.teardown()
            shutil.rmtree(bench.root, ignore_errors=True)
    params = {k: getattr(args, k) for k in ("size_mib", "files", "txns", "samples", "pgbench_seconds", "reps", "quick",
                                            "engine", "spread")}
    params.update(pgbench_clients=4, pgbench_scale=5, guest_memory=guest_memory)
    summary = summarize(params, results, bench.notes, CONFIGS, bench.cpu)
    summary["workdir"] = bench.root
    print(json.dumps(summary, indent=1) if args.json else render(summary))
    return status


if __name__ == "__main__":
    sys.exit(main())
