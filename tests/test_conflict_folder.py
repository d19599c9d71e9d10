"""hamirror's conflict folder (split-brain keep-aside) inside the replicated directory, for real.

It lives at the top of the directory under a reserved name, on the directory's own filesystem.
The application never sees it through the mount (not listed, cannot be opened, made, or renamed
to), and a resync neither copies one side's folder to the other nor removes the peer's.
"""

from __future__ import annotations

import os

import pytest

from hamirror.link import protocol
from tests.conftest import needs_root
from tests.test_resync_common import assert_equal_trees, go_alone, mount_state, resync

CONFLICTS = protocol.CONFLICT_DIR.decode()


def _plant(directory: str, stamp: str, name: str) -> str:
    folder = os.path.join(directory, CONFLICTS, stamp)
    os.makedirs(folder, mode=0o700)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(name.encode())
    return folder


@needs_root
@pytest.mark.parametrize("full", [False, True], ids=["scan", "full"])
def test_conflict_folder_is_hidden_by_the_mount_and_never_resynced(mirror_factory, full):
    pair = mirror_factory("m", timeout=3)
    ours = _plant(pair.primary, "20240101-000000", "ours")       # this node lost a split brain once
    theirs = _plant(pair.secondary, "20240202-000000", "theirs")  # and so did the peer
    pair.start()
    p = pair.primary
    assert CONFLICTS not in os.listdir(p)
    with pytest.raises(FileNotFoundError):
        os.stat(f"{p}/{CONFLICTS}")
    with pytest.raises(FileNotFoundError):
        open(f"{p}/{CONFLICTS}/20240101-000000/ours", "rb")
    with open(f"{p}/app", "wb") as f:
        f.write(b"application data")
    for make in (lambda: os.mkdir(f"{p}/{CONFLICTS}"), lambda: open(f"{p}/{CONFLICTS}", "wb"),
                 lambda: os.rename(f"{p}/app", f"{p}/{CONFLICTS}"), lambda: os.mkfifo(f"{p}/{CONFLICTS}"),
                 lambda: os.symlink("app", f"{p}/{CONFLICTS}"), lambda: os.link(f"{p}/app", f"{p}/{CONFLICTS}")):
        with pytest.raises(OSError):
            make()
    assert mount_state(pair) == "PRIM"   # nothing of it reached the peer (it would refuse it)

    go_alone(pair)                        # a scan (or full) resync compares the whole tree
    with open(f"{p}/app", "ab") as f:
        f.write(b" and more")
    pair.start_receiver()
    resync(pair, *(["--full"] if full else []))
    assert mount_state(pair) == "PRIM"
    assert_equal_trees(pair)
    assert os.listdir(os.path.join(pair.secondary, CONFLICTS)) == ["20240202-000000"]
    assert os.listdir(theirs) == ["theirs"]
    pair.umount()
    assert os.listdir(ours) == ["ours"]
