"""The per-module, per-node crash-safe journal (one SQLite file in WAL mode, synchronous=FULL).

Every method that records something commits before it returns, so what a caller was told is
recorded survives kill -9 and power loss. The changed set is mirrored in memory, so recording a
path or block that is already recorded costs a dictionary lookup and no SQL: that is the FUSE
write path's common case while the peer is away.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator

from hamirror.durablefile import fsync_dir
from hamirror.journal.blocks import BLOCK_SIZE, block_span
from hamirror.journal.changes import SUBTREE, Changed, Record, write_batch
from hamirror.journal.generations import HISTORY_LIMIT, GenerationHistory, make_generation
from hamirror.mirror.record import UPTODATE

__all__ = ["BLOCK_SIZE", "Journal"]

SCHEMA_VERSION = 2
"""The newest on-disk format this release reads (``PRAGMA user_version``); a newer file is
refused, not misread."""

PLAIN_FORMAT = 1
"""The format a journal has while its changed set holds no subtree mark: the previous release
reads it. A subtree mark (``whole = 2``) raises the file to format 2 in the same transaction,
and clearing the changed set lowers it again, so an older release refuses a journal whose
mark it would read as "this directory's listing" (comparing less), and nothing else."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS changed_paths (
    path BLOB PRIMARY KEY, whole INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS changed_runs (
    path BLOB NOT NULL, start INTEGER NOT NULL, stop INTEGER NOT NULL,
    PRIMARY KEY (path, start)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS resync_done (
    path BLOB PRIMARY KEY, bytes INTEGER NOT NULL) WITHOUT ROWID;
"""


# The up-to-date flag's name, for what still reads it by name (the receiver); its home, with
# every other key of the small-state table, is hamirror/mirror/record.py.
UPTODATE_KEY = UPTODATE.name


def _check_path(path: str) -> bytes:
    """Validate a path relative to the replicated directory; return its on-disk key.

    Paths are stored as the bytes the filesystem uses (``os.fsencode``), so names that are not
    valid UTF-8 (surrogate-escaped by the FUSE layer) are recorded too.
    """
    if not isinstance(path, str) or not path or path.startswith("/") or "\0" in path:
        raise ValueError(f"not a relative path: {path!r}")
    if posixpath.normpath(path) != path or path == ".." or path.startswith("../"):
        raise ValueError(f"path must be normalized and inside the directory: {path!r}")
    return os.fsencode(path)


class Journal:
    """Changed set, small state, generation history and resync progress of one module.

    Thread-safe: one SQLite connection guarded by ``_db_lock`` (held across a commit), and the
    in-memory caches guarded by ``_mem_lock`` (held only for dictionary work), so a fast-path
    lookup never waits for another thread's fsync.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._db_lock = threading.Lock()
        self._mem_lock = threading.Lock()
        self._queue_lock = threading.Lock()
        self._queue: list[Record] = []
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                   timeout=30)
        try:
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise sqlite3.OperationalError(f"{path}: cannot use WAL mode (got {mode})")
            self._db.execute("PRAGMA synchronous=FULL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise sqlite3.OperationalError(
                    f"{path}: journal format {version} is newer than this hamirror's "
                    f"({SCHEMA_VERSION})")
            self._db.executescript(_SCHEMA + f"PRAGMA user_version = {max(version, PLAIN_FORMAT)};")
            fsync_dir(os.path.dirname(os.path.abspath(path)))
            self._load()
        except BaseException:
            self._db.close()
            raise

    # ----------------------------------------------------------------- plumbing

    def _load(self) -> None:
        """Read the whole journal into the in-memory caches (once, at open)."""
        self._changed: dict[str, Changed] = {}
        for key, whole in self._db.execute("SELECT path, whole FROM changed_paths"):
            self._changed[os.fsdecode(key)] = Changed(bool(whole), subtree=whole == SUBTREE)
        rows = self._db.execute("SELECT path, start, stop FROM changed_runs ORDER BY path, start")
        for key, start, stop in rows:
            entry = self._changed.setdefault(os.fsdecode(key), Changed())
            entry.runs.apply(entry.runs.plan(start, stop))
        self._gens = GenerationHistory.from_json(json.loads(self._meta("generations") or "{}"))
        header = self._meta("resync")
        self._resync: dict | None = json.loads(header) if header else None
        self._resync_done: dict[str, int] = {
            os.fsdecode(k): b for k, b in self._db.execute("SELECT path, bytes FROM resync_done")}
        self._resync_bytes = sum(self._resync_done.values())

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One durable write transaction; the caller must hold ``_db_lock``."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def close(self) -> None:
        """Close the database; recorded items are already durable."""
        with self._db_lock:
            self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- changed set

    def record_paths(self, paths: Iterable[str]) -> None:
        """Record that these paths changed (existence, type or metadata); durable on return."""
        self.record_batch(paths=paths)

    def record_range(self, path: str, offset: int, length: int) -> None:
        """Record that ``length`` bytes at ``offset`` of ``path`` changed; durable on return.

        Marks every ``BLOCK_SIZE`` block the range touches and records the path. Length 0
        records the path only.
        """
        self.record_batch(ranges=((path, offset, length),))

    def record_whole(self, path: str) -> None:
        """Record that ``path``'s whole content must be compared (truncate up, fallocate, rename
        target, unknown); durable on return."""
        self.record_batch(wholes=(path,))

    def record_subtree(self, path: str) -> None:
        """Record that ``path`` and everything beneath it must be compared whole: a directory
        renamed or exchanged to this name (docs/journal.md, "Renames while the peer is away").
        Durable on return; the file is format 2 until the changed set is cleared."""
        self.record_batch(subtrees=(path,))

    def record_batch(self, paths: Iterable[str] = (), ranges: Iterable[tuple[str, int, int]] = (),
                     wholes: Iterable[str] = (), subtrees: Iterable[str] = ()) -> None:
        """:meth:`record_paths`, :meth:`record_range`, :meth:`record_whole` and
        :meth:`record_subtree` at once, in one durable transaction: a lost link records
        everything the peer may miss (thousands of paths) with one fsync, not one per path.
        What is already recorded at least as much costs a lookup and no SQL (the FUSE write
        path's common case while the peer is away)."""
        changed = self._changed
        records: list[Record] = []
        for p in subtrees:
            entry = changed.get(p)
            if entry is None or not entry.subtree:
                records.append(Record(p, _check_path(p), whole=True, subtree=True))
        for p in wholes:
            entry = changed.get(p)
            if entry is None or not entry.whole:
                records.append(Record(p, _check_path(p), whole=True))
        if ranges:
            with self._mem_lock:
                for path, offset, length in ranges:
                    span = block_span(offset, length)
                    entry = changed.get(path)
                    if span is None:
                        if entry is None:
                            records.append(Record(path, _check_path(path)))
                    elif entry is None or not (entry.whole or entry.runs.covers(*span)):
                        records.append(Record(path, _check_path(path), span))
        for p in paths:
            if p not in changed:
                records.append(Record(p, _check_path(p)))
        if records:
            self._submit(records)

    def subtrees(self) -> list[str]:
        """The paths recorded by :meth:`record_subtree`, sorted."""
        with self._mem_lock:
            return sorted(p for p, entry in self._changed.items() if entry.subtree)

    def is_subtree(self, path: str) -> bool:
        """``path`` was recorded by :meth:`record_subtree` (a dictionary lookup, no lock: the
        resync asks it for every ancestor of every entry it lists)."""
        entry = self._changed.get(path)
        return entry is not None and entry.subtree

    def record_wholes(self, paths: Iterable[str], subtrees: Iterable[str] = ()) -> None:
        """:meth:`record_whole` for many paths and :meth:`record_subtree` for ``subtrees``, in one
        durable transaction (folding a crashed primary's activity log into the changed set)."""
        self.record_batch(wholes=paths, subtrees=subtrees)

    def _submit(self, records: list[Record]) -> None:
        """Queue ``records`` and return once they are committed (group commit).

        Whoever gets the database lock commits everything queued so far in one transaction,
        so N threads recording at once pay about one fsync instead of N.
        """
        if not records:
            return
        with self._queue_lock:
            self._queue.extend(records)
        with self._db_lock:
            if not records[0].done:                 # nobody took ours: commit the queue
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                self._commit_batch(batch)
        failed = next((r.error for r in records if r.error is not None), None)
        if failed is not None:
            raise failed

    def _commit_batch(self, batch: list[Record]) -> None:
        """Write a batch in one transaction; publish it to memory only once durable."""
        try:
            with self._transaction() as db:
                staged = write_batch(db, self._changed, batch)
                if any(entry.subtree for entry in staged.values()):
                    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except Exception as exc:                    # every waiter of the batch sees it
            for rec in batch:
                rec.error = exc
        else:
            with self._mem_lock:
                self._changed.update(staged)
        for rec in batch:
            rec.done = True

    def changed_paths(self) -> list[str]:
        """Every recorded path, sorted."""
        with self._mem_lock:
            return sorted(self._changed)

    def changed_blocks(self, path: str) -> list[tuple[int, int]] | None:
        """Merged ``(offset, length)`` byte ranges marked for ``path``, block-aligned.

        ``None`` when the whole file is marked; ``[]`` when no block is marked (only the
        path's existence or metadata changed, or the path is not recorded at all). The last
        range may extend past the end of the file.
        """
        with self._mem_lock:
            entry = self._changed.get(path)
            if entry is None:
                return []
            return None if entry.whole else entry.runs.byte_ranges()

    def changed_count(self) -> int:
        """How many paths are recorded."""
        return len(self._changed)

    def clear_changes(self) -> None:
        """Forget the changed set after a completed resync; durable on return.

        Also notes the current generation as the point the (now empty) changed set starts
        from, which is what makes a later incremental resync provable.
        """
        with self._db_lock:
            gens = GenerationHistory(self._gens.current, self._gens.history,
                                     self._gens.current.id if self._gens.current else None)
            with self._transaction() as db:
                self._clear_changes_sql(db)
                self._put_generations_sql(db, gens)
            self._after_clear(gens)

    def _clear_changes_sql(self, db: sqlite3.Connection) -> None:
        db.execute("DELETE FROM changed_paths")
        db.execute("DELETE FROM changed_runs")
        db.execute(f"PRAGMA user_version = {PLAIN_FORMAT}")   # no subtree mark left

    def _after_clear(self, gens: GenerationHistory) -> None:
        with self._mem_lock:
            self._changed = {}
            self._gens = gens

    # ----------------------------------------------------------------- small state

    def get_state(self, key: str, default: str | None = None) -> str | None:
        """A value stored by :meth:`set_state`, or ``default``."""
        with self._db_lock:
            row = self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_state(self, key: str, value: str) -> None:
        """Store a small string value; durable on return."""
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError("state keys and values are strings")
        with self._db_lock, self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", (key, value))

    # ----------------------------------------------------------------- generations

    def generations(self) -> GenerationHistory:
        """This node's generation history (immutable snapshot)."""
        return self._gens

    def stored_generations(self) -> GenerationHistory:
        """The history as the file holds it now: another process (a receiver ending a resync) may
        have written it since this journal was opened, and :meth:`generations` is the opening's."""
        with self._db_lock:
            text = self._meta("generations")
        return GenerationHistory.from_json(json.loads(text or "{}"))

    def new_generation(self) -> str:
        """Start a new generation (becoming primary without a live peer); durable; its id."""
        with self._db_lock:
            gens = self._gens.with_new(make_generation(), HISTORY_LIMIT)
            with self._transaction() as db:
                self._put_generations_sql(db, gens)
            self._gens = gens
        return gens.current.id

    def adopt_generations(self, peer: GenerationHistory, clear_changes: bool = True) -> None:
        """Take the peer's history once a resync from it completed; durable on return.

        With ``clear_changes`` (the normal end of a resync) the changed set is emptied in the
        same transaction, so no crash can leave the new id with stale or missing changes.
        The target of a resync must adopt before the source clears its own changes.
        """
        if peer.current is None:
            raise ValueError("cannot adopt an empty generation history")
        base = peer.current.id if clear_changes else self._gens.changes_base
        gens = GenerationHistory(peer.current, peer.history[: HISTORY_LIMIT - 1], base)
        with self._db_lock:
            with self._transaction() as db:
                self._put_generations_sql(db, gens)
                if clear_changes:
                    self._clear_changes_sql(db)
            if clear_changes:
                self._after_clear(gens)
            else:
                self._gens = gens

    def forget_generations(self) -> None:
        """Drop the whole history (the operator chose the peer's data after a split brain):
        both sides then compare UNKNOWN and the survivor overwrites this copy by a scan resync."""
        with self._db_lock:
            with self._transaction() as db:
                self._put_generations_sql(db, GenerationHistory())
            self._gens = GenerationHistory()

    def _put_generations_sql(self, db: sqlite3.Connection, gens: GenerationHistory) -> None:
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('generations', ?)",
                   (json.dumps(gens.to_json()),))

    # ----------------------------------------------------------------- resync progress

    def resync_begin(self, resync_id: str, total_bytes: int, total_files: int) -> bool:
        """Start (or resume) resync ``resync_id``; durable. True when resuming the same id.

        Resuming keeps the paths already done and updates the totals; a different id discards
        the previous progress.
        """
        with self._db_lock:
            resumed = self._resync is not None and self._resync["resync_id"] == resync_id
            header = {"resync_id": resync_id, "total_bytes": int(total_bytes),
                      "total_files": int(total_files),
                      "started_at": self._resync["started_at"] if resumed else time.time()}
            with self._transaction() as db:
                if not resumed:
                    db.execute("DELETE FROM resync_done")
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('resync', ?)",
                           (json.dumps(header),))
            with self._mem_lock:
                self._resync = header
                if not resumed:
                    self._resync_done, self._resync_bytes = {}, 0
        return resumed

    def resync_mark_done(self, path: str, bytes_done: int) -> None:
        """Record that ``path`` is fully resynced (``bytes_done`` copied); durable on return."""
        with self._db_lock:
            if self._resync is None:
                raise RuntimeError("resync_mark_done without resync_begin")
            with self._transaction() as db:
                db.execute("INSERT OR REPLACE INTO resync_done (path, bytes) VALUES (?, ?)",
                           (_check_path(path), int(bytes_done)))
            with self._mem_lock:
                self._resync_bytes += int(bytes_done) - self._resync_done.get(path, 0)
                self._resync_done[path] = int(bytes_done)

    def resync_mark_done_many(self, items: list[tuple[str, int]]) -> None:
        """:meth:`resync_mark_done` for many paths in one durable transaction."""
        if not items:
            return
        with self._db_lock:
            if self._resync is None:
                raise RuntimeError("resync_mark_done without resync_begin")
            with self._transaction() as db:
                db.executemany("INSERT OR REPLACE INTO resync_done (path, bytes) VALUES (?, ?)",
                               [(_check_path(p), int(b)) for p, b in items])
            with self._mem_lock:
                for p, b in items:
                    self._resync_bytes += int(b) - self._resync_done.get(p, 0)
                    self._resync_done[p] = int(b)

    def resync_done_paths(self) -> set[str]:
        """Paths marked done in the current resync (to skip them when resuming)."""
        with self._mem_lock:
            return set(self._resync_done)

    def resync_progress(self) -> dict | None:
        """``resync_id``, ``done_bytes``, ``total_bytes``, ``done_files``, ``total_files``,
        ``started_at`` of the resync in progress, or ``None`` when there is none."""
        with self._mem_lock:
            if self._resync is None:
                return None
            return {**self._resync, "done_bytes": self._resync_bytes,
                    "done_files": len(self._resync_done)}

    def resync_end(self) -> None:
        """Forget the resync's progress (completed or abandoned); durable on return."""
        with self._db_lock:
            with self._transaction() as db:
                db.execute("DELETE FROM resync_done")
                db.execute("DELETE FROM meta WHERE key = 'resync'")
            with self._mem_lock:
                self._resync, self._resync_done, self._resync_bytes = None, {}, 0
