"""Changes made while a module is stopped are recorded by the inotify watcher."""

import os
import time

from hamirror.journal.journal import Journal
from hamirror.journal.watcher import DirectoryWatcher
from tests.mirror_fixtures import wait_for


def test_watcher_records_every_change_made_behind_our_back(tmp_path):
    data = tmp_path / "data"
    (data / "old").mkdir(parents=True)
    (data / "old" / "f").write_bytes(b"1")
    (data / "keep").write_bytes(b"k")
    (data / "still").write_bytes(b"s")
    journal = Journal(str(tmp_path / "journal.db"))
    watcher = DirectoryWatcher(str(data), journal).start()
    try:
        (data / "new.txt").write_bytes(b"x")
        (data / "old" / "f").write_bytes(b"2")
        os.chmod(data / "keep", 0o600)
        os.rename(data / "old", data / "moved")
        (data / "moved" / "g").write_bytes(b"3")       # inside a directory watched after the move
        os.makedirs(data / "deep" / "er")
        time.sleep(0.1)
        (data / "deep" / "er" / "leaf").write_bytes(b"4")
        expected = {"new.txt", "keep", "old", "moved", "moved/g", "deep", "deep/er", "deep/er/leaf"}
        wait_for(lambda: expected <= set(journal.changed_paths()), 5, what="recorded paths")
    finally:
        watcher.stop()
    assert not watcher.overflowed
    assert "still" not in journal.changed_paths()   # only what changed, not the whole tree
    assert journal.get_state("uptodate") == "0"     # and this copy can no longer lead on its own
    journal.close()


def test_watcher_ignores_the_conflict_folder(tmp_path):
    """The operator sorting split-brain leftovers while the module is stopped changes nothing
    that a resync must visit (the folder is never resynced; a path in it would be refused)."""
    data = tmp_path / "data"
    aside = data / ".hamirror-conflicts" / "20240101-000000"
    aside.mkdir(parents=True)
    (aside / "old").write_bytes(b"1")
    journal = Journal(str(tmp_path / "journal.db"))
    watcher = DirectoryWatcher(str(data), journal).start()
    try:
        os.unlink(aside / "old")
        os.makedirs(data / ".hamirror-conflicts" / "20250101-000000" / "d")
        (data / "marker").write_bytes(b"x")                # a real change, to know events arrived
        wait_for(lambda: "marker" in journal.changed_paths(), 5, what="the marker")
        time.sleep(0.3)
    finally:
        watcher.stop()
    assert journal.changed_paths() == ["marker"]
    journal.close()
