"""Online resync from this (primary) node to a returning peer, inside the mount process.

Why here: the resync's copies travel in the *same ordered stream* as the application's live
writes, each read from the local file under the replicator's ordering lock. So a block copied by
the resync can never overwrite a newer live write on the peer: whichever came later locally
comes later in the stream. Paths the resync has not reached yet are "pending"; live operations
touching them are recorded and held back (the resync will copy their result), everything else
streams as usual (see :class:`hamirror.mirror.replicator.Replicator`).

Modes: **incremental** (both journals cover every change since the common generation: only the
union of both changed sets is visited, only changed blocks are compared), **scan** (history
unusable or the peer crashed as primary: every path is compared by metadata, differing files by
block checksums), **full** (operator asked: every block of every file compared).
"""

from __future__ import annotations

import collections
import heapq
import logging
import os
import time
from dataclasses import dataclass, field

import xxhash

from hamirror.journal.blocks import BLOCK_SIZE
from hamirror.journal.generations import GenerationHistory, incremental_possible
from hamirror.journal.journal import Journal
from hamirror.link.client import LinkClient, PeerLost, Ticket
from hamirror.link.protocol import MAX_BLOCKSUMS, Op, offers_pages
from hamirror.mirror import record
from hamirror.mirror.replicator import Replicator
from hamirror.mirror.states import MirrorState
from hamirror.resync.meta import (FULL_BLOCK, Meta, decode_json, decode_sums, encode_json, list_dir,
                                  meta_at)
from hamirror.resync.pages import PageError, merge_changes, merge_listing, next_cursor

log = logging.getLogger(__name__)

CHUNK = 4 * 1024 * 1024   # local bytes hashed per lock hold when comparing
WINDOW_PATHS = 256        # paths whose operations may await acknowledgement at once
_UNKNOWN = object()       # no hint: ask the peer
FINE_BLOCK = 4096         # compare granularity inside the journal's 64 KiB blocks (incremental)
MAX_WRITE = 1024 * 1024   # differing blocks next to each other travel as one WRITE up to this


class ResyncFailed(Exception):
    """The resync stopped; the mount is ALONE again and a later resync resumes."""


@dataclass
class Progress:
    mode: str = ""
    total_bytes: int = 0
    done_bytes: int = 0
    total_files: int = 0
    done_files: int = 0
    bytes_sent: int = 0
    started: float = field(default_factory=time.monotonic)

    def snapshot(self) -> dict:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = self.done_bytes / elapsed
        left = max(self.total_bytes - self.done_bytes, 0)
        return {"mode": self.mode, "done_bytes": self.done_bytes, "total_bytes": self.total_bytes,
                "done_files": self.done_files, "total_files": self.total_files,
                "bytes_sent": self.bytes_sent, "rate": rate, "eta": left / rate if rate > 0 else None}


class ResyncEngine:
    """Runs one resync to completion or raises ResyncFailed (see the module docstring)."""

    def __init__(self, root_fd: int, replicator: Replicator, client: LinkClient, journal: Journal,
                 *, full: bool = False, bandwidth: float | None = None, keep_aside: bool = False) -> None:
        self.root = root_fd
        self.repl = replicator
        self.client = client
        self.journal = journal
        self.full = full
        self.bandwidth = bandwidth
        self.keep_aside = keep_aside   # split brain: the peer's own changes go to a dated folder
        self.progress = Progress()
        self.deep = full          # visit every child of a directory (scan and full modes)
        self._heap: list[str] = []
        self._linked: dict[int, str] = {}   # local inode -> first path synced (hard links)
        self._own_blocks: dict[str, list[tuple[int, int]] | None] = {}
        self._dirs_touched: set[str] = set()
        self._hints: dict[str, Meta | None] = {}   # the peer's entry as its parent's listing showed
        self._unacked: collections.deque = collections.deque()   # (last ticket, path, bytes done)
        self._peer_paths: set[str] = set()    # changed on the peer: compare whole files
        self._peer_dirs: set[str] = set()     # ancestors of those (a tree only the peer has goes aside whole)
        self._named: set[str] = set()         # scan: paths either journal names, compared whatever their metadata
        self._unsynced: set[str] = set()      # the peer lost them in a crash: compare whole, always
        self._set_aside: set[str] = set()     # done by the interrupted run this one resumes
        # The peer answers long lists in pages (docs/resync.md, "Answers larger than a message").
        self._paged = offers_pages(getattr(client, "hello_answer", b""))

    # driver ----------------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._run()
        except PeerLost as exc:
            raise ResyncFailed(str(exc)) from exc
        except PageError as exc:   # never compare less than the peer's whole answer
            raise ResyncFailed(f"the peer's answer in pages: {exc}") from exc

    def _run(self) -> None:
        if self._paged:
            with self.repl.lock:
                first = self.client.query(Op.CHANGES, (0,))
            peer = merge_changes(self._pages(Op.CHANGES, (), first))
        else:
            peer = decode_json(self._ask(Op.CHANGES))
        candidates = self._plan(peer)
        self._add_unsynced(peer, candidates)
        resync_id = self._resync_id(peer)
        resumed = self.journal.resync_begin(resync_id, self.progress.total_bytes, len(candidates))
        # Resuming visits every path again, as a new run would (docs/resync.md, "An interrupted
        # resync"): a done mark only says the entry was right on the peer when it was marked,
        # not that its subtree is (a scan reaches children through their directory's listing)
        # nor that it still is (written since, while ALONE). What it does prove: whatever the
        # peer had there of its own was set aside already; our copy is not set aside again.
        self._set_aside = self.journal.resync_done_paths() if resumed else set()
        self.repl.begin_sync(self.client, candidates)
        for path in candidates:
            heapq.heappush(self._heap, path)
        log.info("resync %s%s: %d path(s) to visit (%s)", resync_id,
                 f" resumed ({len(self._set_aside)} path(s) done before, visited again)" if resumed else "",
                 len(candidates), self.progress.mode)
        while True:
            path = self._next_pending()
            if path is None:
                if self._finish():
                    return
                continue
            self._sync_path(path)

    def _plan(self, peer: dict) -> set[str]:
        own = self.journal.generations()
        peer_gen = GenerationHistory.from_json(peer["generations"]) if peer.get("generations") else None
        if self.keep_aside:   # every mode: what the peer changed on its own is set aside first
            self._peer_paths = set(peer.get("paths", ()))
            self._peer_dirs = {p.rsplit("/", i)[0] for p in self._peer_paths for i in range(1, p.count("/") + 1)}
        if self.full:
            self.progress.mode = "full"
            self.deep = True
            return {"."}
        # A path either journal names may differ whatever its size and mtime say: an interrupted
        # resync leaves files partly copied whose last change carried the primary's times.
        self._named = set(self.journal.changed_paths()) | set(peer.get("paths", ()))
        own_complete = not record.NEEDS_SCAN.get(self.journal)   # our own last mount crashed while streaming
        if (own_complete and peer.get("complete") and peer_gen is not None
                and incremental_possible(own, peer_gen)):
            self.progress.mode = "incremental"
            self._peer_paths = set(peer.get("paths", ()))
            paths = set(self.journal.changed_paths()) | self._peer_paths
            for p in paths:
                blocks = self.journal.changed_blocks(p)
                self._own_blocks[p] = blocks
                self.progress.total_bytes += sum(n for _, n in blocks) if blocks else self._size(p)
            self.progress.total_files = len(paths)
            return paths
        self.progress.mode = "scan"
        self.deep = True
        return {"."}

    def _add_unsynced(self, peer: dict, candidates: set[str]) -> None:
        """The peer acknowledged these paths but lost them in a crash (its unsynced log, see
        docs/journal.md "Durability"): visit them in every mode and compare them whole (a hole
        keeps size and mtime, so a scan cannot see it); None from the peer: every block.
        ``unsynced_peer``: what it lost in a delegated session is in our journal when incremental."""
        lost = peer.get("unsynced", [])
        if peer.get("unsynced_peer") is True and not self._holds_peer_losses(peer):
            lost = None
        if lost is None:
            self.full = self.deep = True
            self.progress.mode = "full"
            candidates.clear()
            candidates.add(".")
            return
        self._unsynced = set(lost) - candidates
        for path in self._unsynced:
            self.progress.total_bytes += self._size(path)
        self.progress.total_files += len(self._unsynced)
        self._unsynced |= set(lost)
        candidates.update(self._unsynced)

    def _holds_peer_losses(self, peer: dict) -> bool:
        """The peer lost writes of a delegated session: does our journal name them? We recorded
        them when the link dropped (or they are in our activity log, folded after a crash), so
        yes, unless that log could not be folded, or our journal is not the one that streamed to
        the peer (its current generation is not in our history: a recreated journal). An
        incremental resync visits our changed set; a scan compares every path it names."""
        if self.progress.mode == "incremental":
            return True
        if record.LOG_LOST.get(self.journal):
            return False
        current = ((peer.get("generations") or {}).get("current") or {}).get("id")
        return current is None or current in self.journal.generations().ids()

    def _resync_id(self, peer: dict) -> str:
        own = self.journal.generations()
        peer_current = ((peer.get("generations") or {}).get("current") or {}).get("id", "none")
        return f"{own.current.id if own.current else 'none'}>{peer_current}:{self.progress.mode}"

    def _next_pending(self) -> str | None:
        with self.repl.lock:
            while self._heap:
                path = heapq.heappop(self._heap)
                if path in self.repl.pending:
                    return path
            for path in self.repl.pending:   # held live operations added paths
                heapq.heappush(self._heap, path)
            return heapq.heappop(self._heap) if self._heap else None

    def _finish(self) -> bool:
        """Fix directory times, then RESYNC_DONE; False if a held operation queued more work."""
        self._reap(0)
        history = self.journal.generations().to_json()
        with self.repl.lock:
            if len(self.repl.pending):
                return False
            for d in sorted(self._dirs_touched, reverse=True):   # children first, then parents
                try:
                    st = os.stat(d, dir_fd=self.root, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                b = os.fsencode(d)
                self.client.submit(Op.UTIMENS, (), (b,), ((b, st.st_atime_ns, st.st_mtime_ns),))
            self.repl.resync_done_sent()   # from here a lost reply means a new generation
            ticket = self.client.submit(Op.RESYNC_DONE, data=encode_json(history))
        self._wait(ticket)
        if not self.repl.finish_sync():
            raise ResyncFailed("the peer was lost at the end of the resync")
        self.journal.resync_end()
        record.NEEDS_SCAN.set(self.journal, False)
        record.LOG_LOST.set(self.journal, False)
        log.info("resync finished: %s", self.progress.snapshot())
        return True

    # one path --------------------------------------------------------------------------------
    #
    # Hold 1 (lock): read ours, ask the peer; ``path`` stays pending, so live operations on it
    # are held back and recorded meanwhile. Hold 2 (lock): put the peer's entry in shape
    # (remove/create), queue differing children, *then* release the path: from there on live
    # operations on it stream, ordered after what the resync sent.

    def _sync_path(self, path: str) -> None:
        # A path queued from its parent's listing has been pending ever since, so nothing was
        # streamed to it: the listing's view of the peer still holds and saves a round trip.
        hint = self._hints.pop(path, _UNKNOWN)
        with self.repl.lock:
            local = meta_at(self.root, path)
            stat_q = self.client.query(Op.STAT, strs=(os.fsencode(path),)) if hint is _UNKNOWN else None
            listing_q = ours = None
            if local is not None and local.kind == "dir":
                ours = self._local_listing(path)
                listing_q = self.client.query(Op.LISTDIR, (0,) if self._paged else (), (os.fsencode(path),))
        if stat_q is not None:
            raw = decode_json(self._wait(stat_q).payload)
            remote = Meta.from_json(raw) if raw else None
        else:
            remote = hint
        theirs = None
        if listing_q is not None:
            theirs = {n: Meta.from_json(m) for n, m in self._listing(path, listing_q).items()}
        if ours is not None:   # the peer's children stay only if its directory does (same kind)
            self._record_children(path, ours, {} if self._replaced(path, local, remote) else theirs or {})
        with self.repl.lock:
            local = meta_at(self.root, path)
            remote = self._shape(path, local, remote)
            if local is not None and local.kind == "dir" and ours is not None:
                self._queue_children(path, ours, theirs or {} if remote is not None else {})
            self.repl.pending.discard(path)
            blocks = self.journal.changed_blocks(path) if self.progress.mode == "incremental" else None
        if local is not None and local.kind == "file" and not self._linked_elsewhere(path, local):
            self._copy_file(path, local, remote, blocks)
        if local is not None:
            self._attributes(path, remote)
        # An interrupted earlier run may have created or removed this path on the peer after the
        # parent's times were last set there: the parent's times are sent again at the end.
        self._touched(path)
        self.progress.done_files += 1
        # Acknowledgements are cumulative: the newest ticket covers everything sent for this path.
        self._unacked.append((self.client.last_ticket, path, self.progress.done_bytes))
        self._reap(WINDOW_PATHS)

    def _reap(self, keep: int) -> None:
        """Mark paths done once the peer acknowledged their last operation (in batches, durably);
        wait only when more than ``keep`` paths are unacknowledged."""
        done: list[tuple[str, int]] = []
        while self._unacked:
            ticket, path, nbytes = self._unacked[0]
            if ticket is not None and not ticket.done and len(self._unacked) <= keep:
                break
            if ticket is not None:
                self._wait(ticket)
            self._unacked.popleft()
            done.append((path, nbytes))
        if done:
            self.journal.resync_mark_done_many(done)

    def _shape(self, path: str, local: Meta | None, remote: Meta | None) -> Meta | None:
        """Remove what is wrong on the peer and create what is missing (lock held)."""
        if path == ".":
            # The directory itself (a start script's chmod names it in both journals): it is
            # compared, entry by entry and by its attributes, and never removed or set aside.
            return remote
        relink = local is not None and local.kind == "file" and self._linked_elsewhere(path, local)
        aside = self._aside(path)
        if self._replaced(path, local, remote):
            self._submit(Op.REMOVE, (1 if aside else 0,), path)
            self._touched(path)
            remote = None
        if local is None or remote is not None:
            return remote
        self._touched(path)
        if relink:
            self._submit(Op.LINK, (), self._linked[local.ino], path)
        elif local.kind == "dir":
            self._submit(Op.MKDIR, (local.mode, local.uid, local.gid), path)
        elif local.kind == "link":
            self._submit(Op.SYMLINK, (local.uid, local.gid), path, local.target)
        else:
            self._submit(Op.CREATE, (local.mode, local.uid, local.gid, local.rdev), path)
        return None

    def _replaced(self, path: str, local: Meta | None, remote: Meta | None) -> bool:
        """The peer's entry goes (removed or set aside) before ours is made: missing here, of
        another kind, a hard link to make again, or the peer's own change. A directory both sides
        have never goes whole: like the directory itself, it is compared entry by entry and what
        the peer changed in it is set aside path by path (setting a database's directory aside
        for one changed file would copy the whole database again, and keep a second one)."""
        if path == "." or remote is None:
            return False
        if local is None or not _same_kind(local, remote):
            return True
        if local.kind == "dir":
            return False
        return (local.kind == "file" and self._linked_elsewhere(path, local)) or self._aside(path)

    def _aside(self, path: str) -> bool:
        """Split brain: the peer changed this path (or something below it) on its own: keep it aside
        (once: after a resumed run's done mark, what the peer holds there is our copy)."""
        return (self.keep_aside and (path in self._peer_paths or path in self._peer_dirs)
                and path not in self._set_aside)

    def _linked_elsewhere(self, path: str, local: Meta) -> bool:
        """A hard link whose inode an earlier path already carried to the peer."""
        return local.nlink > 1 and self._linked.setdefault(local.ino, path) != path

    def _local_listing(self, path: str) -> dict[str, Meta]:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.root)
        try:
            return list_dir(fd, top=path == ".")   # never the reserved conflict folder
        finally:
            os.close(fd)

    def _queue_children(self, path: str, ours: dict[str, Meta], theirs: dict[str, Meta]) -> None:
        for name in sorted(set(theirs) - set(ours)):
            child = _join(path, name)
            self._submit(Op.REMOVE, (1 if self._aside(child) else 0,), child)
            self._touched(path)
        for name, meta in ours.items():
            child = _join(path, name)
            other = theirs.get(name)
            if (other is None or self._must_visit(child, meta, other)) and child not in self.repl.pending:
                self.repl.pending.add(child)
                self._hints[child] = other
                heapq.heappush(self._heap, child)
                self.progress.total_files += 1
                self.progress.total_bytes += meta.size

    def _record_children(self, path: str, ours: dict[str, Meta], theirs: dict[str, Meta]) -> None:
        """Durably add to this node's changed set the children of ``path`` the resync is about to
        remove, create or copy on the peer (found by listing, so in no journal yet), before
        anything is sent for them: if the resync is interrupted, the next one visits them again
        and compares them whole, even if a partial copy left them looking alike (finding 3).
        Every child when the peer's entry is replaced (another kind: ``theirs`` empty).
        Done outside the ordering lock: a superset of what hold 2 then queues."""
        children = [_join(path, n) for n in sorted(set(theirs) - set(ours))]
        children += [_join(path, n) for n, m in ours.items()
                     if n not in theirs or self._must_visit(_join(path, n), m, theirs[n])]
        self.journal.record_wholes(children)

    def _must_visit(self, path: str, ours: Meta, theirs: Meta) -> bool:
        if not _same_kind(ours, theirs) or self._beneath_subtree(path):
            return True
        if not self.deep:
            return False
        if self.full or ours.kind == "dir" or path in self._named:
            return True
        return not (ours.same_content_hint(theirs) and ours.same_attributes(theirs)
                    and ours.nlink == theirs.nlink)

    def _beneath_subtree(self, path: str) -> bool:
        """``path`` lies beneath a directory renamed (or exchanged) here while the peer was away, or
        by a call held during this resync (a subtree mark in our journal, read live): a name beneath
        it may hold another file than the peer's under the same name, size and times, so it is
        visited and compared whole, in every mode. (The peer's own marks arrive expanded into the
        paths beneath them: hamirror/resync/answers.py.)"""
        parent = os.path.dirname(path)
        while parent:
            if self.journal.is_subtree(parent):
                return True
            parent = os.path.dirname(parent)
        return False

    def _copy_file(self, path: str, local: Meta, remote: Meta | None,
                   blocks: list[tuple[int, int]] | None) -> None:
        if remote is None:
            self._copy_ranges(path, [(0, local.size)], compare=False)
        elif self.progress.mode == "incremental" and blocks and path not in self._peer_paths and path not in self._unsynced:
            self._copy_ranges(path, blocks, compare=True, block=FINE_BLOCK)
        elif path in self._unsynced:   # a crash loses pages: compare pages, resend only those
            self._copy_ranges(path, [(0, max(local.size, remote.size))], compare=True, block=FINE_BLOCK)
        else:
            self._copy_ranges(path, [(0, max(local.size, remote.size))], compare=True)
        with self.repl.lock:
            size = os.stat(path, dir_fd=self.root, follow_symlinks=False).st_size
            self._submit(Op.TRUNCATE, (size,), path)

    # data -----------------------------------------------------------------------------------

    def _copy_ranges(self, path: str, ranges: list[tuple[int, int]], compare: bool,
                     block: int | None = None) -> None:
        # Comparing at 64 KiB keeps what a scan resends close to what changed (differing pieces are
        # merged into large writes anyway); a plain copy reads in 1 MiB blocks.
        block = block or (BLOCK_SIZE if compare else FULL_BLOCK)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.root)
        try:
            for offset, length in ranges:
                start = offset - offset % block
                end = offset + length
                for chunk_start in range(start, end, CHUNK):
                    self._copy_chunk(fd, path, chunk_start, min(CHUNK, end - chunk_start), block, compare)
        finally:
            os.close(fd)

    def _copy_chunk(self, fd: int, path: str, offset: int, length: int, block: int, compare: bool) -> None:
        differing = list(range(offset, offset + length, block))
        if compare:
            with self.repl.lock:   # local hashes and the peer's at the same point of the stream
                local = memoryview(os.pread(fd, len(differing) * block, offset))
                ours = [xxhash.xxh3_64_intdigest(local[o - offset:o - offset + block]) for o in differing]
                count = min(length, block * MAX_BLOCKSUMS)
                query = self.client.query(Op.BLOCKSUMS, (offset, count, block), (os.fsencode(path),))
            _, theirs = decode_sums(self._wait(query).payload)
            differing = [o for i, o in enumerate(differing) if i >= len(theirs) or theirs[i] != ours[i]]
        self.progress.done_bytes += length - len(differing) * block if compare else 0
        for run_offset, run_length in _runs(differing, block, max(block, MAX_WRITE)):
            with self.repl.lock:
                data = os.pread(fd, run_length, run_offset)
                if data:
                    self._submit(Op.WRITE, (run_offset,), path, data=data)
            self.progress.bytes_sent += len(data)
            self.progress.done_bytes += len(data)
            self._throttle()

    def _throttle(self) -> None:
        if self.bandwidth:
            ahead = self.progress.bytes_sent / self.bandwidth - (time.monotonic() - self.progress.started)
            if ahead > 0:
                time.sleep(ahead)

    # metadata -------------------------------------------------------------------------------

    def _attributes(self, path: str, remote: Meta | None) -> Ticket | None:
        """Owner, mode, xattrs and times as they are locally *now* (under the lock)."""
        with self.repl.lock:
            local = meta_at(self.root, path)
            if local is None:
                return None
            b = os.fsencode(path)
            if local.kind != "link":
                self._submit(Op.CHOWN, (local.uid, local.gid), path)
                self._submit(Op.CHMOD, (local.mode & 0o7777,), path)
                for attr in sorted(set(remote.xattrs if remote else ()) - set(local.xattrs)):
                    self._submit(Op.REMOVEXATTR, (), path, attr)
                for attr, value in sorted(local.xattrs.items()):
                    if not remote or remote.xattrs.get(attr) != value:
                        self._submit(Op.SETXATTR, (0,), path, attr, data=bytes.fromhex(value))
            else:
                self._submit(Op.CHOWN, (local.uid, local.gid), path)
            st = os.stat(path, dir_fd=self.root, follow_symlinks=False)
            return self.client.submit(Op.UTIMENS, (), (b,), ((b, st.st_atime_ns, st.st_mtime_ns),))

    # helpers ----------------------------------------------------------------------------------

    def _submit(self, op: Op, ints: tuple[int, ...], *strs: str, data: bytes | None = None) -> Ticket:
        """Send one operation (the caller holds the ordering lock)."""
        if self.repl.state is not MirrorState.SYNCING:   # the link was lost: stop, do not stream on
            raise PeerLost(self.repl.alone_reason or "the mirror left SYNCING")
        return self.client.submit(op, ints, tuple(os.fsencode(s) for s in strs), data=data)

    def _send(self, op: Op, ints: tuple[int, ...], *strs: str) -> Ticket:
        with self.repl.lock:
            return self._submit(op, ints, *strs)

    def _ask(self, op: Op, *strs: str) -> bytes:
        with self.repl.lock:
            ticket = self.client.query(op, strs=tuple(os.fsencode(s) for s in strs))
        return self._wait(ticket).payload

    def _listing(self, path: str, first: Ticket) -> dict[str, list]:
        """The peer's listing of ``path`` (empty if it has none), every page of it: ``path`` is
        pending, so nothing sent meanwhile changes the directory on the peer."""
        if not self._paged:
            return decode_json(self._wait(first).payload) or {}
        return merge_listing(self._pages(Op.LISTDIR, (os.fsencode(path),), first))

    def _pages(self, op: Op, strs: tuple[bytes, ...], first: Ticket) -> list[dict]:
        """Every page of a paged answer, the first one asked already (hamirror/resync/pages.py)."""
        pages = [decode_json(self._wait(first).payload)]   # None: LISTDIR of a path the peer lacks
        while pages[-1] is not None and (cursor := next_cursor(pages)) is not None:
            with self.repl.lock:
                ticket = self.client.query(op, (cursor,), strs)
            pages.append(decode_json(self._wait(ticket).payload))
            if pages[-1] is None:
                raise PageError("an answer that ended before its last page")
        return [page for page in pages if page is not None]

    def _wait(self, ticket: Ticket) -> Ticket:
        ticket.wait()
        if ticket.error:
            raise PeerLost(ticket.error)
        return ticket

    def _touched(self, path: str) -> None:
        """Creating or removing ``path`` on the peer changed its parent's mtime there."""
        self._dirs_touched.add(os.path.dirname(path) or ".")

    def _size(self, path: str) -> int:
        try:
            return os.stat(path, dir_fd=self.root, follow_symlinks=False).st_size
        except OSError:
            return 0


def _same_kind(a: Meta, b: Meta) -> bool:
    return a.kind == b.kind and a.target == b.target and (a.kind != "other" or a.rdev == b.rdev)


def _runs(offsets: list[int], block: int, limit: int):
    """Ascending block offsets -> (offset, length) runs of adjacent blocks, each <= limit."""
    start = end = None
    for o in offsets:
        if start is not None and o == end and end - start + block <= limit:
            end += block
            continue
        if start is not None:
            yield start, end - start
        start, end = o, o + block
    if start is not None:
        yield start, end - start


def _join(parent: str, name: str) -> str:
    return name if parent == "." else f"{parent}/{name}"
