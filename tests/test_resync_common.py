"""Helpers shared by the online resync tests (no tests here).

An outage, the way an operator lives it: the receiver dies, the mount goes ALONE and records what
changes, the receiver comes back, ``hamirror mirror resync`` brings it up to date while the mount
keeps serving, and the mount is PRIM again.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator

from tests.mirror_fixtures import HAMIRROR, MirrorPair, diff_snapshots, is_fuse_mounted, tree_snapshot, wait_for


def control(pair: MirrorPair, req: dict) -> dict:
    from hamirror.fs.control import request
    return request(pair.state, req)


def mount_state(pair: MirrorPair) -> str:
    return control(pair, {"cmd": "status"})["status"]["state"]


def go_alone(pair: MirrorPair) -> None:
    """Kill the receiver (kill -9) and wait until the mount noticed (ALONE)."""
    pair.kill_receiver()
    control(pair, {"cmd": "alone", "reason": "test: receiver killed"})
    wait_for(lambda: mount_state(pair) == "ALONE", 15, what="the mount to go ALONE")


def resync(pair: MirrorPair, *extra: str, timeout: float = 90, check: bool = True) -> subprocess.CompletedProcess:
    """``hamirror mirror resync`` against the pair's receiver; waits until PRIM (or failure)."""
    result = subprocess.run(HAMIRROR + ["mirror", "resync", "--dir", pair.primary, "--peer", pair.endpoint,
                                        "--state-dir", pair.state, *extra],
                            capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, (result.stdout, result.stderr, mount_log(pair)[-3000:])
    return result


def mount_log(pair: MirrorPair) -> str:
    try:
        with open(pair.log("mount"), errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def resync_modes(pair: MirrorPair) -> list[str]:
    """Modes of the resyncs the mount ran so far, from its log ("... path(s) to visit (MODE)")."""
    return [line.rsplit("(", 1)[1].rstrip(")") for line in mount_log(pair).splitlines()
            if "path(s) to visit (" in line]


def receiver_status(pair: MirrorPair) -> dict:
    with open(os.path.join(pair.rstate, "status.json")) as f:
        return json.load(f)


def receiver_uptodate_in_journal(pair: MirrorPair) -> bool:
    """What the receiver's journal says (read with sqlite, beside the running receiver)."""
    import sqlite3
    db = sqlite3.connect(f"file:{os.path.join(pair.rstate, 'journal.db')}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT value FROM state WHERE key = 'uptodate'").fetchone()
    finally:
        db.close()
    return row is not None and row[0] == "1"


def restart_receiver(pair: MirrorPair) -> None:
    pair.kill_receiver()
    pair.start_receiver()


def establish(pair: MirrorPair) -> None:
    """One outage + resync so that both journals share a generation (next outages: incremental)."""
    go_alone(pair)
    pair.start_receiver()
    resync(pair)
    assert mount_state(pair) == "PRIM"


def lower_dir(pair: MirrorPair) -> str:
    """The primary's real directory beneath its mount, through the mount process's descriptor.

    Compared there rather than through FUSE: what these tests check is the data on disk, not
    the mount's view of it (which tests/test_mirror_hardlinks.py checks).
    """
    pid = pair.mounter.pid
    real = os.path.realpath(pair.primary)
    for fd in os.listdir(f"/proc/{pid}/fd"):
        path = f"/proc/{pid}/fd/{fd}"
        try:
            if os.readlink(path) == real and os.path.isdir(path):
                return path + "/."
        except OSError:
            continue
    raise AssertionError(f"no descriptor of {real} in the mount process {pid}")


def assert_equal_trees(pair: MirrorPair) -> None:
    problems = diff_snapshots(tree_snapshot(lower_dir(pair)), tree_snapshot(pair.secondary))
    assert problems == [], "\n".join(problems[:30])


def lost_data_is_resynced(pair: MirrorPair) -> None:
    """A secondary that lost acknowledged data in a crash starts again: its receiver knows it is not
    up to date, one incremental resync makes both copies equal, and only then is it up to date."""
    pair.start_receiver()
    assert not receiver_uptodate_in_journal(pair)    # it knows it may have lost data
    resync(pair)
    assert resync_modes(pair)[-1] == "incremental"
    assert_equal_trees(pair)
    assert receiver_uptodate_in_journal(pair)


def kill9(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)


@contextlib.contextmanager
def alone_on_secondary(pair: MirrorPair) -> Iterator[str]:
    """B takes over on its own (a split brain): ``mirror mount --alone`` over B's directory with
    B's journal; yields the directory to change through it, then unmounts B whatever happened."""
    s = pair.secondary
    with open(pair.log("mount-b"), "ab") as out:
        proc = subprocess.Popen(HAMIRROR + ["-v", "mirror", "mount", "--alone", "--foreground",
                                            "--dir", s, "--state-dir", pair.rstate,
                                            "--keys", pair.keys], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: is_fuse_mounted(s) or proc.poll() is not None, 20, what="B's mount")
        assert is_fuse_mounted(s), open(pair.log("mount-b")).read()[-2000:]
        yield s
    finally:
        subprocess.run(["fusermount3", "-u", s], capture_output=True)
        if is_fuse_mounted(s):
            subprocess.run(["fusermount3", "-u", "-z", s], capture_output=True)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            kill9(proc)


def files(root: str) -> dict[str, bytes]:
    """Every regular file's content below ``root``, by relative path."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            full = os.path.join(dirpath, name)
            if os.path.isfile(full) and not os.path.islink(full):
                with open(full, "rb") as f:
                    out[os.path.relpath(full, root)] = f.read()
    return out
