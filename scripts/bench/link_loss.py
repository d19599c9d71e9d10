"""How long a link loss blocks the application: the mount records what the peer may miss, then ALONE.

A real mirror pair (FUSE mount, receiver, CURVE over loopback), delegated durability with the
receiver's background sync pushed out (``$HAMIRROR_SYNC_INTERVAL=600``) so the activity log keeps
every new path until the loss. ``--files`` new 4 KiB files in one directory, then an application
thread keeps creating files while the link is cut at T0: the receiver is killed (``kill -9``) and
the mount told at once (``alone``, what the agent does when it sees the peer die), or, with
``--cut stop``, the receiver is frozen (SIGSTOP) until the writer blocks on the window first
(barrier mode: the unacknowledged operations fail too). Reported: how long the application's
write in flight at T0 waited (T0 to its return), T0 to the mount's status saying ALONE, how many
paths the journal holds, and with ``--strace`` the mount's fsync/fdatasync count around the event
(strace slows the mount: take times from runs without it). To compare two versions, run it from
each worktree, alternated:

    cd WORKTREE && flock /tmp/hamirror-lab.lock sudo .venv/bin/python scripts/bench/link_loss.py \\
        --mode sync --files 2000 [--strace]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.getcwd())   # the tree it is run from, not the installed one

from tests.mirror_fixtures import MirrorPair, wait_for  # noqa: E402
from tests.test_resync_common import control, mount_state  # noqa: E402

DATA = b"x" * 4096


class Writer(threading.Thread):
    """The application: creates small files one after the other, noting when each returned."""

    def __init__(self, root: str) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.done: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            with open(os.path.join(self.root, f"app/{i}"), "wb") as f:
                f.write(DATA)
            self.done.append(time.perf_counter())
            i += 1

    def blocked_since(self, t0: float, timeout: float = 120) -> float:
        """Seconds from ``t0`` until the first write that returned after it."""
        wait_for(lambda: self.done and self.done[-1] > t0, timeout, interval=0.001, what="a write after T0")
        return next(t for t in self.done if t > t0) - t0


def strace_start(pid: int, out: str) -> subprocess.Popen:
    proc = subprocess.Popen(["strace", "-f", "-c", "-e", "trace=fsync,fdatasync", "-o", out, "-p", str(pid)],
                            stderr=subprocess.DEVNULL)
    time.sleep(1.0)                   # attached to every thread
    return proc


def strace_counts(proc: subprocess.Popen, out: str) -> dict[str, int]:
    proc.send_signal(signal.SIGINT)
    proc.wait(30)
    counts = {}
    with open(out) as f:
        for line in f:
            parts = line.split()
            if parts and parts[-1] in ("fsync", "fdatasync") and parts[3].isdigit():
                counts[parts[-1]] = int(parts[3])
    return counts


def run(args: argparse.Namespace, base: str) -> None:
    os.environ["HAMIRROR_SYNC_INTERVAL"] = "600"
    pair = MirrorPair(base, mode=args.mode, timeout=5.0)
    pair.start()
    try:
        os.makedirs(os.path.join(pair.primary, "hot"))
        os.makedirs(os.path.join(pair.primary, "app"))
        started = time.perf_counter()
        for i in range(args.files):
            with open(os.path.join(pair.primary, f"hot/{i}"), "wb") as f:
                f.write(DATA)
        fill = time.perf_counter() - started
        writer = Writer(pair.primary)
        tracer = strace_start(pair.mounter.pid, f"{base}/strace.txt") if args.strace else None
        writer.start()
        time.sleep(0.2)
        if args.cut == "stop":
            pair.receiver.send_signal(signal.SIGSTOP)
            count = -1
            while len(writer.done) != count:   # the window fills: the application blocks
                count = len(writer.done)
                time.sleep(0.5)
            pair.receiver.send_signal(signal.SIGKILL)
        else:
            pair.receiver.send_signal(signal.SIGKILL)
        t0 = time.perf_counter()
        control(pair, {"cmd": "alone", "reason": "bench: receiver killed"})
        wait_for(lambda: mount_state(pair) == "ALONE", 120, interval=0.001, what="ALONE")
        alone = time.perf_counter() - t0
        blocked = writer.blocked_since(t0)
        writer.stop.set()
        writer.join(30)
        time.sleep(0.2)
        counts = strace_counts(tracer, f"{base}/strace.txt") if tracer is not None else {}
        pair.receiver.wait(10)
        db = sqlite3.connect(f"file:{pair.state}/journal.db?mode=ro", uri=True)
        recorded = db.execute("SELECT count(*) FROM changed_paths").fetchone()[0]
        db.close()
        print(f"{os.getcwd()}: mode {args.mode}, cut {args.cut}, {args.files} files in {fill:.1f} s; "
              f"application blocked {blocked * 1000:.0f} ms, ALONE after {alone * 1000:.0f} ms, "
              f"{recorded} path(s) in the journal"
              + (f", mount: {counts.get('fdatasync', 0)} fdatasync + {counts.get('fsync', 0)} fsync" if tracer else ""))
    finally:
        pair.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", default="sync", choices=("sync", "barrier"))
    parser.add_argument("--cut", default="kill", choices=("kill", "stop"))
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--strace", action="store_true", help="count the mount's fsync/fdatasync (slower)")
    parser.add_argument("--workdir", default="/srv", help="where the pair's directories go (ext4: fresh)")
    args = parser.parse_args()
    base = tempfile.mkdtemp(dir=args.workdir, prefix="hm-lossbatch-")
    try:
        run(args, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
