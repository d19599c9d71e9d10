#!/usr/bin/env python3
"""Online resync benchmark: incremental vs --full vs rsync, bytes sent, full-resync throughput.

    sudo .venv/bin/python scripts/bench/resync.py [--files N] [--big-gib G] [--full-gib G]
                                                  [--changed N] [--workdir DIR] [--json]

1. N small files (default 100,000 of 10 KiB, about 1 GiB) made directly in the primary's
   directory and copied with ``cp -a`` to the secondary; the mirror is then started ALONE
   (``mount --alone``) and resynced once (scan: metadata only, trees already equal), so both
   journals share a generation. Then, for N/10 and N files: an outage in which --changed files
   change through the mount, and the time of the incremental resync; another such outage and a
   ``--full`` resync; then (unmounted) the same kind of change and ``rsync -a --delete SRC/ DST/``.
2. One file of --big-gib GiB (default 4), 1 MiB of scattered changes (256 pages of 4 KiB at random
   offsets) during an outage: bytes the resync's link sent vs the changed bytes.
3. --full-gib GiB (default 2) in 8 files, full resync to an empty secondary, vs ``cp -a`` of the
   same data to another directory on this machine.

4. Failback after a power-kill of the primary (``--failback-files``, default 10,000 and 1,000,000
   files of ``--failback-bytes`` each, made directly in both directories, no pairing scan): the
   mirror streams, a few hot files are written, the receiver is frozen while operations are in
   flight, the primary's mount daemon and the receiver are SIGKILLed, the secondary takes over
   (``mount --alone``) and changes files, then the old primary returns as receiver and the time
   of the failback resync is measured (with the activity log; and without it, i.e. today's scan,
   on trees of at most ``--failback-scan-max`` files).

Times are wall clock from the control request to the mount being PRIM again (polled every 10 ms).
Dirty pages are written back (``sync``) before each timed step; no cache is dropped. Every mount
and process is ended by PID, also on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import signal
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(os.path.dirname(HERE))]

from hamirror.fs.control import request  # noqa: E402
from tests.mirror_fixtures import MirrorPair, failback_pair, wait_for  # noqa: E402
from tests.test_resync_common import establish, kill9, lower_dir  # noqa: E402

FILE_BYTES = 10 * 1024


def state(pair: MirrorPair) -> dict:
    return request(pair.state, {"cmd": "status"})["status"]


def timed_resync(pair: MirrorPair, full: bool = False) -> tuple[float, int, str]:
    """(seconds, bytes the resync's link sent, mode) of one resync, started over the control socket."""
    subprocess.run(["sync"], check=True)
    mode = ""
    start = time.perf_counter()
    request(pair.state, {"cmd": "resync", "peer": pair.endpoint, "full": full})
    while True:
        st = state(pair)
        if st.get("resync"):
            mode = st["resync"]["mode"]
        if st["state"] == "PRIM":
            break
        if st["state"] == "ALONE" and st.get("last_resync_error"):
            raise RuntimeError(f"resync failed: {st['last_resync_error']}")
        time.sleep(0.01)
    seconds = time.perf_counter() - start
    return seconds, state(pair)["bytes_sent"], mode or _last_mode(pair)


def _last_mode(pair: MirrorPair) -> str:
    with open(pair.log("mount"), errors="replace") as f:
        lines = [ln for ln in f if "path(s) to visit (" in ln]
    return lines[-1].rsplit("(", 1)[1].strip().rstrip(")") if lines else "?"


def outage(pair: MirrorPair) -> None:
    pair.kill_receiver()
    request(pair.state, {"cmd": "alone", "reason": "bench: receiver killed"})
    wait_for(lambda: state(pair)["state"] == "ALONE", 15, what="ALONE")


def start_alone_and_pair(pair: MirrorPair) -> float:
    """Mount ALONE over already equal trees, start the receiver, resync once (journals agree)."""
    pair.mount(extra=("--alone",))
    pair.start_receiver()
    seconds, _, _ = timed_resync(pair)
    return seconds


def make_files(root: str, count: int, rnd: random.Random) -> list[str]:
    paths = []
    for i in range(count):
        d = os.path.join(root, f"d{i // 1000:04d}")
        if i % 1000 == 0:
            os.makedirs(d, exist_ok=True)
        path = os.path.join(d, f"f{i:07d}")
        with open(path, "wb") as f:
            f.write(rnd.randbytes(FILE_BYTES))
        paths.append(os.path.relpath(path, root))
    return paths


def change_files(root: str, paths: list[str], n: int, rnd: random.Random) -> int:
    changed = 0
    for rel in rnd.sample(paths, n):
        with open(os.path.join(root, rel), "r+b") as f:
            f.seek(rnd.randrange(0, FILE_BYTES - 4096))
            f.write(rnd.randbytes(4096))
            changed += 4096
    return changed


def bench_files(workdir: str, count: int, changed_n: int, rnd: random.Random) -> dict:
    pair = MirrorPair(os.path.join(workdir, f"files-{count}"), timeout=5)
    try:
        t0 = time.perf_counter()
        paths = make_files(pair.primary, count, rnd)
        subprocess.run(["cp", "-a", f"{pair.primary}/.", pair.secondary], check=True)
        setup = time.perf_counter() - t0
        pairing = start_alone_and_pair(pair)

        outage(pair)
        changed = change_files(pair.primary, paths, changed_n, rnd)
        pair.start_receiver()
        inc_s, inc_sent, inc_mode = timed_resync(pair)

        outage(pair)
        change_files(pair.primary, paths, changed_n, rnd)
        pair.start_receiver()
        full_s, full_sent, full_mode = timed_resync(pair, full=True)

        pair.umount()
        pair.kill_receiver()
        change_files(pair.primary, paths, changed_n, rnd)
        subprocess.run(["sync"], check=True)
        t0 = time.perf_counter()
        subprocess.run(["rsync", "-a", "--delete", f"{pair.primary}/", f"{pair.secondary}/"], check=True)
        rsync_s = time.perf_counter() - t0
        return {"files": count, "changed_files": changed_n, "changed_bytes": changed,
                "setup_s": setup, "pairing_scan_s": pairing,
                "incremental_s": inc_s, "incremental_sent": inc_sent, "incremental_mode": inc_mode,
                "full_s": full_s, "full_sent": full_sent, "full_mode": full_mode, "rsync_s": rsync_s}
    finally:
        pair.stop()
        shutil.rmtree(pair.base, ignore_errors=True)


def write_random(path: str, nbytes: int, rnd: random.Random) -> None:
    block = rnd.randbytes(1 << 20)
    with open(path, "wb") as f:
        for i in range(nbytes // (1 << 20)):
            f.write(block[i % 997:] + block[:i % 997])   # distinct blocks, cheap to make


def bench_big(workdir: str, gib: float, rnd: random.Random) -> dict:
    pair = MirrorPair(os.path.join(workdir, "big"), timeout=5)
    try:
        size = int(gib * (1 << 30)) // (1 << 20) * (1 << 20)
        write_random(os.path.join(pair.primary, "big"), size, rnd)
        subprocess.run(["cp", "-a", f"{pair.primary}/big", pair.secondary], check=True)
        start_alone_and_pair(pair)
        outage(pair)
        changed = 0
        with open(os.path.join(pair.primary, "big"), "r+b") as f:
            for page in rnd.sample(range(size // 4096), 256):
                f.seek(page * 4096)
                f.write(rnd.randbytes(4096))
                changed += 4096
        pair.start_receiver()
        seconds, sent, mode = timed_resync(pair)
        return {"size": size, "changed_bytes": changed, "sent": sent, "seconds": seconds, "mode": mode}
    finally:
        pair.stop()
        shutil.rmtree(pair.base, ignore_errors=True)


def bench_full(workdir: str, gib: float, rnd: random.Random) -> dict:
    pair = MirrorPair(os.path.join(workdir, "full"), timeout=5)
    copy_dst = os.path.join(workdir, "cp-dst")
    try:
        total = int(gib * (1 << 30)) // 8 // (1 << 20) * (1 << 20)
        for i in range(8):
            write_random(os.path.join(pair.primary, f"part{i}"), total, rnd)
        nbytes = 8 * total
        subprocess.run(["sync"], check=True)
        t0 = time.perf_counter()
        subprocess.run(["cp", "-a", f"{pair.primary}/.", copy_dst], check=True)
        subprocess.run(["sync"], check=True)
        cp_s = time.perf_counter() - t0
        shutil.rmtree(copy_dst)
        pair.mount(extra=("--alone",))
        pair.start_receiver()
        seconds, sent, mode = timed_resync(pair, full=True)
        subprocess.run(["sync"], check=True)
        synced_s = seconds
        return {"bytes": nbytes, "cp_s": cp_s, "full_s": synced_s, "sent": sent, "mode": mode,
                "cp_mb_s": nbytes / cp_s / 1e6, "full_mb_s": nbytes / synced_s / 1e6}
    finally:
        pair.stop()
        shutil.rmtree(pair.base, ignore_errors=True)
        shutil.rmtree(copy_dst, ignore_errors=True)


def make_tree(root: str, count: int, nbytes: int) -> None:
    """``count`` files of ``nbytes`` in directories of 1,000, as fast as Python allows (one
    open/write/close per file, names resolved from the directory's descriptor)."""
    data = b"x" * nbytes
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    for first in range(0, count, 1000):
        d = os.path.join(root, f"d{first // 1000:04d}")
        os.mkdir(d)
        dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for i in range(first, min(first + 1000, count)):
                fd = os.open(f"f{i:07d}", flags, 0o644, dir_fd=dfd)
                if data:
                    os.write(fd, data)
                os.close(fd)
        finally:
            os.close(dfd)


def _power_kill_primary(pair: MirrorPair, hot: int, rnd: random.Random) -> None:
    """Hot writes while streaming, then operations in flight that reach only the primary's disk,
    then SIGKILL of the mount daemon and of the (frozen) receiver."""
    for rep in range(5):
        for i in range(hot):
            with open(os.path.join(pair.primary, "d0000", f"f{i:07d}"), "r+b") as f:
                f.write(b"hot write %d" % rep)
    lower = lower_dir(pair)
    os.kill(pair.receiver.pid, signal.SIGSTOP)
    target = os.path.join(pair.primary, "d0000", f"f{hot:07d}")
    marker = b"in flight %d" % rnd.randrange(1 << 30)

    def in_flight() -> None:
        try:
            with open(target, "r+b") as f:
                f.write(marker)
        except OSError:
            pass
    thread = threading.Thread(target=in_flight, daemon=True)
    thread.start()
    seen = os.path.join(lower, "d0000", f"f{hot:07d}")
    wait_for(lambda: open(seen, "rb").read(len(marker)) == marker, 10, what="the write in flight")
    kill9(pair.mounter)
    kill9(pair.receiver)
    pair.umount()
    thread.join(10)


def bench_failback(workdir: str, count: int, nbytes: int, activity_log: bool, rnd: random.Random,
                   hot: int = 50, changed: int = 10) -> dict:
    pair = MirrorPair(os.path.join(workdir, f"failback-{count}-{'al' if activity_log else 'scan'}"), timeout=30)
    back = None
    try:
        pair.start()
        establish(pair)                     # both journals share a generation (empty trees)
        pair.umount()                       # clean stop, then the same tree on both sides
        pair.kill_receiver()
        t0 = time.perf_counter()
        make_tree(pair.primary, count, nbytes)
        subprocess.run(["cp", "-a", f"{pair.primary}/.", pair.secondary], check=True)
        subprocess.run(["sync"], check=True)
        setup = time.perf_counter() - t0
        pair.start_receiver()
        pair.mount(extra=() if activity_log else ("--no-activity-log",))
        _power_kill_primary(pair, hot, rnd)
        back = failback_pair(pair)
        back.mount(extra=("--alone",))      # the secondary takes over and writes on its own
        for i in range(changed):            # spread over the tree
            idx = (i * 7919 + 123) % count
            with open(os.path.join(back.primary, f"d{idx // 1000:04d}", f"f{idx:07d}"), "ab") as f:
                f.write(b"written by the survivor")
        back.start_receiver()               # the old primary returns as secondary
        seconds, sent, mode = timed_resync(back)
        return {"files": count, "file_bytes": nbytes, "activity_log": activity_log, "setup_s": setup,
                "failback_s": seconds, "sent": sent, "mode": mode}
    finally:
        if back is not None:
            back.stop()
        pair.stop()
        shutil.rmtree(pair.base, ignore_errors=True)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--changed", type=int, default=10)
    ap.add_argument("--big-gib", type=float, default=4.0)
    ap.add_argument("--full-gib", type=float, default=2.0)
    ap.add_argument("--workdir", default=None, help="where to make the trees (default: a temp dir in /var/tmp)")
    ap.add_argument("--failback-files", default="10000,1000000",
                    help="comma list of tree sizes for the failback after a power-kill (default: %(default)s)")
    ap.add_argument("--failback-bytes", type=int, default=0, help="size of each file of those trees")
    ap.add_argument("--failback-scan-max", type=int, default=100_000,
                    help="also measure without the activity log (a scan) on trees up to this many files")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: files,big,full,failback")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (FUSE mounts)", file=sys.stderr)
        return 2
    rnd = random.Random(42)
    workdir = tempfile.mkdtemp(prefix="hamirror-resync-bench-", dir=args.workdir or "/var/tmp")
    skip = set(filter(None, args.skip.split(",")))
    results: dict = {"args": vars(args)}
    try:
        if "files" not in skip:
            results["files"] = [bench_files(workdir, n, args.changed, rnd)
                                for n in sorted({max(args.files // 10, 100), args.files})]
        if "big" not in skip:
            results["big"] = bench_big(workdir, args.big_gib, rnd)
        if "full" not in skip:
            results["full"] = bench_full(workdir, args.full_gib, rnd)
        if "failback" not in skip:
            results["failback"] = []
            for n in sorted(int(x) for x in args.failback_files.split(",") if x):
                for with_log in (True, False) if n <= args.failback_scan_max else (True,):
                    results["failback"].append(bench_failback(workdir, n, args.failback_bytes, with_log, rnd))
                    print(json.dumps(results["failback"][-1]), file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=1))
    report(results)
    return 0


def report(r: dict) -> None:
    for f in r.get("files", []):
        print(f"\n{f['files']} files of 10 KiB, {f['changed_files']} changed ({f['changed_bytes']} bytes):")
        print(f"  pairing scan over equal trees  {f['pairing_scan_s']:8.2f} s")
        print(f"  incremental resync ({f['incremental_mode']:<11}) {f['incremental_s']:8.3f} s, "
              f"{f['incremental_sent']} bytes sent")
        print(f"  --full resync ({f['full_mode']})          {f['full_s']:8.2f} s, {f['full_sent']} bytes sent")
        print(f"  rsync -a --delete               {f['rsync_s']:8.2f} s")
        ratio = f["rsync_s"] / f["incremental_s"]
        print(f"  incremental is {ratio:.0f}x faster than rsync, {f['full_s'] / f['incremental_s']:.0f}x than "
              f"--full   target >= 50x: {verdict(ratio >= 50)}")
    files = r.get("files", [])
    if len(files) == 2:
        a, b = files
        growth = b["incremental_s"] / a["incremental_s"]
        print(f"\nincremental time x{growth:.2f} for x{b['files'] / a['files']:.0f} files (same changed bytes); "
              f"rsync x{b['rsync_s'] / a['rsync_s']:.2f}   target: grows with changed bytes, not file count "
              f"(x < 2): {verdict(growth < 2)}")
    if "big" in r:
        b = r["big"]
        ratio = b["sent"] / b["changed_bytes"]
        print(f"\none file of {b['size'] / (1 << 30):.2f} GiB, {b['changed_bytes']} bytes changed in 256 pages: "
              f"resync ({b['mode']}) {b['seconds']:.2f} s, sent {b['sent']} bytes = {ratio:.2f}x the changed bytes"
              f"   target <= 2x: {verdict(ratio <= 2)}")
    failback = [f for f in r.get("failback", []) if f["activity_log"]]
    for f in r.get("failback", []):
        print(f"\nfailback after a power-kill of the primary, {f['files']} files of {f['file_bytes']} bytes, "
              f"{'with' if f['activity_log'] else 'without'} the activity log: {f['failback_s']:.2f} s "
              f"({f['mode']}), {f['sent']} bytes sent   (setup {f['setup_s']:.0f} s)")
    if len(failback) >= 2:
        small, large = failback[0], failback[-1]
        extra = large["failback_s"] - small["failback_s"]
        print(f"\nfailback on {large['files']} files takes {extra:+.2f} s vs {small['files']} files"
              f"   target <= +2 s: {verdict(extra <= 2)}")
    if "full" in r:
        f = r["full"]
        ratio = f["full_mb_s"] / f["cp_mb_s"]
        print(f"\nfull resync of {f['bytes'] / (1 << 30):.2f} GiB to an empty secondary: {f['full_s']:.2f} s = "
              f"{f['full_mb_s']:.0f} MB/s; cp -a: {f['cp_s']:.2f} s = {f['cp_mb_s']:.0f} MB/s; "
              f"{ratio:.0%} of cp   target >= 70%: {verdict(ratio >= 0.7)}")


if __name__ == "__main__":
    sys.exit(main())
