#!/usr/bin/env python3
"""Two source trees of hamirror side by side: the same column (interception alone, sync, async or
barrier) from each, mounted at once and run in turn, so a change is measured against the code
before it in the same minutes of this noisy machine.

    sudo .venv/bin/python scripts/bench/trees.py OLD_TREE NEW_TREE [--config e] [--workload seq]
        [--size-mib 1024] [--files 5000] [--txns 3000] [--pgbench-seconds 15] [--reps 4] [--workdir /srv]
        [--engine stream] [--free-pages hold|as-found]

Each tree is a checkout with its extensions built in place (``python setup.py build_ext
--inplace``; for example ``git worktree add ../old REV``). Each column's mount and receiver
run from their tree (``PYTHONPATH``, and a working directory outside every tree: ``python -m
hamirror`` looks in its working directory first, so a run started from a tree would measure that
tree twice). Order per repetition: old, new, new, old, then the reverse (ABBA), each run after the
page-cache warm-up and a settle (workloads.py). Printed per run: the figure, and the CPU per
operation of the mount, the receiver and the application; then the medians and new / old.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(os.path.dirname(HERE))]

import columns  # noqa: E402
import cputime  # noqa: E402
import guestmem  # noqa: E402
import pgbench  # noqa: E402
import workloads as w  # noqa: E402
from hamirror.link import session  # noqa: E402

ORDER = ("old", "new", "new", "old")
UNITS = {"seq": ("MB/s", "MiB"), "small": ("files/s", "file"), "sqlite": ("txn/s", "txn"),
         "pgbench": ("tps", "txn")}   # figure, operation


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--config", default="e", choices=("b", "c", "d", "e"),
                        help="b interception alone, c sync, d async, e barrier")
    parser.add_argument("--workload", default="seq", choices=tuple(UNITS))
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--txns", type=int, default=3000)
    parser.add_argument("--pgbench-seconds", type=int, default=15, help="each pgbench run (4 clients, scale 5, as mirror.py)")
    parser.add_argument("--reps", type=int, default=4, help="ABBA rounds (each runs both trees twice)")
    parser.add_argument("--workdir", default="/srv")
    parser.add_argument("--engine", choices=(session.CURVE, session.AEAD, session.STREAM), default=None,
                        help=f"the link engine (default: ${session.ENGINE_ENV}, else {session.STREAM}, as mirror.py)")
    parser.add_argument("--free-pages", choices=("hold", "as-found"), default="hold",
                        help="as mirror.py: keep memory freed during the run in this VM (guestmem.py)")
    args = parser.parse_args(argv)
    try:
        args.engine = columns.link_engine(args.engine)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def check_tree(column: columns.Column, tree: str, engine: str) -> None:
    """Refuse to measure a column whose processes did not load their tree's extensions (a wrong
    PYTHONPATH, or a build missing in that tree: the installed package would be measured), or do
    not run the link engine asked for (hamirror's own default is curve, not what a new cluster runs)."""
    for label, pid in column.processes():
        with open(f"/proc/{pid}/maps") as maps:
            loaded = maps.read()
        if os.path.join(tree, "hamirror", "") not in loaded:
            raise SystemExit(f"{label} of {column.base} does not run from {tree} (build its extensions in place?)")
        with open(f"/proc/{pid}/environ", "rb") as environ:
            variables = environ.read().split(b"\0")
        if f"{session.ENGINE_ENV}={engine}".encode() not in variables:
            raise SystemExit(f"{label} of {column.base} does not run the {engine} link engine")


def run_once(args: argparse.Namespace, column: columns.Column, root: str,
             pg: pgbench.Pgbench | None = None) -> tuple[float, float, dict[str, float]]:
    probe = cputime.Probe(column.processes)
    if pg is not None:   # its own copy of the template each run, removed with the column's directory
        tps, done = pg.run(column.directory, probe)
        return tps, done, probe.seconds
    w.prepare(args.workload, root, column.directory, args.size_mib)
    if args.workload == "seq":
        return w.seq_write(column.directory, args.size_mib, probe=probe), args.size_mib, probe.seconds
    if args.workload == "sqlite":
        return w.sqlite_txns(column.directory, args.txns, probe=probe), args.txns, probe.seconds
    return w.small_files(column.directory, args.files, probe=probe, keep=True), args.files, probe.seconds


def run_trees(args: argparse.Namespace, trees: dict[str, str]) -> dict[str, list[tuple[float, dict[str, float]]]]:
    """Start each tree's column, run the ABBA rounds, stop them: (figure, CPU per operation) per run."""
    unit = UNITS[args.workload][0]
    root = tempfile.mkdtemp(prefix="hamirror-trees-", dir=args.workdir)
    os.chmod(root, 0o711)   # PostgreSQL's user must reach its data directories (as mirror.py)
    started: dict[str, columns.Column] = {}
    runs: dict[str, list[tuple[float, dict[str, float]]]] = {name: [] for name in trees}
    pg = None
    try:
        if args.workload == "pgbench":
            if pgbench.available():
                raise SystemExit(f"pgbench: {pgbench.available()}")
            pg = pgbench.Pgbench(tempfile.mkdtemp(prefix="pgbench-", dir=root), clients=4, scale=5,
                                 seconds=args.pgbench_seconds)
            pg.prepare()
        for name, tree in trees.items():
            os.environ["PYTHONPATH"] = tree
            base = os.path.join(root, name)
            os.mkdir(base)
            started[name] = columns.Column(base, args.config, spread=True)
            started[name].start()
            check_tree(started[name], tree, args.engine)
        os.environ.pop("PYTHONPATH")
        for rep in range(args.reps):
            for name in ORDER if rep % 2 == 0 else ORDER[::-1]:
                figure, operations, seconds = run_once(args, started[name], root, pg)
                cpu = {label: 1000 * s / operations for label, s in seconds.items()}
                runs[name].append((figure, cpu))
                print(f"{name}  {figure:8.0f} {unit}  " + "  ".join(f"{k} {v:.3f}" for k, v in sorted(cpu.items())),
                      flush=True)
    finally:
        for column in started.values():
            column.stop()
        shutil.rmtree(root, ignore_errors=True)
    return runs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    trees = {"old": os.path.abspath(args.old), "new": os.path.abspath(args.new)}
    os.chdir("/")   # not inside a tree: see the docstring
    os.environ[session.ENGINE_ENV] = args.engine   # every mount and receiver started here inherits it
    with guestmem.freed_memory_held(args.free_pages == "hold") as guest_memory:
        print(f"link engine {args.engine}, column {args.config}, workload {args.workload}; {guest_memory}",
              flush=True)
        runs = run_trees(args, trees)
    unit, per = UNITS[args.workload]
    medians = {name: statistics.median(f for f, _ in found) for name, found in runs.items()}
    for name, found in runs.items():
        labels = sorted({label for _, cpu in found for label in cpu})
        cpu = {label: statistics.median(c.get(label, 0.0) for _, c in found) for label in labels}
        print(f"{name} median {medians[name]:.0f} {unit}; CPU ms per {per}: "
              + ", ".join(f"{k} {v:.3f}" for k, v in cpu.items()))
    print(f"new / old: {medians['new'] / medians['old']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
