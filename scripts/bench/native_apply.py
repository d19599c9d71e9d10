#!/usr/bin/env python3
"""The receiver's apply step alone, native core against the Python applier, in the same run.

    .venv/bin/python scripts/bench/native_apply.py [--files 2000] [--reps 3] [--json]

Two message streams, decoded once beforehand (decoding stays in Python on both paths):
- ``small``: new 4 KiB files in one directory, each a CREATE and a WRITE, every message with
  the primary's times for the file (and the directory, for the CREATE), as barrier mode sends;
- ``pages``: 8 KiB page writes at random offsets in 8 files two directories deep (a database's
  pattern), each with the file's times.
For each path it reports CPU per message (user + system, ``getrusage`` around the
``Applier.apply`` loop, median of ``--reps`` interleaved runs, each in a fresh directory on
``--dir``'s filesystem; the system part is mostly the filesystem's own work, and the kernel
splits user from system by sampling, so the user column is indicative) and syscalls per message
(``strace -c -f`` of one run in a child process, when strace is installed). With ``--link``,
also the CPU per message of a real ``hamirror mirror receive`` process (every thread, read from
/proc) fed the same stream over CURVE, 64 messages in flight. Ratios are native over Python from
the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from hamirror.link.apply import Applier  # noqa: E402
from hamirror.link.protocol import Message, Op, decode, encode  # noqa: E402

T = 1_700_000_000_000_000_000


def _msg(op: Op, ints: tuple, path: bytes, times: tuple, data: bytes | None = None) -> Message:
    return decode([encode(op, 1, 1, ints, (path,), times)] + ([data] if data is not None else []))


def setup_messages(kind: str) -> list[Message]:
    uid, gid = os.getuid(), os.getgid()
    if kind == "small":
        return [_msg(Op.MKDIR, (0o40755, uid, gid), b"d", ())]
    return [_msg(Op.MKDIR, (0o40755, uid, gid), b"db", ()), _msg(Op.MKDIR, (0o40755, uid, gid), b"db/base", ())] + \
        [_msg(Op.CREATE, (0o100600, uid, gid, 0), b"db/base/%d" % i, ()) for i in range(8)]


def stream(kind: str, count: int) -> list[Message]:
    uid, gid = os.getuid(), os.getgid()
    out = []
    if kind == "small":
        for i in range(count // 2):
            p = b"d/f%d" % i
            out.append(_msg(Op.CREATE, (0o100644, uid, gid, 0), p, ((p, T, T), (b"d", T, T))))
            out.append(_msg(Op.WRITE, (0,), p, ((p, T, T + i),), b"x" * 4096))
        return out
    rnd = random.Random(1)
    page = b"p" * 8192
    for i in range(count):
        p = b"db/base/%d" % rnd.randrange(8)
        out.append(_msg(Op.WRITE, (rnd.randrange(1024) * 8192,), p, ((p, T, T + i),), page))
    return out


def cpu_per_message(kind: str, count: int, use_native: bool, where: str) -> tuple[float, float]:
    """Microseconds of user and system CPU per applied message, in a fresh directory: user is
    the applier's own work, system mostly the filesystem's (and noisy on a shared machine)."""
    base = tempfile.mkdtemp(prefix="hm-native-bench-", dir=where)
    try:
        applier = Applier(base, use_native=use_native)
        if use_native and applier.native is None:
            raise SystemExit("the native core is not built (scripts/setup.sh)")
        for msg in setup_messages(kind):
            applier.apply(msg)
        msgs = stream(kind, count)
        before = resource.getrusage(resource.RUSAGE_SELF)
        for msg in msgs:
            applier.apply(msg)
        after = resource.getrusage(resource.RUSAGE_SELF)
        applier.close()
        return ((after.ru_utime - before.ru_utime) / len(msgs) * 1e6,
                (after.ru_stime - before.ru_stime) / len(msgs) * 1e6)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def syscalls_per_message(kind: str, count: int, use_native: bool, where: str) -> float | None:
    """strace -c of a child that applies the setup, then the stream; minus a setup-only child."""
    if shutil.which("strace") is None:
        return None
    totals = []
    for n in (0, count):
        with tempfile.NamedTemporaryFile(prefix="hm-strace-") as out:
            subprocess.run(["strace", "-f", "-c", "-o", out.name, sys.executable, __file__, "--child",
                            kind, str(n), "1" if use_native else "0", where], check=True, capture_output=True)
            last = open(out.name).read().strip().splitlines()[-1].split()
            totals.append(int(last[3]))   # "100.00 seconds usecs/call CALLS [errors] total"
    return (totals[1] - totals[0]) / count


def link_cpu(kind: str, count: int, use_native: bool, where: str) -> float:
    """Microseconds of a real receiver process's CPU (all threads: ZeroMQ, CURVE, decode, unsynced
    log, apply) per message, the stream sent over the link 64 messages at a time."""
    from tests.mirror_fixtures import HELLO_INTS, SESSION, MirrorPair, RawSender

    base = tempfile.mkdtemp(prefix="hm-native-link-", dir=where)
    os.environ["HAMIRROR_NATIVE"] = "1" if use_native else "0"
    pair = MirrorPair(base)
    sender = None
    try:
        pair.start_receiver()
        sender = RawSender(pair)
        sender.exchange([encode(Op.HELLO, SESSION, 0, HELLO_INTS)])
        frames = [[encode(m.op, SESSION, seq, m.ints, m.strs, m.times)] + ([bytes(m.data)] if m.data is not None else [])
                  for seq, m in enumerate(setup_messages(kind) + stream(kind, count), start=1)]

        def send(batch: list) -> None:
            for f in batch:
                sender.socket.send_multipart(f)
            for _ in batch:
                assert sender.socket.poll(30_000), "no reply from the receiver"
                sender.socket.recv_multipart()

        first = len(setup_messages(kind))
        send(frames[:first])
        before = _cpu_ticks(pair.receiver.pid)
        for i in range(first, len(frames), 64):
            send(frames[i:i + 64])
        return (_cpu_ticks(pair.receiver.pid) - before) / os.sysconf("SC_CLK_TCK") / count * 1e6
    finally:
        os.environ.pop("HAMIRROR_NATIVE", None)
        if sender is not None:
            sender.close()
        pair.stop()
        shutil.rmtree(base, ignore_errors=True)


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])   # utime + stime, every thread


def child(kind: str, count: int, use_native: bool, where: str) -> None:
    base = tempfile.mkdtemp(prefix="hm-native-bench-", dir=where)
    try:
        msgs = stream(kind, count) if count else []
        applier = Applier(base, use_native=use_native)
        for msg in setup_messages(kind) + msgs:
            applier.apply(msg)
        applier.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main() -> int:
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1", sys.argv[5])
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=2000, help="messages per stream")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--dir", default="/var/tmp", help="where the directories are made (its filesystem)")
    parser.add_argument("--link", action="store_true",
                        help="also a real receiver process over CURVE: its CPU per message")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = {}
    for kind in ("small", "pages"):
        cpu: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
        for _ in range(args.reps):
            for use_native in (False, True):
                cpu[use_native].append(cpu_per_message(kind, args.files, use_native, args.dir))
        row = {}
        for use_native, name in ((False, "python"), (True, "native")):
            row[name] = {"cpu_us": round(statistics.median(u + s for u, s in cpu[use_native]), 1),
                         "user_us": round(statistics.median(u for u, _ in cpu[use_native]), 1),
                         "syscalls": syscalls_per_message(kind, args.files, use_native, args.dir)}
        if args.link:
            link = {True: [], False: []}
            for _ in range(args.reps):
                for use_native in (False, True):
                    link[use_native].append(link_cpu(kind, args.files, use_native, args.dir))
            for use_native, name in ((False, "python"), (True, "native")):
                row[name]["receiver_us"] = round(statistics.median(link[use_native]), 1)
            row["receiver_ratio"] = round(row["native"]["receiver_us"] / row["python"]["receiver_us"], 2)
        row["cpu_ratio"] = round(row["native"]["cpu_us"] / row["python"]["cpu_us"], 2)
        row["user_ratio"] = round(row["native"]["user_us"] / row["python"]["user_us"], 2)
        if row["python"]["syscalls"]:
            row["syscall_ratio"] = round(row["native"]["syscalls"] / row["python"]["syscalls"], 2)
        results[kind] = row
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        print("stream  path    CPU us/msg  (user)  syscalls/msg")
        for kind, row in results.items():
            for name in ("python", "native"):
                r, sc = row[name], row[name]["syscalls"]
                print(f"{kind:7} {name:7} {r['cpu_us']:10.1f} {r['user_us']:7.1f}  "
                      f"{sc if sc is None else round(sc, 1)!s:>12}")
            print(f"{kind:7} ratio   {row['cpu_ratio']:10.2f} {row['user_ratio']:7.2f}  "
                  f"{row.get('syscall_ratio', '-')!s:>12}")
            if args.link:
                print(f"{kind:7} receiver process CPU us/msg: python {row['python']['receiver_us']}, "
                      f"native {row['native']['receiver_us']}, ratio {row['receiver_ratio']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
