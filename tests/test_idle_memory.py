"""What keeps the data path's idle memory down (docs/performance.md, "Idle memory of the data path"):
no asyncio/ssl/mfusepy in a mount's imports, one malloc arena, the plain-thread ZAP handler, the idle heap trim,
the native loop's workers giving their receive buffers back when idle."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
import zmq
from zmq.utils import z85

from hamirror.fs import lowlevel
from hamirror.heaptrim import IdleTrim
from hamirror.link import zap
from hamirror.link.monitor import recv_monitor_message
from tests.conftest import needs_root
from tests.mirror_fixtures import is_fuse_mounted, wait_for

# Resident memory and an idle spell measured: alone, after the parallel step (scripts/test.sh).
pytestmark = pytest.mark.serial


def test_the_daemons_and_the_link_import_no_asyncio() -> None:
    """pyzmq's monitor helper and ThreadAuthenticator pulled in asyncio and ssl (~8 MB resident in
    every daemon and in the spawner they fork from) for a struct.unpack and a set lookup; mfusepy
    (ctypes declarations of libfuse, ~0.5 MB) went with the first FUSE engine."""
    code = ("import sys, hamirror.cli.main, hamirror.cli.mirror, hamirror.cli.spawner, hamirror.fs.mount, "
            "hamirror.link.keys, hamirror.replica.receiver; "
            "print(sorted(m for m in ('asyncio', 'ssl', 'zmq.asyncio', 'mfusepy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


_ARENAS = """
import threading
from hamirror.syscalls import keep_message_buffers, malloc_trim
keep_message_buffers()
def anonymous():
    with open("/proc/self/smaps_rollup") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("Anonymous:"))
before = anonymous()
freed, hold = threading.Barrier(7), threading.Event()
def worker():
    data = b"x" * (1 << 20)   # a message's copy, as a FUSE thread makes one
    del data
    freed.wait()
    hold.wait()
threads = [threading.Thread(target=worker) for _ in range(6)]
for t in threads:
    t.start()
freed.wait()
malloc_trim()
print(anonymous() - before)
hold.set()
"""


def test_buffers_freed_by_many_threads_are_given_back_by_the_idle_trim() -> None:
    """glibc's malloc_trim releases the free top of the main heap only: 1 MiB freed at the top
    of each thread's own arena stayed resident (~1 MiB per FUSE thread that carried a large
    WRITE). The daemons allocate from one arena, so the idle trim gives it all back."""
    out = subprocess.run([sys.executable, "-c", _ARENAS], capture_output=True, text=True, timeout=60, check=True)
    assert int(out.stdout) < 2048, f"{out.stdout.strip()} KiB still resident after the trim"

_MOUNT = """
import os, sys, threading
from hamirror.fs import lowlevel
from hamirror.fs.mount import MAX_BACKGROUND, MAX_THREADS
from hamirror.fs.operations import Interception
from hamirror.mirror.replicator import Replicator
from hamirror.syscalls import keep_message_buffers, malloc_trim
keep_message_buffers()   # as the mount daemon (cli/mirror.py); its idle trim is the malloc_trim below
mnt = sys.argv[1]
root_fd = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
ops = Interception(root_fd, Replicator(None, None), "sync", context=lowlevel.context())
def measure():
    for _ in sys.stdin:
        malloc_trim()
        with open("/proc/self/smaps_rollup") as f:
            print(next(int(l.split()[1]) for l in f if l.startswith("Anonymous:")), flush=True)
threading.Thread(target=measure, daemon=True).start()
lowlevel.serve_native(ops, root_fd, mnt, writeback=False, max_background=MAX_BACKGROUND, max_threads=MAX_THREADS,
                      on_init=lambda: print("ready", flush=True))
"""


@needs_root
def test_a_burst_of_large_writes_leaves_no_receive_buffer_resident_once_idle(tmp_path):
    """libfuse's loop gave each worker a receive buffer of the largest request (1 MiB + 4 KiB)
    and kept it: after writes of 1 MiB from 8 writers at once, every worker held 1 MiB of
    anonymous memory for good (the heap trimmed). The native loop's workers give those pages
    back once idle for a second (docs/native.md, "Workers and their buffers"). How many workers
    the burst fills depends on the scheduling (3-10 MiB over 6 runs with 8 writers; CI once saw
    3.0 MiB): 16 writers, at least two buffers filled, and back to within 1 MiB of the start
    (24-192 KiB measured)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    mount = subprocess.Popen([sys.executable, "-c", _MOUNT, str(mnt)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)

    def anonymous() -> int:
        mount.stdin.write("\n")
        mount.stdin.flush()
        return int(mount.stdout.readline())

    try:
        assert mount.stdout.readline() == "ready\n"
        wait_for(lambda: is_fuse_mounted(str(mnt)), 10, what="the mount")
        (mnt / "warm").write_bytes(b"x")
        before = anonymous()
        data = b"w" * (1 << 20)

        def writer(i: int) -> None:
            with open(mnt / f"big{i}", "wb", buffering=0) as f:
                for _ in range(4):
                    f.write(data)

        writers = [threading.Thread(target=writer, args=(i,)) for i in range(16)]
        for t in writers:
            t.start()
        for t in writers:
            t.join()
        busy = anonymous()
        time.sleep(2.5)   # 1 s idle, then the loop's next look (every 0.5 s)
        idle = anonymous()
        assert all((mnt / f"big{i}").stat().st_size == 4 << 20 for i in range(16))
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
        mount.communicate(timeout=20)
    assert busy - before >= 2048, (before, busy)    # the burst did fill several workers' buffers
    assert idle - before < 1024, f"{idle - before} KiB still resident after 2.5 s idle ({before}, {busy}, {idle})"


def _request(mechanism: bytes, *credentials: bytes) -> list[bytes]:
    return [b"1.0", b"id-7", b"*", b"10.0.0.9", b"", mechanism, *credentials]


def test_zap_admits_a_trusted_key_only_and_says_why_it_refuses() -> None:
    good, bad = b"\x01" * 32, b"\x02" * 32
    trusted = frozenset({z85.encode(good)})
    assert zap.answer(_request(b"CURVE", good), trusted) == (
        [b"1.0", b"id-7", b"200", b"OK", z85.encode(good), b""], None)
    reply, refused = zap.answer(_request(b"CURVE", bad), trusted)
    assert reply == [b"1.0", b"id-7", b"400", b"Unknown key", b"", b""]
    assert refused == ("10.0.0.9", "replication link refused a client: Unknown key "
                                   f"(public key {z85.encode(bad).decode()})")
    assert zap.answer(_request(b"NULL"), trusted)[0][2:4] == [b"400", b"Unsupported mechanism"]
    assert zap.answer(_request(b"CURVE", good[:31]), trusted)[0][2] == b"400"      # a short key
    assert zap.answer([b"2.0", b"x"], trusted)[0][:4] == [b"1.0", b"x", b"400", b"Malformed request"]
    assert zap.answer([], trusted)[0][2] == b"400"


def test_a_monitor_event_reads_as_pyzmq_gave_it() -> None:
    context = zmq.Context()
    try:
        server = context.socket(zmq.ROUTER)
        monitor = server.get_monitor_socket(zmq.EVENT_ACCEPTED)
        port = server.bind_to_random_port("tcp://127.0.0.1")
        client = context.socket(zmq.DEALER)
        client.connect(f"tcp://127.0.0.1:{port}")
        assert monitor.poll(10000)
        event = recv_monitor_message(monitor)
        assert event["event"] == zmq.EVENT_ACCEPTED and event["endpoint"] == f"tcp://127.0.0.1:{port}".encode()
        try:
            recv_monitor_message(monitor, zmq.NOBLOCK)
            raise AssertionError("an event without a connection")
        except zmq.Again:
            pass
        server.disable_monitor()
        for sock in (monitor, client, server):
            sock.close(0)
    finally:
        context.term()


def test_the_heap_is_trimmed_once_per_idle_spell_and_never_while_busy() -> None:
    clock = [0.0]
    trims: list[float] = []
    trimmer = IdleTrim(interval=2.0, idle_cpu=0.02, cpu=lambda: clock[0], trim=lambda: trims.append(clock[0]) or True)

    def interval(cpu_used: float) -> bool:
        clock[0] += cpu_used
        return trimmer.look()

    assert interval(1.5) is False          # busy: buffers kept for the next message
    assert interval(0.01) is True          # the first idle interval: trimmed
    assert interval(0.0) is False          # still idle: nothing more to give back
    assert interval(0.02) is False
    assert interval(0.5) is False          # worked again...
    assert interval(0.0) is True           # ...and idle again: trimmed again
    assert trimmer.trims == 2
