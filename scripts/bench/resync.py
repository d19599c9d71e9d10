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
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(os.path.dirname(HERE))]

from hamirror.fs.control import request  # noqa: E402
from tests.mirror_fixtures import MirrorPair, wait_for  # noqa: E402

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


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--changed", type=int, default=10)
    ap.add_argument("--big-gib", type=float, default=4.0)
    ap.add_argument("--full-gib", type=float, default=2.0)
    ap.add_argument("--workdir", default=None, help="where to make the trees (default: a temp dir in /var/tmp)")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: files,big,full")
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
    if "full" in r:
        f = r["full"]
        ratio = f["full_mb_s"] / f["cp_mb_s"]
        print(f"\nfull resync of {f['bytes'] / (1 << 30):.2f} GiB to an empty secondary: {f['full_s']:.2f} s = "
              f"{f['full_mb_s']:.0f} MB/s; cp -a: {f['cp_s']:.2f} s = {f['cp_mb_s']:.0f} MB/s; "
              f"{ratio:.0%} of cp   target >= 70%: {verdict(ratio >= 0.7)}")


if __name__ == "__main__":
    sys.exit(main())
