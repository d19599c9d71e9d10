"""A resync whose peer's answers are larger than one message can carry (docs/resync.md, "Answers
larger than a message").

Real trees, real processes, the link engines of a new cluster (``stream``) and of the previous
release (``curve``): the receiver's list of what it changed on its own (CHANGES) and its listing
of a directory (LISTDIR) are made larger than ``MAX_FRAME`` by long paths, not by a shrunk limit.
Each resync must end with both trees equal, nothing of the losing side lost, without an operator.
"""

from __future__ import annotations

import glob
import os

import pytest

from hamirror.link.protocol import MAX_FRAME
from tests.conftest import needs_root
from tests.mirror_fixtures import diff_snapshots, tree_snapshot
from tests.test_resync_common import (alone_on_secondary, assert_equal_trees, establish, files, go_alone, lower_dir,
                                      mount_log, mount_state, receiver_uptodate_in_journal, resync,
                                      resync_modes)

pytestmark = needs_root

ENGINES = ["stream", "curve"]
DEEP = "/".join(c * 250 for c in "abcdefghijklmno")   # 3,764 bytes: a path near PATH_MAX below it
TARGET = "t" * 4000                                   # a symlink's target: one listing entry of ~4.3 KB


@pytest.fixture(params=ENGINES)
def engine(request, monkeypatch):
    """Both processes of the pair (receiver, mount) run this link engine."""
    monkeypatch.setenv("HAMIRROR_LINK_ENGINE", request.param)
    return request.param


def _deep_files(root: str, count: int) -> dict[str, bytes]:
    """``count`` small files whose paths are ~3.9 KB long each: their list is larger than a frame."""
    os.makedirs(f"{root}/{DEEP}")
    made = {}
    for i in range(count):
        rel = f"{DEEP}/{i:05d}" + "f" * 120
        with open(f"{root}/{rel}", "wb") as f:
            f.write(b"B's file %d\n" % i)
        made[rel] = b"B's file %d\n" % i
    return made


@pytest.mark.parametrize("mode", [(), ("--full",)], ids=["incremental", "full"])
def test_split_brain_changes_larger_than_a_message(mirror_factory, engine, mode):
    """B, alone, created 4,600 files with ~3.9 KB paths: its list of changed paths (~18 MB) does
    not fit one message. The resync still sets every one of them aside and ends up to date."""
    pair = mirror_factory("m", timeout=3).start()
    p, s = pair.primary, pair.secondary
    with open(f"{p}/shared", "wb") as f:
        f.write(b"shared original\n")
    establish(pair)
    go_alone(pair)
    with open(f"{p}/aonly", "wb") as f:
        f.write(b"A only\n")
    with alone_on_secondary(pair):                    # split brain: B changes very many paths
        with open(f"{s}/shared", "wb") as f:
            f.write(b"B changed shared\n")
        made = _deep_files(s, 4600)
    assert sum(len(path) + 3 for path in made) > MAX_FRAME   # the answer cannot be one message
    pair.start_receiver()
    result = resync(pair, "--keep-aside", *mode, timeout=300, check=False)
    assert result.returncode == 0, (result.stdout, result.stderr, mount_log(pair)[-3000:])
    assert mount_state(pair) == "PRIM"
    assert_equal_trees(pair)                          # A's version wins
    conflicts = glob.glob(f"{s}/.hamirror-conflicts/*")
    assert len(conflicts) == 1, conflicts
    aside = files(conflicts[0])
    assert aside == {"shared": b"B changed shared\n", **made}, sorted(set(aside) ^ {"shared", *made})[:5]
    assert receiver_uptodate_in_journal(pair)


def test_listing_larger_than_a_message(mirror_factory, engine):
    """The peer's directory holds 4,000 entries the primary lacks, each ~4.3 KB in its listing
    (~17 MB): a full resync lists it all the same, removes every one and ends up to date."""
    pair = mirror_factory("m", timeout=3).start()
    p, s = pair.primary, pair.secondary
    os.makedirs(f"{p}/big")
    with open(f"{p}/big/kept", "wb") as f:
        f.write(b"A's file\n")
    establish(pair)
    go_alone(pair)
    for i in range(4000):                             # stale entries on B's disk (B is down)
        os.symlink(TARGET, f"{s}/big/{i:05d}" + "n" * 240)
    os.truncate(f"{s}/big/kept", 0)                   # and one A has and B lost
    pair.start_receiver()
    result = resync(pair, "--full", timeout=300, check=False)
    assert result.returncode == 0, (result.stdout, result.stderr, mount_log(pair)[-3000:])
    assert resync_modes(pair)[-1] == "full"
    assert mount_state(pair) == "PRIM"
    assert sorted(os.listdir(f"{s}/big")) == ["kept"]
    problems = diff_snapshots(tree_snapshot(lower_dir(pair)), tree_snapshot(s))
    # ext4 never shrinks a directory that held 4,000 entries: its size alone may differ
    assert [line for line in problems if not line.startswith("big: size: ")] == [], problems[:30]
    assert receiver_uptodate_in_journal(pair)


def test_verify_of_a_listing_larger_than_a_message(mirror_factory, engine):
    """The online verify reads a directory of 4,000 entries (~17 MB of listing) from the peer: clean
    when equal, and exactly the planted differences on either side of a page's end."""
    from tests.test_verify_mirror import verify
    pair = mirror_factory("m", timeout=3).start()
    p, s = pair.primary, pair.secondary
    os.makedirs(f"{p}/big")
    names = [f"{i:05d}" + "n" * 240 for i in range(4000)]
    for name in names:
        os.symlink(TARGET, f"{p}/big/{name}")
    assert verify(pair)["result"] == "clean"
    st = os.stat(f"{s}/big")
    os.unlink(f"{s}/big/{names[5]}")
    os.unlink(f"{s}/big/{names[-5]}")
    os.symlink(TARGET, f"{s}/big/{names[2000]}x")
    os.utime(f"{s}/big", ns=(st.st_atime_ns, st.st_mtime_ns))
    found = verify(pair)
    assert [(d["path"], d["kind"]) for d in found["differences"]] == [
        (f"big/{names[5]}", "missing"), (f"big/{names[2000]}x", "extra"), (f"big/{names[-5]}", "missing")]
    assert verify(pair, repair=True)["result"] == "repaired"
    assert verify(pair)["result"] == "clean"


def test_verify_of_a_large_listing_under_a_writer_is_clean(mirror_factory, monkeypatch):
    """Names created and removed in the directory while its pages are read move the peer's entries
    across the cursor: each page is compared at its own point of the stream, a name between two
    pages by a STAT pair, so nothing is reported that the copies do not hold."""
    import threading

    from tests.test_verify_mirror import verify
    monkeypatch.setenv("HAMIRROR_LINK_ENGINE", "stream")
    pair = mirror_factory("m", timeout=3).start()
    p = pair.primary
    os.makedirs(f"{p}/big")
    for i in range(4000):
        os.symlink(TARGET, f"{p}/big/{i:05d}" + "n" * 240)
    stop, rounds = threading.Event(), [0]

    def writer() -> None:
        while not stop.is_set():
            for j in range(20):
                os.symlink(TARGET, f"{p}/big/00000-live-{j}")
            for j in range(20):
                os.unlink(f"{p}/big/00000-live-{j}")
            rounds[0] += 1

    def verifies_meanwhile() -> list[str]:
        """Until the writer made its changes during at least 3 verifies (a busy machine is slow)."""
        results: list[str] = []
        while len(results) < 3 or (rounds[0] < 3 and len(results) < 10):
            results.append(verify(pair)["result"])
        assert rounds[0] >= 1, "the writer made no change during the verifies: the test proves nothing"
        return results

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        results = verifies_meanwhile()
    finally:
        stop.set()
        thread.join(30)
    assert results == ["clean"] * len(results)
