#!/usr/bin/env python3
"""FUSE requests per 4 KiB file, by opcode, for the FUSE columns of mirror.py (perf tracepoints).

    sudo .venv/bin/python scripts/bench/fuse_requests.py [--configs bfw] [--files 1000] [--workdir DIR]

Why: a file created, written (4 KiB) and closed costs a round trip to the file system's process
per request; the count, beside the files/s of mirror.py, says whether a column is slower because it
asks the kernel for more requests or because it serves each one slower. For each column (started
as mirror.py does, with --spread), one process creates ``--files`` files as the small-file
workload does while ``perf record -e fuse:fuse_request_send -a`` runs; the requests counted are
those of the column's own connection (the mount's device), so other mounts on the machine do not
count. Needs root and perf (Debian: linux-perf).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(os.path.dirname(HERE))]

from columns import CONFIGS, Column  # noqa: E402

# What the timed loop of workloads.small_files does for each file (the same calls, same order).
CREATE = """
import os, sys
work, count, data = sys.argv[1], int(sys.argv[2]), os.urandom(4096)
for i in range(count):
    fd = os.open(os.path.join(work, f"f{i:06d}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, data)
    os.close(fd)
"""
EVENT = re.compile(r"connection (\d+) req \d+ opcode \d+ \((\w+)\)")


def kernel_dev(st_dev: int) -> int:
    """The kernel's dev_t (major << 20 | minor), as the tracepoint prints the connection."""
    return os.major(st_dev) << 20 | os.minor(st_dev)


def count(column: Column, files: int, scratch: str) -> collections.Counter:
    """Requests of ``column``'s connection, by opcode, while one process creates ``files`` files."""
    work = tempfile.mkdtemp(prefix="requests-", dir=column.directory)
    data = os.path.join(scratch, f"perf-{column.key}.data")
    try:
        subprocess.run(["perf", "record", "-q", "-e", "fuse:fuse_request_send", "-a", "-o", data, "--",
                        sys.executable, "-c", CREATE, work, str(files)], check=True, capture_output=True)
        out = subprocess.run(["perf", "script", "-i", data], check=True, capture_output=True, text=True).stdout
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mine = str(kernel_dev(os.stat(column.directory).st_dev))
    return collections.Counter(op for conn, op in EVENT.findall(out) if conn == mine)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="bfw", help="FUSE columns of mirror.py (default bfw)")
    p.add_argument("--files", type=int, default=1000)
    p.add_argument("--workdir", default="/var/tmp")
    args = p.parse_args(argv)
    if os.geteuid() != 0 or shutil.which("perf") is None:
        print("needs root and perf (Debian: linux-perf)", file=sys.stderr)
        return 2
    root = tempfile.mkdtemp(prefix="hamirror-requests-", dir=args.workdir)
    try:
        for key in args.configs:
            column = Column(root, key, spread=True)
            try:
                column.start()
                found = count(column, args.files, root)
            finally:
                column.stop()
            per_file = ", ".join(f"{op.removeprefix('FUSE_')} {n / args.files:.2f}" for op, n in found.most_common())
            print(f"{key} {CONFIGS[key]:11} {sum(found.values()) / args.files:5.2f} requests per file: {per_file}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
