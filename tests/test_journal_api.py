"""Journal API: changed set, block map, state, generations and resync progress survive reopen."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from hamirror.journal.blocks import BLOCK_SIZE
from hamirror.journal.generations import GenerationHistory, Relation, compare
from hamirror.journal.journal import Journal

MIB = 1024 * 1024


@pytest.fixture
def jpath(tmp_path) -> str:
    return str(tmp_path / "module.journal")


def test_database_is_wal_with_full_sync(jpath):
    with Journal(jpath) as j:
        j.record_paths(["a"])
        mode = j._db.execute("PRAGMA journal_mode").fetchone()[0]
        sync = j._db.execute("PRAGMA synchronous").fetchone()[0]
    assert (mode, sync) == ("wal", 2)


def test_record_paths_persists_and_is_idempotent(jpath):
    with Journal(jpath) as j:
        j.record_paths(["a/b.txt", ".", "a/b.txt"])
        j.record_paths(["a/b.txt"])
        j.record_paths(iter(["c"]))
        assert j.changed_paths() == [".", "a/b.txt", "c"]
    with Journal(jpath) as j:
        assert j.changed_paths() == [".", "a/b.txt", "c"]
        assert j.changed_count() == 3
        assert j.changed_blocks("a/b.txt") == []


def test_non_utf8_names_round_trip(jpath):
    name = b"dir/caf\xe9".decode("utf-8", "surrogateescape")
    with Journal(jpath) as j:
        j.record_range(name, 0, 1)
    with Journal(jpath) as j:
        assert j.changed_paths() == [name]
        assert j.changed_blocks(name) == [(0, BLOCK_SIZE)]


@pytest.mark.parametrize("bad", ["", "/abs", "../up", "..", "a/../b", "a//b", "a/", "./a", "a\0b"])
def test_invalid_paths_are_refused(jpath, bad):
    with Journal(jpath) as j:
        with pytest.raises(ValueError):
            j.record_paths([bad])
        with pytest.raises(ValueError):
            j.record_range(bad, 0, 10)
        assert j.changed_count() == 0


def test_one_mib_inside_ten_gib_file_marks_16_or_17_blocks(jpath):
    with Journal(jpath) as j:
        j.record_range("big", 10 * 1024 * MIB - 3 * MIB, MIB)               # aligned: 16
        j.record_range("big2", 5 * 1024 * MIB + 12345, MIB)                # unaligned: 17
        assert j.changed_blocks("big") == [(10 * 1024 * MIB - 3 * MIB, MIB)]
        [(off, length)] = j.changed_blocks("big2")
        assert length // BLOCK_SIZE == 17 and off <= 5 * 1024 * MIB + 12345
        rows = j._db.execute("SELECT count(*) FROM changed_runs").fetchone()[0]
        assert rows == 2


def test_ranges_merge_and_survive_reopen(jpath):
    with Journal(jpath) as j:
        j.record_range("f", 0, 1)                          # block 0
        j.record_range("f", 3 * BLOCK_SIZE, BLOCK_SIZE)    # block 3
        j.record_range("f", BLOCK_SIZE, 1)                 # block 1: merges with 0
        assert j.changed_blocks("f") == [(0, 2 * BLOCK_SIZE), (3 * BLOCK_SIZE, BLOCK_SIZE)]
        j.record_range("f", 2 * BLOCK_SIZE + 5, 10)        # block 2: joins everything
        assert j.changed_blocks("f") == [(0, 4 * BLOCK_SIZE)]
        assert j._db.execute("SELECT count(*) FROM changed_runs").fetchone()[0] == 1
    with Journal(jpath) as j:
        assert j.changed_blocks("f") == [(0, 4 * BLOCK_SIZE)]


def test_zero_length_range_records_path_only(jpath):
    with Journal(jpath) as j:
        j.record_range("empty", 7 * BLOCK_SIZE, 0)
        assert j.changed_paths() == ["empty"]
        assert j.changed_blocks("empty") == []


def test_whole_mark_wins_over_ranges(jpath):
    with Journal(jpath) as j:
        j.record_range("w", 0, 10)
        j.record_whole("w")
        j.record_range("w", 100 * BLOCK_SIZE, 10)
        assert j.changed_blocks("w") is None
        assert j._db.execute("SELECT count(*) FROM changed_runs").fetchone()[0] == 0
    with Journal(jpath) as j:
        assert j.changed_blocks("w") is None
        assert j.changed_blocks("never-recorded") == []


def test_known_items_skip_sql(jpath):
    """The hot path: recording what is already recorded must not touch the database."""
    with Journal(jpath) as j:
        j.record_paths(["p"])
        j.record_range("r", 0, 10 * BLOCK_SIZE)
        j.record_whole("w")
        statements: list[str] = []
        j._db.set_trace_callback(statements.append)
        j.record_paths(["p", "r", "w"])
        j.record_range("r", 5 * BLOCK_SIZE + 1, 3 * BLOCK_SIZE)
        j.record_range("w", 10**12, 10**6)
        j.record_whole("w")
        assert statements == []
        j.record_range("r", 10 * BLOCK_SIZE, 1)        # one block further: must write
        assert statements


def test_clear_changes_is_durable(jpath):
    with Journal(jpath) as j:
        j.record_paths(["a"])
        j.record_range("b", 0, 1)
        j.clear_changes()
        assert j.changed_paths() == [] and j.changed_count() == 0
        j.record_paths(["a"])                               # recorded again after a clear
    with Journal(jpath) as j:
        assert j.changed_paths() == ["a"]


def test_state_round_trip(jpath):
    with Journal(jpath) as j:
        assert j.get_state("role") is None
        assert j.get_state("role", "none") == "none"
        j.set_state("role", "ALONE")
        j.set_state("role", "PRIM")
        with pytest.raises(TypeError):
            j.set_state("n", 1)  # type: ignore[arg-type]
    with Journal(jpath) as j:
        assert j.get_state("role") == "PRIM"


def test_generations_persist_and_adopt(jpath, tmp_path):
    with Journal(jpath) as a, Journal(str(tmp_path / "b.journal")) as b:
        assert a.generations().current is None
        first = a.new_generation()
        b.adopt_generations(a.generations())
        a.clear_changes()
        assert compare(a.generations(), b.generations()) is Relation.SAME
        second = a.new_generation()
        a.record_paths(["x"])
        assert len(first) == len(second) == 16 and first != second
        assert compare(a.generations(), b.generations()) is Relation.LOCAL_NEWER
        b.record_paths(["stale"])
        b.adopt_generations(a.generations())
        assert b.changed_paths() == []
        assert b.generations().changes_base == second
    with Journal(jpath) as a:
        assert a.generations().ids() == [second, first]
        assert a.generations().changes_base == first
        assert a.changed_paths() == ["x"]


def test_adopt_refuses_empty_history(jpath):
    with Journal(jpath) as j:
        with pytest.raises(ValueError):
            j.adopt_generations(GenerationHistory())


def test_history_is_bounded(jpath):
    with Journal(jpath) as j:
        ids = [j.new_generation() for _ in range(40)]
    with Journal(jpath) as j:
        assert j.generations().ids() == ids[::-1][:32]


def test_resync_progress_resumes_same_id(jpath):
    with Journal(jpath) as j:
        assert j.resync_progress() is None
        with pytest.raises(RuntimeError):
            j.resync_mark_done("a", 1)
        assert j.resync_begin("r1", total_bytes=300, total_files=3) is False
        j.resync_mark_done("a", 100)
        j.resync_mark_done("b", 50)
        j.resync_mark_done("b", 100)                        # redone: counted once
    with Journal(jpath) as j:
        progress = j.resync_progress()
        assert progress["resync_id"] == "r1"
        assert (progress["done_bytes"], progress["done_files"]) == (200, 2)
        assert (progress["total_bytes"], progress["total_files"]) == (300, 3)
        started = progress["started_at"]
        assert j.resync_begin("r1", 300, 3) is True
        assert j.resync_done_paths() == {"a", "b"}
        assert j.resync_progress()["started_at"] == started
        assert j.resync_begin("r2", 10, 1) is False
        assert j.resync_done_paths() == set()
        j.resync_mark_done("c", 10)
        j.resync_end()
    with Journal(jpath) as j:
        assert j.resync_progress() is None and j.resync_done_paths() == set()


def test_concurrent_recorders_lose_nothing(jpath):
    with Journal(jpath) as j:
        def work(n: int) -> None:
            for i in range(40):
                j.record_paths([f"t{n}/p{i % 10}"])
                j.record_range(f"t{n}/f", i * BLOCK_SIZE * 2, 1)
        threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        expected = [(i * 2 * BLOCK_SIZE, BLOCK_SIZE) for i in range(40)]
        assert all(j.changed_blocks(f"t{n}/f") == expected for n in range(6))
    with Journal(jpath) as j:
        assert j.changed_count() == 6 * 11
        assert all(j.changed_blocks(f"t{n}/f") == expected for n in range(6))


def test_unreadable_location_fails_loudly(tmp_path):
    with pytest.raises(sqlite3.OperationalError):
        Journal(str(tmp_path / "missing-dir" / "j.db"))


def test_newer_format_is_refused(jpath):
    Journal(jpath).close()
    db = sqlite3.connect(jpath)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(sqlite3.OperationalError, match="newer"):
        Journal(jpath)


def _format(jpath: str) -> int:
    db = sqlite3.connect(jpath)
    try:
        return db.execute("PRAGMA user_version").fetchone()[0]
    finally:
        db.close()


def test_a_subtree_mark_raises_the_format_until_the_changes_are_cleared(jpath, monkeypatch):
    """A directory renamed while the peer is away: the mark survives a reopen and is never lowered
    by a whole-file or block record; the file says format 2 only while a mark is in it, so the
    previous release (which reads format 1 and would compare the directory's listing only)
    refuses it clearly and reads every other journal."""
    from hamirror.journal import journal as journal_module
    with Journal(jpath) as j:
        j.record_paths(["D", "E/f"])
        assert _format(jpath) == 1
        j.record_subtree("E")
        j.record_whole("E")
        j.record_range("E", 0, 10)
        assert j.subtrees() == ["E"] and j.changed_blocks("E") is None and _format(jpath) == 2
    monkeypatch.setattr(journal_module, "SCHEMA_VERSION", 1)     # the previous release's check
    with pytest.raises(sqlite3.OperationalError, match="journal format 2 is newer than this hamirror's"):
        Journal(jpath)
    monkeypatch.undo()
    with Journal(jpath) as j:
        assert j.subtrees() == ["E"] and j.changed_paths() == ["D", "E", "E/f"]
        j.clear_changes()
        assert j.subtrees() == [] and _format(jpath) == 1
        j.record_subtree("X")
        j.new_generation()
        j.adopt_generations(j.generations())     # the target of a resync, at its end
        assert j.subtrees() == [] and _format(jpath) == 1


def test_concurrent_new_items_share_one_commit(jpath):
    """Group commit: records queued while another commit runs go to disk in one transaction."""
    with Journal(jpath) as j:
        statements: list[str] = []
        j._db.set_trace_callback(statements.append)
        threads = [threading.Thread(target=j.record_range, args=(f"g{n}", n * BLOCK_SIZE, 1))
                   for n in range(8)]
        with j._db_lock:                 # as if a commit were in progress
            for t in threads:
                t.start()
            while len(j._queue) < 8:
                threading.Event().wait(0.001)
        for t in threads:
            t.join()
        assert statements.count("COMMIT") == 1
        assert all(j.changed_blocks(f"g{n}") == [(n * BLOCK_SIZE, BLOCK_SIZE)] for n in range(8))
    with Journal(jpath) as j:
        assert j.changed_count() == 8


def test_failed_commit_records_nothing_and_raises(jpath, monkeypatch):
    with Journal(jpath) as j:
        def broken():
            raise sqlite3.OperationalError("disk I/O error")
        monkeypatch.setattr(j, "_transaction", broken)
        with pytest.raises(sqlite3.OperationalError):
            j.record_paths(["lost"])
        with pytest.raises(sqlite3.OperationalError):
            j.record_range("lost", 0, 1)
        assert j.changed_paths() == []
        monkeypatch.undo()
        j.record_paths(["lost"])
        assert j.changed_paths() == ["lost"]


def test_forget_generations_makes_histories_unknown(tmp_path):
    from hamirror.journal.generations import Relation, compare
    from hamirror.journal.journal import Journal

    with Journal(str(tmp_path / "a.db")) as a, Journal(str(tmp_path / "b.db")) as b:
        a.new_generation()
        b.adopt_generations(a.generations())
        assert compare(a.generations(), b.generations()) is Relation.SAME
        b.forget_generations()
        assert b.generations().current is None
        assert compare(a.generations(), b.generations()) is Relation.UNKNOWN
    with Journal(str(tmp_path / "b.db")) as again:      # durable
        assert again.generations().current is None
