#!/usr/bin/env python3
"""Pick the FUSE binding by measurement: minimal mfusepy and pyfuse3 passthroughs vs the plain directory.

    sudo .venv/bin/python scripts/bench/binding.py [--quick] [--json] [--mfusepy-python /tmp/bvenv/bin/python]
        [--pyfuse3-python /tmp/bvenv/bin/python]

Neither binding is a project dependency (the mount runs on its own request loop): install both
into a throwaway venv (see docs/performance.md, section 2) and point --mfusepy-python and
--pyfuse3-python at that interpreter. Each passthrough (pt_mfusepy.py, pt_pyfuse3.py)
serves its own fresh source directory at its own mount point, all on the same disk. Runs are
interleaved across the configurations; the figure is the median of --reps repetitions.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(os.path.dirname(HERE))]

import workloads as w  # noqa: E402
from tests.mirror_fixtures import is_fuse_mounted, wait_for  # noqa: E402

METRICS = [("write_fsync", "MB/s"), ("write_nofsync", "MB/s"), ("small_files", "files/s"),
           ("create_fsync", "files/s")]


class Passthrough:
    def __init__(self, name: str, argv: list[str], base: str) -> None:
        self.name, self.source, self.dir = name, os.path.join(base, "source"), os.path.join(base, "mnt")
        os.makedirs(self.source)
        os.makedirs(self.dir)
        self.log = open(os.path.join(base, "log"), "wb")
        self.proc = subprocess.Popen(argv + [self.source, self.dir], stdout=self.log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: is_fuse_mounted(self.dir) or self.proc.poll() is not None, 20, what=name)
        finally:
            if not is_fuse_mounted(self.dir):
                self.stop()
                raise RuntimeError(f"{name} did not mount: {open(self.log.name).read()[-1500:]}")
        print(f"# {name}: pid {self.proc.pid} at {self.dir}", file=sys.stderr)

    def stop(self) -> None:
        if is_fuse_mounted(self.dir):
            subprocess.run(["fusermount3", "-u", self.dir], capture_output=True)
            if is_fuse_mounted(self.dir):
                subprocess.run(["fusermount3", "-u", "-z", self.dir], capture_output=True)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="128 MiB, 1,000 files, 2 reps")
    p.add_argument("--json", action="store_true")
    p.add_argument("--size-mib", type=int)
    p.add_argument("--files", type=int)
    p.add_argument("--reps", type=int)
    p.add_argument("--mfusepy-python", default="/tmp/bvenv/bin/python", help="an interpreter with mfusepy")
    p.add_argument("--only", help="comma-separated subset of mfusepy,mfusepy-wb,pyfuse3,pyfuse3-wb (plain always runs)")
    p.add_argument("--pyfuse3-python", default="/tmp/bvenv/bin/python",
                   help="an interpreter with pyfuse3 and trio; '' to skip pyfuse3")
    p.add_argument("--writeback", action="store_true", help="also run each binding with the kernel writeback cache")
    args = p.parse_args(argv)
    for key, quick, full in (("size_mib", 128, 1024), ("files", 1000, 10000), ("reps", 2, 3)):
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    root = tempfile.mkdtemp(prefix="hamirror-binding-", dir="/var/tmp")
    plain = os.path.join(root, "plain")
    os.mkdir(plain)
    targets: dict[str, str] = {"plain": plain}
    mounts: list[Passthrough] = []
    skipped: dict[str, str] = {}
    wanted = [("mfusepy", [args.mfusepy_python, os.path.join(HERE, "pt_mfusepy.py")])]
    if args.writeback:
        wanted.append(("mfusepy-wb", [args.mfusepy_python, os.path.join(HERE, "pt_mfusepy.py"), "--writeback"]))
    if args.pyfuse3_python:
        wanted.append(("pyfuse3", [args.pyfuse3_python, os.path.join(HERE, "pt_pyfuse3.py")]))
        if args.writeback:
            wanted.append(("pyfuse3-wb", [args.pyfuse3_python, os.path.join(HERE, "pt_pyfuse3.py"), "--writeback"]))
    raw: dict[str, dict[str, list[float]]] = {}
    jobs = [("write_fsync", lambda d: w.seq_write(d, args.size_mib, fsync=True)),
            ("write_nofsync", lambda d: w.seq_write(d, args.size_mib, fsync=False)),
            ("small_files", lambda d: w.small_files(d, args.files)),
            ("create_fsync", lambda d: w.small_files(d, args.files, fsync=True))]
    try:
        for name, cmd in wanted:
            if args.only and name not in args.only.split(","):
                continue
            try:
                mounts.append(Passthrough(name, cmd, os.path.join(root, name)))
                targets[name] = mounts[-1].dir
            except (RuntimeError, OSError) as exc:
                skipped[name] = str(exc)
        for rep in range(args.reps):
            for metric, fn in jobs:
                for name, directory in targets.items():
                    w.settle(directory)
                    value = fn(directory)
                    raw.setdefault(name, {}).setdefault(metric, []).append(value)
                    print(f"# rep {rep + 1} {name:10} {metric:14} {value:10.1f}", file=sys.stderr)
    finally:
        for m in mounts:
            m.stop()
        # what a passthrough failed to remove through its mount would stay on the disk
        shutil.rmtree(root, ignore_errors=True)
    med = {n: {m: w.median(v) for m, v in per.items()} for n, per in raw.items()}
    summary = {"environment": w.environment(), "parameters": vars(args), "median": med, "runs": raw,
               "skipped": skipped, "workdir": root}
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    env = summary["environment"]
    print(f"FUSE binding benchmark  {env['date']}  nproc={env['nproc']} kernel={env['kernel']} disk={env['disk']}")
    print(f"size={args.size_mib} MiB, files={args.files}, median of {args.reps} interleaved runs\n")
    print(f"{'path':12}" + "".join(f"{m + ' ' + u:>22}" for m, u in METRICS))
    for name, per in med.items():
        cells = "".join(f"{per[m]:12.1f} ({per[m] / med['plain'][m]:5.1%})" for m, _ in METRICS)
        print(f"{name:12}{cells}")
    for name, why in skipped.items():
        print(f"skipped {name}: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
