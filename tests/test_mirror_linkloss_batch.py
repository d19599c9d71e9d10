"""A lost link records what the peer may miss in one journal transaction, not one per path.

While the mount records, every mutating call of the application waits for the state change, so
one fsync per path froze the application for seconds with a full activity log (a hot directory
expands to every entry in it; docs/journal.md, "Delegated durability"). Replicator level: a real
journal and activity log, the journal's COMMITs counted at the loss. Mirror level (real FUSE, real
processes): the receiver killed with 1,500 new files not yet durable there, the mount's
fdatasync/fsync counted with strace; every path in the journal; after a simulated power loss of
the secondary the resync makes both copies byte-identical.
"""

from __future__ import annotations

import os
import shutil
import sqlite3

import pytest

from hamirror.journal.activity import ActivityLog
from hamirror.journal.durability import INTERVAL_ENV
from hamirror.journal.journal import Journal
from hamirror.link.client import WHOLE
from hamirror.link.protocol import Op
from tests.mirror_fixtures import syncs_during
from tests.test_peer_durability import _Client

CREATE = (0o100644, 0, 0, 0)


def _commits(journal: Journal) -> list[str]:
    """Every COMMIT the journal's connection runs from now on."""
    seen: list[str] = []
    journal._db.set_trace_callback(lambda sql: seen.append(sql) if sql.strip().upper() == "COMMIT" else None)
    return seen


@pytest.mark.parametrize("fence", [False, True], ids=["alone", "fenced"])
def test_a_lost_link_records_every_path_the_peer_may_miss_in_one_transaction(tmp_path, fence):
    from hamirror.mirror.replicator import Replicator
    root = tmp_path / "root"
    (root / "hot").mkdir(parents=True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    al = ActivityLog(str(tmp_path / "al"), root_fd=fd)
    journal = Journal(str(tmp_path / "journal.db"))
    try:
        client = _Client()
        repl = Replicator(client, journal, sync=False, activity=al, fence=fence)
        names = [f"hot/{i}" for i in range(300)]
        for name in names:                             # new files: the directory entry is hot
            with repl.change(((name,),), new=(name,)) as tx:
                (root / name).write_bytes(name.encode())
                tx.send(Op.CREATE, CREATE, (name.encode(),))
            client.tickets[-1].complete()              # acknowledged, not durable on the peer
        with repl.change((("big", 0, 10), ("big", 1 << 20, 10), ("moved", WHOLE))) as tx:
            tx.send(Op.WRITE, (0,), (b"big",), data=b"x" * 10)   # unacknowledged at the loss
        commits = _commits(journal)
        repl._peer_lost("test: link lost", [client.tickets[-1]])
        client.tickets[-1].complete("test: link lost")
        assert repl.state.value == ("FENCED" if fence else "ALONE")
        # the changes, the state and its reason, and the new generation (ALONE) or what the
        # mount was doing (FENCED): never one per path
        assert len(commits) == 4, f"{len(commits)} transactions at the link loss"
        recorded = set(journal.changed_paths())
        assert set(names) | {"hot", "big", "moved"} <= recorded
        # compared whole: the activity log's paths (its unacknowledged write is there too)
        assert all(journal.changed_blocks(name) is None for name in names + ["big", "moved"])
        if fence:
            repl.grant_alone("test: the peer is down")   # the verdict (and its fence timer ends)
            assert repl.state.value == "ALONE"
    finally:
        journal.close()
        al.close()
        os.close(fd)


def test_a_batch_records_what_is_new_and_costs_no_sql_when_everything_is_recorded(tmp_path):
    with Journal(str(tmp_path / "journal.db")) as journal:
        commits = _commits(journal)
        journal.record_batch(["a", "b"], [("f", 0, 1), ("e", 5, 0)], ["w"], ["d"])
        assert len(commits) == 1
        assert journal.changed_paths() == ["a", "b", "d", "e", "f", "w"]
        assert journal.subtrees() == ["d"]
        assert journal.changed_blocks("f") == [(0, 65536)] and journal.changed_blocks("e") == []
        journal.record_batch(["a", "d"], [("f", 10, 1), ("w", 1 << 30, 1)], ["d", "w"], ["d"])
        assert len(commits) == 1                       # all of it recorded already: no SQL at all
        journal.record_batch(["a"], [("f", 1 << 20, 1)], ["f"])
        assert len(commits) == 2 and journal.changed_blocks("f") is None
    with Journal(str(tmp_path / "journal.db")) as again:   # durable, as recorded
        assert again.changed_paths() == ["a", "b", "d", "e", "f", "w"]
        assert again.subtrees() == ["d"] and again.changed_blocks("f") is None


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_a_killed_receiver_with_many_paths_owed_costs_the_mount_a_few_syncs(mirror_factory, monkeypatch):
    from hamirror.lab import pagecache
    from tests.test_resync_common import assert_equal_trees, establish, go_alone, resync, resync_modes
    monkeypatch.setenv(INTERVAL_ENV, "600")            # the receiver's pages stay unsynced: all owed
    pair = mirror_factory("m", timeout=3).start()
    establish(pair)
    names = [f"hot/{i}" for i in range(1500)]          # under the receiver's 2,048 that force a sync
    os.makedirs(os.path.join(pair.primary, "hot"))
    for name in names:
        with open(os.path.join(pair.primary, name), "wb") as f:
            f.write(name.encode() * 300)
    syncs = syncs_during(pair.mounter.pid, lambda: go_alone(pair))   # kill -9 of the receiver
    assert syncs < 50, f"the mount made {syncs} fsync/fdatasync calls to record the link loss"
    db = sqlite3.connect(f"file:{os.path.join(pair.state, 'journal.db')}?mode=ro", uri=True)
    try:
        wholes = {os.fsdecode(p) for p, in db.execute("SELECT path FROM changed_paths WHERE whole > 0")}
    finally:
        db.close()
    assert set(names) <= wholes                        # every path the peer may miss, compared whole
    if not pagecache.unsupported():                    # the secondary's power loss: unsynced pages gone
        for name in names:
            fd = os.open(os.path.join(pair.secondary, name), os.O_RDWR)
            try:
                for page in pagecache.dirty_pages(fd):
                    os.pwrite(fd, bytes(pagecache.PAGE), page * pagecache.PAGE)
                os.fsync(fd)
            finally:
                os.close(fd)
    pair.start_receiver()
    resync(pair)
    assert resync_modes(pair)[-1] == "incremental"
    assert_equal_trees(pair)
