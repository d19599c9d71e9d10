"""Online resync under stress: kill -9 of either side mid-resync, live writes, split brain."""

import glob
import os
import random
import threading
import time

import pytest

from tests.conftest import needs_root
from tests.mirror_fixtures import is_fuse_mounted, tree_snapshot, wait_for
from tests.test_resync_common import (alone_on_secondary, assert_equal_trees, control, establish, files, go_alone,
                                      kill9, mount_log, mount_state, receiver_status, receiver_uptodate_in_journal,
                                      resync, resync_modes)

pytestmark = needs_root

BULK = 24 * 1024 * 1024


def _outage_with_bulk(pair, rnd: random.Random, name: str = "bulk") -> None:
    """While ALONE: a 24 MiB new file and some small ones, so the resync takes a while."""
    p = pair.primary
    go_alone(pair)
    with open(f"{p}/{name}", "wb") as f:
        for _ in range(BULK // (1 << 20)):
            f.write(rnd.randbytes(1 << 20))
    os.makedirs(f"{p}/small", exist_ok=True)
    for i in range(40):
        with open(f"{p}/small/s{i}", "wb") as f:
            f.write(rnd.randbytes(rnd.randrange(1, 20000)))


def _start_slow_resync(pair, mb_per_s: float) -> None:
    resync(pair, "--bandwidth", str(mb_per_s), "--no-wait")
    wait_for(lambda: mount_state(pair) == "SYNCING", 10, what="the resync to start")


@pytest.mark.parametrize("victim", ["receiver", "mount"])
def test_kill9_in_the_middle_of_a_resync(mirror_factory, victim):
    seed = random.randrange(1 << 30)
    rnd = random.Random(seed)
    pair = mirror_factory("m", timeout=2).start()
    with open(f"{pair.primary}/base", "wb") as f:
        f.write(b"before the outages")
    establish(pair)
    for point in range(2):
        _outage_with_bulk(pair, rnd, f"bulk{point}")
        with open(f"{pair.primary}/base", "ab") as f:
            f.write(f"outage {point}\n".encode())
        pair.start_receiver()
        _start_slow_resync(pair, 8)                       # 24 MiB at 8 MB/s: about 3 s
        delay = rnd.uniform(0.2, 2.0)
        time.sleep(delay)
        where = f"seed {seed}, point {point}, kill after {delay:.2f}s"
        assert mount_state(pair) == "SYNCING", where
        if victim == "receiver":
            pair.kill_receiver()
            wait_for(lambda: mount_state(pair) == "ALONE", 15, what=f"ALONE after the kill ({where})")
            assert not receiver_uptodate_in_journal(pair), f"receiver up to date mid-resync ({where})"
            pair.start_receiver()
        else:
            kill9(pair.mounter)
            pair.umount()                                  # the dead FUSE mount
            assert not is_fuse_mounted(pair.primary)
            pair.mount()
            assert mount_state(pair) == "ALONE", where     # never streams over a half-synced peer
            assert not receiver_uptodate_in_journal(pair), where
        resync(pair)
        assert mount_state(pair) == "PRIM", where
        assert_equal_trees(pair)
        assert receiver_uptodate_in_journal(pair), where
        if point == 0:
            pair.kill_receiver()


def test_writes_during_resync_are_all_there(mirror_factory):
    rnd = random.Random(3)
    pair = mirror_factory("m", timeout=3).start()
    p, s = pair.primary, pair.secondary
    with open(f"{p}/log", "wb") as f:
        f.write(b"")
    with open(f"{p}/rec", "wb") as f:
        f.write(b"-" * 16 * 64)
    establish(pair)
    _outage_with_bulk(pair, rnd)
    pair.start_receiver()

    acked: dict[str, bytes] = {}          # path -> content the writer saw acknowledged
    bulk_writes: dict[int, bytes] = {}    # offset in bulk -> last acknowledged bytes there
    log_lines: list[bytes] = []
    stop = threading.Event()
    errors: list[BaseException] = []
    states: set[str] = set()

    def writer():
        try:
            os.makedirs(f"{p}/new", exist_ok=True)
            os.makedirs(f"{p}/moved", exist_ok=True)
            i = 0
            while not stop.is_set():
                line = f"line {i}\n".encode()
                with open(f"{p}/log", "ab") as f:
                    f.write(line)
                log_lines.append(line)
                with open(f"{p}/rec", "r+b") as f:
                    f.seek((i % 64) * 16)
                    f.write(f"{i:015d}\n".encode())
                data = f"file {i}\n".encode() * (i % 50 + 1)
                with open(f"{p}/new/n{i}", "wb") as f:
                    f.write(data)
                if i % 3 == 0:
                    os.rename(f"{p}/new/n{i}", f"{p}/moved/n{i}")
                    acked[f"moved/n{i}"] = data
                else:
                    acked[f"new/n{i}"] = data
                if i % 7 == 0:                         # a directory made, filled, renamed
                    os.makedirs(f"{p}/dirs/d{i}")
                    with open(f"{p}/dirs/d{i}/inside", "wb") as f:
                        f.write(data)
                    os.rename(f"{p}/dirs/d{i}", f"{p}/dirs/r{i}")
                    acked[f"dirs/r{i}/inside"] = data
                offset = rnd.randrange(0, BULK // 4096) * 4096   # the file being resynced
                chunk = f"bulk write {i:08d} ".encode() * 200
                with open(f"{p}/bulk", "r+b") as f:
                    f.seek(offset)
                    f.write(chunk)
                bulk_writes[offset] = chunk
                states.add(pair.status()["state"])
                i += 1
                time.sleep(0.005)
        except BaseException as exc:   # reported by the main thread
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.3)
        resync(pair, "--bandwidth", "12")
        time.sleep(0.5)                              # and some writes once PRIM again
    finally:
        stop.set()
        thread.join(30)
    assert not errors, errors
    assert mount_state(pair) == "PRIM"
    assert "SYNCING" in states, states               # the writer really ran during the resync
    assert len(log_lines) > 50
    assert_equal_trees(pair)
    with open(f"{s}/log", "rb") as f:
        assert f.read() == b"".join(log_lines)
    for path, data in acked.items():
        with open(f"{s}/{path}", "rb") as f:
            assert f.read() == data, path
    with open(f"{s}/bulk", "rb") as f:
        for offset, chunk in bulk_writes.items():
            f.seek(offset)
            got = f.read(len(chunk))
            # a later write at an overlapping offset may have replaced part of it
            later = [o for o in bulk_writes if o != offset and abs(o - offset) < len(chunk)]
            assert got == chunk or later, offset


@pytest.mark.parametrize("mode", [(), ("--full",)], ids=["incremental", "full"])
def test_split_brain_keep_aside(mirror_factory, mode):
    """In every resync mode (issue 7: after `second` the resync is a full one), what the losing
    side changed on its own is set aside, never just overwritten."""
    pair = mirror_factory("m", timeout=3).start()
    p, s = pair.primary, pair.secondary
    for name in ("shared", "both", "bdel", "untouched"):
        with open(f"{p}/{name}", "wb") as f:
            f.write(f"{name} original\n".encode())
    establish(pair)
    go_alone(pair)                                   # A alone: its own changes
    with open(f"{p}/both", "wb") as f:
        f.write(b"A's version of both\n")
    with open(f"{p}/aonly", "wb") as f:
        f.write(b"A only\n")

    with alone_on_secondary(pair):                   # B alone too: split brain
        with open(f"{s}/shared", "wb") as f:
            f.write(b"B changed shared\n")
        with open(f"{s}/both", "wb") as f:
            f.write(b"B's version of both\n")
        with open(f"{s}/bonly", "wb") as f:
            f.write(b"B only\n")
        os.makedirs(f"{s}/bdir")
        with open(f"{s}/bdir/x", "wb") as f:
            f.write(b"B's dir\n")
        os.unlink(f"{s}/bdel")
    before = files(s)
    pair.start_receiver()
    resync(pair, "--keep-aside", *mode)
    assert mount_state(pair) == "PRIM"
    assert_equal_trees(pair)                          # A's version wins
    with open(f"{s}/both", "rb") as f:
        assert f.read() == b"A's version of both\n"
    with open(f"{s}/shared", "rb") as f:
        assert f.read() == b"shared original\n"
    assert glob.glob(f"{s}.hamirror-conflict*") == []    # inside the directory, not beside it
    conflicts = glob.glob(f"{s}/.hamirror-conflicts/*")
    assert len(conflicts) == 1, conflicts
    aside = files(conflicts[0])
    assert aside == {"shared": b"B changed shared\n", "both": b"B's version of both\n",
                     "bonly": b"B only\n", "bdir/x": b"B's dir\n"}, aside
    after = files(s)
    lost = [path for path, data in before.items() if after.get(path) != data and aside.get(path) != data]
    assert lost == [], f"B's data neither kept nor aside: {lost}"
    assert receiver_uptodate_in_journal(pair)
