#!/usr/bin/env python3
"""What coherent hard links cost: the mount before and after the fix, in one run.

    sudo .venv/bin/python scripts/bench/attrcache.py [--files N] [--read-mib N] [--linked N] [--reps N]

libfuse's high-level API caches per name, so the mount now tells the kernel to forget the other
names of a file with several links after each change (``hamirror/fs/links.py``). Configurations,
all mounted at once (``--no-replication``: the FUSE layer alone) and interleaved per repetition:
  plain   the directory itself, no FUSE (reference)
  before  the mount with the invalidation switched off: the code before the fix (baseline)
  after   the mount as shipped
  attr0   the alternative not taken: ``attr_timeout=0`` (no attribute cache at all), no invalidation
Workloads: 4 KiB file creation; ``find -ls`` over a tree of --files files (twice in a row);
sequential read of a --read-mib file; --linked rounds of "4 KiB pwrite through one name, stat
through the other" on a file with two names. Figures are medians; ratios are against ``before``.
The switch is applied by this script when it starts the mount (``--as-hamirror``), not by the
product. Every mount and process started here is ended by PID, also on failure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(os.path.dirname(HERE))]

CONFIGS = ["plain", "before", "after", "attr0"]
# (metric, unit): all rates, higher is better
METRICS = [("create_4k", "files/s"), ("find_ls", "files/s"), ("find_ls_again", "files/s"),
           ("seq_read", "MB/s"), ("linked_write_stat", "rounds/s")]


def as_hamirror(variant: str) -> int:
    """Run the hamirror CLI with the FUSE layer switched to ``variant`` (see the docstring)."""
    if variant in ("before", "attr0"):
        from hamirror.fs import links
        links.LinkCoherence._tell = lambda self, paths: None
    if variant == "attr0":
        from hamirror.fs import highlevel
        original = highlevel._Fuse.__init__

        def no_attr_cache(self, *args, **kwargs):
            original(self, *args, attr_timeout=0, **kwargs)
        highlevel._Fuse.__init__ = no_attr_cache
    from hamirror.cli.main import main
    return main()


# workloads ------------------------------------------------------------------------------------

def make_tree(directory: str, files: int) -> str:
    tree = os.path.join(directory, "tree")
    data = b"x" * 4096
    for i in range(files):
        sub = os.path.join(tree, f"d{i // 100:03d}")
        if i % 100 == 0:
            os.makedirs(sub)
        with open(os.path.join(sub, f"f{i:05d}"), "wb") as f:
            f.write(data)
    return tree


def find_ls(tree: str, files: int) -> float:
    start = time.perf_counter()
    subprocess.run(["find", tree, "-ls"], stdout=subprocess.DEVNULL, check=True)
    return files / (time.perf_counter() - start)


def seq_read(directory: str, mib: int) -> float:
    path = os.path.join(directory, "big")
    if not os.path.exists(path):
        block = os.urandom(1 << 20)
        with open(path, "wb") as f:
            for _ in range(mib):
                f.write(block)
    fd = os.open(path, os.O_RDONLY)
    try:
        start = time.perf_counter()
        while os.read(fd, 1 << 20):
            pass
        return mib * (1 << 20) / (time.perf_counter() - start) / 1e6
    finally:
        os.close(fd)


def linked_write_stat(directory: str, rounds: int) -> float:
    a, b = os.path.join(directory, "la"), os.path.join(directory, "lb")
    if not os.path.exists(a):
        with open(a, "wb") as f:
            f.write(bytes(4096))
        os.link(a, b)
    data = os.urandom(4096)
    fd = os.open(a, os.O_WRONLY)
    try:
        start = time.perf_counter()
        for i in range(rounds):
            os.pwrite(fd, data, (i % 256) * 4096)
            os.stat(b)
        return rounds / (time.perf_counter() - start)
    finally:
        os.close(fd)


# run --------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    if sys.argv[1:2] == ["--as-hamirror"]:
        variant = os.environ.get("ATTRCACHE_VARIANT", "after")
        sys.argv[1:] = sys.argv[2:]
        return as_hamirror(variant)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=10_000, help="files created, and in the find tree")
    p.add_argument("--read-mib", type=int, default=256)
    p.add_argument("--linked", type=int, default=2000, help="write-then-stat rounds on a linked file")
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (FUSE mounts with allow_other)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    import workloads as w
    from tests import mirror_fixtures
    mirror_fixtures.HAMIRROR = [sys.executable, os.path.abspath(__file__), "--as-hamirror"]
    root = tempfile.mkdtemp(prefix="hamirror-attrcache-", dir="/var/tmp")
    pairs: list = []
    dirs: dict[str, str] = {}
    raw: dict[str, dict[str, list[float]]] = {c: {} for c in CONFIGS}
    try:
        for config in CONFIGS:
            base = os.path.join(root, config)
            os.makedirs(base)
            if config == "plain":
                dirs[config] = os.path.join(base, "primary")
                os.mkdir(dirs[config])
                continue
            os.environ["ATTRCACHE_VARIANT"] = config
            pair = mirror_fixtures.MirrorPair(base, replicate=False, timeout=30)
            pairs.append(pair)
            pair.start()
            dirs[config] = pair.primary
            print(f"# {config}: {pair.primary} (mount pid {pair.mounter.pid})", file=sys.stderr)
        trees = {c: make_tree(d, args.files) for c, d in dirs.items()}
        jobs = [("create_4k", lambda c: w.small_files(dirs[c], args.files)),
                ("find_ls", lambda c: find_ls(trees[c], args.files)),
                ("find_ls_again", lambda c: find_ls(trees[c], args.files)),
                ("seq_read", lambda c: seq_read(dirs[c], args.read_mib)),
                ("linked_write_stat", lambda c: linked_write_stat(dirs[c], args.linked))]
        for rep in range(args.reps):
            for metric, job in jobs:
                for config in CONFIGS:
                    if metric != "find_ls_again":
                        w.settle(dirs[config])
                    value = job(config)
                    raw[config].setdefault(metric, []).append(value)
                    print(f"# rep {rep + 1} {config:6} {metric:18} {value:10.1f}", file=sys.stderr)
    finally:
        for pair in pairs:
            try:
                pair.stop()
            except Exception as exc:   # keep going: every other mount must still be stopped
                print(f"# stopping {pair.base}: {exc}", file=sys.stderr)
        shutil.rmtree(root, ignore_errors=True)
    med = {c: {m: w.median(v) for m, v in per.items()} for c, per in raw.items()}
    env = w.environment()
    print(f"attrcache benchmark  {env['date']}  nproc={env['nproc']} kernel={env['kernel']}")
    print(f"files={args.files}, read={args.read_mib} MiB, linked rounds={args.linked}, "
          f"median of {args.reps} interleaved runs; ratios against 'before'\n")
    print(f"{'metric':20}{'unit':10}" + "".join(f"{c:>10}" for c in CONFIGS)
          + "".join(f"{c + '/before':>14}" for c in ("after", "attr0")))
    for metric, unit in METRICS:
        row = f"{metric:20}{unit:10}" + "".join(f"{med[c][metric]:10.1f}" for c in CONFIGS)
        row += "".join(f"{med[c][metric] / med['before'][metric]:14.2f}" for c in ("after", "attr0"))
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
