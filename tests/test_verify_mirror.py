"""Online verify on a real mount + receiver pair: planted differences are found, exactly where they
are, and repaired; a busy writer during a verify is no difference.

A difference is planted the way a disk or a bug would make one: on the secondary's directory,
behind the receiver, with the file's mtime kept (so nothing but the bytes says it changed).
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time

import pytest

from tests.conftest import needs_root
from tests.mirror_fixtures import wait_for
from tests.test_resync_common import assert_equal_trees, control, mount_state

pytestmark = needs_root


def verify(pair, repair: bool = False) -> dict:
    """Run one verify on the mount (control socket) and return its summary once it ended."""
    job = control(pair, {"cmd": "verify", "repair": repair})["id"]

    def ended() -> dict | None:
        status = control(pair, {"cmd": "verify_status"})
        last = status.get("last_verify")
        return last if not status["verify_running"] and last and last.get("id") == job else None

    last = wait_for(ended, 120, interval=0.1, what="the verify to end")
    assert last["result"] != "failed", last
    return last


def plant(path: str, offset: int, data: bytes) -> None:
    """Change bytes of a file on the secondary's disk, keeping its times."""
    st = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def lower(pair, name: str) -> str:
    """The primary's copy as the mount sees it (what the application reads)."""
    return os.path.join(pair.primary, name)


def test_one_byte_changed_on_the_secondary_is_found_exactly_and_repaired(mirror_pair):
    pair = mirror_pair
    data = random.Random(7).randbytes(3 * 1024 * 1024 + 321)
    with open(lower(pair, "data.bin"), "wb") as f:
        f.write(data)
    os.makedirs(lower(pair, "d"))
    with open(lower(pair, "d/small"), "wb") as f:
        f.write(b"small file\n")
    assert verify(pair)["result"] == "clean"

    secondary = os.path.join(pair.secondary, "data.bin")
    plant(secondary, 2 * 1024 * 1024 + 5000, bytes([data[2 * 1024 * 1024 + 5000] ^ 0xFF]))
    found = verify(pair)
    assert found["result"] == "differences"
    assert found["differences"] == [{"path": "data.bin", "kind": "content", "offset": 2 * 1024 * 1024 + 4096,
                                     "length": 4096, "detail": ""}]
    assert found["out_of_sync_bytes"] == 4096
    assert sha256(secondary) != sha256(lower(pair, "data.bin"))

    repaired = verify(pair, repair=True)
    assert repaired["result"] == "repaired" and repaired["remaining"] == [] and repaired["differences"] == \
        found["differences"]
    assert verify(pair)["result"] == "clean"
    assert sha256(secondary) == sha256(lower(pair, "data.bin")) == hashlib.sha256(data).hexdigest()
    assert mount_state(pair) == "PRIM"
    assert_equal_trees(pair)


def test_a_mode_difference_a_missing_file_and_an_extra_file_are_found_and_repaired(mirror_pair):
    pair = mirror_pair
    os.makedirs(lower(pair, "conf/deep"))
    for name in ("conf/app.ini", "conf/deep/key", "app.log"):
        with open(lower(pair, name), "wb") as f:
            f.write(name.encode() * 300)
    os.chmod(lower(pair, "conf/app.ini"), 0o640)
    assert verify(pair)["result"] == "clean"

    sec = pair.secondary
    st = os.stat(os.path.join(sec, "conf"))
    os.chmod(os.path.join(sec, "conf/app.ini"), 0o666)
    os.unlink(os.path.join(sec, "app.log"))
    os.rename(os.path.join(sec, "conf/deep"), os.path.join(sec, "conf/elsewhere"))
    os.utime(os.path.join(sec, "conf"), ns=(st.st_atime_ns, st.st_mtime_ns))

    found = verify(pair)
    assert [(d["path"], d["kind"]) for d in found["differences"]] == [
        ("app.log", "missing"), ("conf/app.ini", "mode"), ("conf/deep", "missing"), ("conf/elsewhere", "extra")]
    assert found["differences"][1]["detail"] == "640 here, 666 on the peer"
    assert found["out_of_sync_bytes"] == len(b"app.log") * 300   # a directory counts as one entry

    repaired = verify(pair, repair=True)
    assert repaired["result"] == "repaired", repaired["remaining"]
    assert verify(pair)["result"] == "clean"
    assert_equal_trees(pair)


@pytest.mark.parametrize("mode", ["sync", "barrier"])
def test_a_busy_writer_during_verify_is_no_difference(mirror_factory, mode):
    """Writes, truncations, renames and new files go on through the mount (four writers) while
    verifies run: none may report a difference (each pair of reads is taken at one point of the
    stream), and the copies are equal at the end. Barrier mode too: there the kernel's writeback
    sends the data later, and the verify sees what the mount has received, as the peer does."""
    pair = mirror_factory(mode, mode=mode).start()
    rng = random.Random(3)
    for i in range(4):
        with open(lower(pair, f"hot{i}"), "wb") as f:
            f.write(rng.randbytes(3 * 1024 * 1024))
    stop = threading.Event()
    errors: list[BaseException] = []
    writes = [0]

    def writer(seed: int) -> None:
        wrng = random.Random(seed)
        try:
            while not stop.is_set():
                name = lower(pair, f"hot{wrng.randrange(4)}")
                with open(name, "r+b") as f:
                    for _ in range(20):
                        f.seek(wrng.randrange(4 * 1024 * 1024))
                        f.write(wrng.randbytes(wrng.choice((1, 4096, 65536))))
                if wrng.random() < 0.05:
                    os.truncate(name, wrng.randrange(2 * 1024 * 1024, 4 * 1024 * 1024))
                if wrng.random() < 0.05:
                    tmp = lower(pair, f"new{seed}.tmp")
                    with open(tmp, "wb") as f:
                        f.write(wrng.randbytes(wrng.randrange(100_000)))
                    os.rename(tmp, lower(pair, f"renamed{wrng.randrange(3)}"))
                writes[0] += 20
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.3)
        results = [verify(pair) for _ in range(8)]
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert not errors, errors
    if mode == "barrier":
        os.sync()   # the kernel's dirty pages reach the mount, and so the peer
    assert writes[0] > 200, "the writers barely ran: the test proves nothing"
    assert [r["differences"] for r in results] == [[]] * 8
    assert mount_state(pair) == "PRIM"
    assert verify(pair)["result"] == "clean"
    assert_equal_trees(pair)


def test_verify_refuses_without_a_live_mirror(mirror_pair):
    pair = mirror_pair
    pair.kill_receiver()
    control(pair, {"cmd": "alone", "reason": "test: receiver killed"})
    wait_for(lambda: mount_state(pair) == "ALONE", 15, what="the mount to go ALONE")
    from hamirror.fs.control import ControlError
    try:
        control(pair, {"cmd": "verify"})
    except ControlError as exc:
        assert str(exc) == "verify needs a live mirror (state PRIM), the mount is ALONE"
    else:
        raise AssertionError("verify ran without a peer")


def test_the_last_verify_survives_a_remount_and_the_next_one_gets_a_new_id(mirror_pair):
    pair = mirror_pair
    with open(lower(pair, "f"), "wb") as f:
        f.write(b"x" * 10_000)
    first = verify(pair)
    pair.umount()
    pair.mount()
    wait_for(lambda: mount_state(pair) == "PRIM", 15, what="the mount to be PRIM again")
    assert control(pair, {"cmd": "verify_status"})["last_verify"] == first
    second = verify(pair)
    assert second["id"] == first["id"] + 1 and second["result"] == "clean"


def test_a_repair_under_a_writer_of_the_same_blocks_leaves_identical_copies(mirror_pair):
    """The repair reads and sends each block under the ordering lock, as the resync does: a block
    the application rewrites meanwhile is never overwritten on the peer by an older copy."""
    pair = mirror_pair
    rng = random.Random(9)
    with open(lower(pair, "db"), "wb") as f:
        f.write(rng.randbytes(1 << 20))
    for block in range(0, 256, 8):   # 32 planted bytes, one per 8 blocks
        plant(os.path.join(pair.secondary, "db"), block * 4096 + 100, b"\0")
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        wrng = random.Random(10)
        try:
            with open(lower(pair, "db"), "r+b") as f:
                while not stop.is_set():
                    f.seek(wrng.randrange(256) * 4096)
                    f.write(wrng.randbytes(4096))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        repaired = [verify(pair, repair=True) for _ in range(2)]
    finally:
        stop.set()
        thread.join(30)
    assert not errors, errors
    assert repaired[0]["difference_count"] > 0, "the writer rewrote every planted block first: nothing was repaired"
    assert [r["remaining"] for r in repaired] == [[], []]
    assert verify(pair)["result"] == "clean"
    assert_equal_trees(pair)
