"""Crash safety for real: SIGKILL a recording process at random instants, then check the journal.

The child reports an item on its stdout pipe only after the journal call returned; everything it
reported must be in the journal after the kill, and the database must pass integrity_check.
(Power loss is covered by synchronous=FULL on top of this: a returned call has been fsynced.)
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from hamirror.journal.blocks import BLOCK_SIZE
from hamirror.journal.journal import Journal
from tests.conftest import REPO

CHILD = r"""
import os, random, sys
from hamirror.journal.journal import Journal
path, run, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
j = Journal(path)
def say(line):
    os.write(1, (line + "\n").encode())
say("ready")
i = 0
while True:
    kind = rng.randrange(4)
    if kind == 0:
        p = f"d{run}/p{i}"
        j.record_paths([p]); say(f"P {p}")
    elif kind == 1:
        p, off, n = f"f{run % 3}", rng.randrange(1 << 34), rng.randrange(1, 1 << 20)
        j.record_range(p, off, n); say(f"R {p} {off} {n}")
    elif kind == 2:
        j.set_state("counter", f"{run}:{i}"); say(f"S {run}:{i}")
    else:
        j.resync_mark_done(f"done{run}-{i}", i) if j.resync_progress() else j.resync_begin("x", 0, 0)
        say(f"D done{run}-{i}" if j.resync_done_paths() else "B")
    i += 1
"""

RUNS = 30


def _covered(ranges: list[tuple[int, int]] | None, offset: int, length: int) -> bool:
    if ranges is None:
        return True
    first, last = offset // BLOCK_SIZE * BLOCK_SIZE, offset + length
    return any(o <= first and last <= o + n for o, n in ranges)


def _run_and_kill(path: str, run: int, rng: random.Random) -> list[str]:
    """Start a recording child, SIGKILL it after a random delay, return what it reported."""
    env = {**os.environ, "PYTHONPATH": REPO}
    child = subprocess.Popen([sys.executable, "-c", CHILD, path, str(run), str(rng.randrange(1 << 30))],
                             stdout=subprocess.PIPE, env=env, cwd=REPO)
    try:
        assert child.stdout.readline() == b"ready\n"
        time.sleep(rng.uniform(0.0, 0.25))
        child.send_signal(signal.SIGKILL)
        out = child.stdout.read().decode()
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    return out.splitlines()


@pytest.mark.slow
def test_reported_items_survive_sigkill(tmp_path):
    path = str(tmp_path / "crash.journal")
    rng = random.Random(1234)
    reported_paths: set[str] = set()
    reported_ranges: list[tuple[str, int, int]] = []
    items = 0
    for run in range(RUNS):
        lines = _run_and_kill(path, run, rng)
        last_state, done = None, set()
        for line in lines:
            kind, *args = line.split()
            if kind == "P":
                reported_paths.add(args[0])
            elif kind == "R":
                reported_ranges.append((args[0], int(args[1]), int(args[2])))
            elif kind == "S":
                last_state = args[0]
            elif kind == "D":
                done.add(args[0])
        items += len(lines)
        db = sqlite3.connect(path)
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        db.close()
        with Journal(path) as j:
            recorded = set(j.changed_paths())
            assert reported_paths <= recorded
            for name, offset, length in reported_ranges:
                assert name in recorded
                assert _covered(j.changed_blocks(name), offset, length), (name, offset, length)
            if last_state is not None:       # the child may have committed one more after it
                stored_run, stored_i = map(int, j.get_state("counter").split(":"))
                want_run, want_i = map(int, last_state.split(":"))
                assert (stored_run, stored_i) >= (want_run, want_i)
            assert done <= j.resync_done_paths()
    assert items > RUNS * 5, "children were killed before recording anything"
