"""FUSE over io_uring against classic /dev/fuse, on libfuse's own C passthrough: the fastest
transport this kernel offers a FUSE file system, measured against the plain directory.

Why: issue 16 asks interception alone for 0.5 of the plain directory on 4 KiB files. Columns f
and w of ``mirror.py`` put libfuse's C passthrough (classic /dev/fuse) at 0.06-0.17 of plain;
this kernel (6.18) also has FUSE-over-io_uring (``/sys/module/fuse/parameters/enable_uring``),
which Debian 12's libfuse 3.14 cannot speak. This bench runs libfuse >= 3.18's
``example/passthrough_ll`` (built by the caller, see docs/performance.md) with and without
``-o io_uring``, the tree's own 3.14 build of the same example, and the plain directory, in
alternated rounds, and prints files/s, CPU per file and the ratios against plain.

    flock /tmp/hamirror-lab.lock .venv/bin/python scripts/bench/fuse_uring.py \\
        --libfuse-build /tmp/libfuse-3.18.2/build --workdir /srv/hm-uring --rounds 6

The workload is ``smallbench.c`` (next to this file): create with O_EXCL, write 4 KiB, close, N
files in one fresh directory; then N x (pwrite 4 KiB at 0 + fdatasync), latency p50. Nothing is
deleted until the end: this VM's ext4 has no journal, and its inode allocator steps over every
inode freed in the last minutes (see "The FUSE ceiling for interception" in performance.md).
``enable_uring`` is set for the run and put back as it was.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cpassthrough  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ENABLE_URING = "/sys/module/fuse/parameters/enable_uring"
CONFIGS = ("plain", "classic", "uring", "classic314")
TICK = os.sysconf("SC_CLK_TCK")


def build_smallbench(directory: str) -> str:
    """Compile smallbench.c with warnings as errors; its path."""
    binary = os.path.join(directory, "smallbench")
    done = subprocess.run(["cc", "-Wall", "-Werror", "-O2", "-o", binary, os.path.join(HERE, "smallbench.c")],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"cc failed: {done.stderr.strip()[-1000:]}")
    return binary


def run_client(binary: str, *args: str) -> dict[str, float]:
    """One smallbench run; its key=value line as numbers."""
    out = subprocess.run([binary, *args], capture_output=True, text=True, check=True).stdout.split()
    fields = dict(item.split("=", 1) for item in out)
    return {key: float(value) for key, value in fields.items() if key != "op"}


def process_cpu_s(pid: int) -> float:
    """User + system CPU of every thread of ``pid`` so far, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def ring_completions(pid: int) -> int:
    """Completions posted on the process's io_uring rings (fdinfo CqTail): requests the kernel sent
    over io_uring, the proof that the transport is in use."""
    total = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if "io_uring" not in os.readlink(f"/proc/{pid}/fd/{fd}"):
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("CqTail"))
        except (OSError, StopIteration):
            continue
    return total


def one(config: str, round_no: int, args: argparse.Namespace, client: str) -> dict[str, float]:
    """Mount ``config`` over a fresh directory (a block group of its own), run the two workloads."""
    base = os.path.join(args.workdir, f"{config}-r{round_no}")
    os.makedirs(base)
    subprocess.run(["chattr", "+T", base], check=True)
    mount = None
    if config == "plain":
        target = base
    else:
        binary = os.path.join(args.libfuse_build, "example", "passthrough_ll") if config != "classic314" else None
        mount = cpassthrough.Passthrough(base, writeback=False, binary=binary,
                                         extra=",io_uring" if config == "uring" else "")
        mount.start()
        target = mount.directory
    try:
        time.sleep(0.3)
        pid = mount.proc.pid if mount and mount.proc else None
        cpu0, cq0 = (process_cpu_s(pid), ring_completions(pid)) if pid else (0.0, 0)
        result = run_client(client, "create", target, str(args.files))
        if pid:
            result["daemon_cpu_us_per_file"] = (process_cpu_s(pid) - cpu0) * 1e6 / args.files
            result["uring_requests_per_file"] = (ring_completions(pid) - cq0) / args.files
        if args.fsync_ops:
            fsync = run_client(client, "fsync", os.path.join(target, "fsync.dat"), str(args.fsync_ops))
            result["fsync_p50_us"] = fsync["p50_us"]
        return result
    finally:
        if mount:
            mount.stop()


def median(rows: list[dict[str, float]], key: str) -> float | None:
    values = [row[key] for row in rows if key in row]
    return statistics.median(values) if values else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--libfuse-build", required=True,
                        help="a libfuse >= 3.18 meson build directory (with example/passthrough_ll)")
    parser.add_argument("--workdir", required=True, help="a new directory on the disk under test")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--fsync-ops", type=int, default=2000, help="0: no fsync latency loop")
    parser.add_argument("--settle", type=float, default=65, help="seconds of quiet before the first round")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    if os.geteuid() != 0 or not os.path.exists(ENABLE_URING):
        print("needs root and a kernel with FUSE over io_uring", file=sys.stderr)
        return 2
    why = cpassthrough.available()
    if why:
        print(why, file=sys.stderr)
        return 2
    os.makedirs(args.workdir)
    with open(ENABLE_URING) as f:
        was = f.read().strip()
    rows: dict[str, list[dict[str, float]]] = {config: [] for config in CONFIGS}
    try:
        with open(ENABLE_URING, "w") as f:
            f.write("Y")
        client = build_smallbench(args.workdir)
        os.sync()
        time.sleep(args.settle)
        for round_no in range(1, args.rounds + 1):
            order = CONFIGS if round_no % 2 else tuple(reversed(CONFIGS))
            for config in order:
                row = one(config, round_no, args, client)
                rows[config].append(row)
                print(f"round {round_no} {config:10s} " + " ".join(f"{k}={v:.1f}" for k, v in row.items()), flush=True)
    finally:
        with open(ENABLE_URING, "w") as f:
            f.write(was)
        shutil.rmtree(args.workdir, ignore_errors=True)
    plain = median(rows["plain"], "files_per_s")
    print(f"\nmedian of {args.rounds} rounds, {args.files} files of 4 KiB (create, write, close):")
    for config in CONFIGS:
        rate = median(rows[config], "files_per_s")
        line = f"  {config:10s} {rate:9.0f} files/s  x/plain {rate / plain:.2f}"
        for key in ("client_cpu_us_per_file", "daemon_cpu_us_per_file", "uring_requests_per_file", "fsync_p50_us"):
            value = median(rows[config], key)
            if value is not None:
                line += f"  {key} {value:.1f}"
        print(line)
    uring, classic = median(rows["uring"], "files_per_s"), median(rows["classic"], "files_per_s")
    print(f"  io_uring / classic (same libfuse build): {uring / classic:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
