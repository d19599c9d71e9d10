"""Online verify: compare both copies of a live mirror, and repair what differs.

Runs inside the primary's mount, on a live mirror (state PRIM), while the application writes
(DRBD's ``verify``, SafeKit's ``rfsverify``). It asks the secondary the resync's own queries
(LISTDIR, STAT, BLOCKSUMS: xxh3-64 per block, :mod:`hamirror.resync.meta` on both sides) and
compares them with the same functions run on the local directory.

Why no false positive under live writes: each pair of reads (this side's listing or block sums,
and the query to the peer) is taken under the replicator's ordering lock, held whole. Every live
change is applied locally and queued for the peer under that lock, and the peer applies the
stream in order, so the query lands on the peer exactly after the changes this side already
applied and before any later one: both sides are read at the same point of the stream. A block
written meanwhile is either in both reads or in neither.

Repair goes through the resync engine's own copy path (:class:`Repairer`, the engine's methods
with the live mirror as target): every block is compared again and sent under the same lock,
ordered with live writes, and the repaired paths are verified once more.
"""

from __future__ import annotations

import collections
import heapq
import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field

from hamirror.journal.journal import Journal
from hamirror.link.client import LinkClient, PeerLost, Ticket
from hamirror.link.protocol import Op, offers_pages
from hamirror.mirror.record import LAST_VERIFY
from hamirror.mirror.replicator import Replicator
from hamirror.mirror.states import MirrorState
from hamirror.resync.engine import FINE_BLOCK, ResyncEngine
from hamirror.resync.meta import Meta, block_sums, decode_json, decode_sums, list_dir, meta_at
from hamirror.resync.pages import PageError, next_cursor

log = logging.getLogger(__name__)

CHUNK = 4 * 1024 * 1024   # bytes read and hashed on each side per lock hold
BLOCK = FINE_BLOCK        # 4 KiB: the granularity of the ranges a verify reports (as DRBD's)
LAST_KEY = LAST_VERIFY.name  # journal state: the last verify's summary survives a remount
MAX_LISTED = 1000         # differences listed in a summary (all are counted, all are repaired)
KINDS = ("missing", "extra", "type", "size", "mode", "owner", "content")


class VerifyFailed(Exception):
    """The verify could not run or stopped (the mirror is not live, or the peer was lost)."""


@dataclass(frozen=True)
class Difference:
    """One way the copies differ. ``missing``/``extra``: the path exists on this (primary) side
    only / on the secondary only; ``content``: bytes [offset, offset+length) differ."""

    path: str
    kind: str
    offset: int = 0
    length: int = 0
    detail: str = ""

    def to_json(self) -> dict:
        return asdict(self)

    @property
    def out_of_sync(self) -> int:
        """Bytes this difference puts out of sync (a mode or owner difference: none)."""
        return self.length if self.kind in ("content", "missing", "extra") else 0


@dataclass
class VerifyProgress:
    done_files: int = 0
    done_bytes: int = 0
    started: float = field(default_factory=time.monotonic)

    def snapshot(self) -> dict:
        return {"done_files": self.done_files, "done_bytes": self.done_bytes,
                "seconds": round(time.monotonic() - self.started, 3)}


def summary(found: list[Difference], repaired: list[Difference] | None, remaining: list[Difference] | None,
            seconds: float) -> dict:
    """What status, events and metrics show of one verify (``repaired``/``remaining``: with --repair).
    The lists stop at ``MAX_LISTED`` (the counts and bytes cover everything): the summary travels
    in every status answer of the mount."""
    left = found if remaining is None else remaining
    result = "clean" if not found else ("repaired" if repaired is not None and not left else "differences")
    return {"result": result, "finished_at": time.time(), "seconds": round(seconds, 3),
            "differences": [d.to_json() for d in found[:MAX_LISTED]], "difference_count": len(found),
            "out_of_sync_bytes": sum(d.out_of_sync for d in found), "repaired": repaired is not None,
            "remaining": [d.to_json() for d in left[:MAX_LISTED]], "remaining_count": len(left),
            "remaining_bytes": sum(d.out_of_sync for d in left)}


def _join(parent: str, name: str) -> str:
    return name if parent == "." else f"{parent}/{name}"


def _compare_entries(path: str, ours: Meta, theirs: Meta) -> list[Difference]:
    """Kind, size, mode and owner of one path present on both sides (mtime and atime excluded:
    a verify is about the data an application reads)."""
    if ours.kind != theirs.kind or ours.target != theirs.target or (ours.kind == "other" and ours.rdev != theirs.rdev):
        return [Difference(path, "type", 0, max(ours.size, theirs.size), f"{ours.kind} here, {theirs.kind} on the peer")]
    found = []
    if ours.size != theirs.size:
        found.append(Difference(path, "size", detail=f"{ours.size} bytes here, {theirs.size} on the peer"))
    if ours.mode != theirs.mode:
        found.append(Difference(path, "mode", detail=f"{ours.mode & 0o7777:o} here, {theirs.mode & 0o7777:o} on the peer"))
    if (ours.uid, ours.gid) != (theirs.uid, theirs.gid):
        found.append(Difference(path, "owner", detail=f"{ours.uid}:{ours.gid} here, {theirs.uid}:{theirs.gid} on the peer"))
    return found


def differing_ranges(offset: int, ours: list[int], theirs: list[int], block: int, end: int) -> list[tuple[int, int]]:
    """Runs of blocks whose sums differ (a block one side lacks differs), as (offset, length)
    clipped to ``end`` (the larger of the two sizes)."""
    ranges: list[tuple[int, int]] = []
    for i in range(max(len(ours), len(theirs))):
        if i < len(ours) and i < len(theirs) and ours[i] == theirs[i]:
            continue
        start = offset + i * block
        length = min(block, end - start)
        if length <= 0:
            continue
        if ranges and ranges[-1][0] + ranges[-1][1] == start:
            ranges[-1] = (ranges[-1][0], ranges[-1][1] + length)
        else:
            ranges.append((start, length))
    return ranges


class Verifier:
    """Walks the tree (or some paths of it) and lists every difference (see the module docstring)."""

    def __init__(self, root_fd: int, replicator: Replicator, block: int = BLOCK) -> None:
        self.root = root_fd
        self.repl = replicator
        self.block = block
        self.progress = VerifyProgress()

    def run(self, roots: tuple[str, ...] = (".",)) -> list[Difference]:
        """Every difference at or below ``roots`` (the whole tree by default), sorted by path."""
        found: list[Difference] = []
        dirs: list[str] = []
        for root in roots:
            ours, theirs = self._stat_pair(root)
            found += self._entry(root, ours, theirs, dirs)
        while dirs:
            path = heapq.heappop(dirs)
            listing = self._listing(path)
            if listing is None:   # removed meanwhile (on both: same point)
                continue
            for name, (ours, theirs) in sorted(listing.items()):
                found += self._entry(_join(path, name), ours, theirs, dirs)
        return sorted(found, key=lambda d: (d.path, KINDS.index(d.kind), d.offset))

    def _entry(self, path: str, ours: Meta | None, theirs: Meta | None, dirs: list[str]) -> list[Difference]:
        if ours is None and theirs is None:
            return []
        if theirs is None:
            return [Difference(path, "missing", 0, ours.size, f"{ours.kind} missing on the peer")]
        if ours is None:
            return [Difference(path, "extra", 0, theirs.size, f"{theirs.kind} on the peer only")]
        found = _compare_entries(path, ours, theirs)
        if found and found[0].kind == "type":
            return found
        if ours.kind == "dir":
            heapq.heappush(dirs, path)
        elif ours.kind == "file":
            found += self.content(path)
        self.progress.done_files += 1
        return found

    def content(self, path: str) -> list[Difference]:
        """Block sums of both copies, one chunk per lock hold, up to the larger size the first
        chunk saw (what an application appends during the verify reaches both copies through the
        mirror, and a file growing faster than it is read must not keep the verify going)."""
        found: list[Difference] = []
        offset = 0
        end = bound = 1
        while offset < end:
            with self._locked():
                ours = self._local_sums(path, offset)
                query = self._client().query(Op.BLOCKSUMS, (offset, CHUNK, self.block), (os.fsencode(path),))
            size, theirs = decode_sums(self._wait(query).payload)
            if ours is None:      # gone here (removed or replaced by a non-file) at this point
                break
            if offset == 0:
                bound = max(ours[0], size)
            end = min(max(ours[0], size), bound)
            for start, length in differing_ranges(offset, ours[1], theirs, self.block, end):
                found.append(Difference(path, "content", start, length))
            self.progress.done_bytes += min(CHUNK, max(end - offset, 0))
            offset += CHUNK
        return _merge(found)

    # helpers (the lock held: both reads at the same point of the stream) -------------------

    def _local_sums(self, path: str, offset: int) -> tuple[int, list[int]] | None:
        """Opened again each time: a rename may have put another inode under the name."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=self.root)
        except OSError:
            return None
        try:
            if not os.path.isfile(f"/proc/self/fd/{fd}"):
                return None
            return block_sums(fd, offset, CHUNK, self.block)
        finally:
            os.close(fd)

    def _stat_pair(self, path: str) -> tuple[Meta | None, Meta | None]:
        with self._locked():
            ours = meta_at(self.root, path)
            query = self._client().query(Op.STAT, strs=(os.fsencode(path),))
        raw = decode_json(self._wait(query).payload)
        return ours, Meta.from_json(raw) if raw else None

    def _listing(self, path: str) -> dict[str, tuple[Meta | None, Meta | None]] | None:
        """Every name of directory ``path`` on either side with its entry on each, both read at
        the same point of the stream: None if it is gone (on either side).

        A listing longer than a message comes in pages (docs/resync.md, "Answers larger than a
        message"), each asked with our listing read again at that point; a page decides the names
        from its first to its last entry. A name between two pages (a live change moved the
        peer's entries across the cursor) is compared by a STAT pair of its own."""
        paged = offers_pages(getattr(self.repl.client, "hello_answer", b""))
        ours, query = self._listing_pair(path, 0 if paged else None)
        page = decode_json(self._wait(query).payload)
        if ours is None or page is None:
            return None
        if not paged:
            return {n: (ours.get(n), _meta(page.get(n))) for n in set(ours) | set(page)}
        pages, compared, seen = [page], {}, set()
        while True:
            entries = page.get("entries") or {}
            seen.update(ours, entries)
            first, last = len(pages) == 1, page.get("next") is None
            if entries or (first and last):
                low = None if first else min(entries)
                high = None if last else max(entries)
                for name in set(ours) | set(entries):
                    if name not in compared and (low is None or name >= low) and (high is None or name <= high):
                        compared[name] = (ours.get(name), _meta(entries.get(name)))
            try:
                cursor = next_cursor(pages, fixed=False)
            except PageError as exc:
                raise VerifyFailed(f"the peer's listing of {path}: {exc}") from None
            if cursor is None:
                break
            ours, query = self._listing_pair(path, cursor)
            page = decode_json(self._wait(query).payload)
            if ours is None or page is None:
                return None
            pages.append(page)
        for name in seen - set(compared):
            compared[name] = self._stat_pair(_join(path, name))
        return compared

    def _listing_pair(self, path: str, cursor: int | None) -> tuple[dict[str, Meta] | None, Ticket]:
        with self._locked():
            try:
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.root)
            except OSError:
                ours = None
            else:
                try:
                    ours = list_dir(fd, top=path == ".")   # never the reserved conflict folder
                finally:
                    os.close(fd)
            ints = () if cursor is None else (cursor,)
            return ours, self._client().query(Op.LISTDIR, ints, (os.fsencode(path),))

    def _locked(self):
        return self.repl.lock

    def _client(self) -> LinkClient:
        """The live mirror's client; VerifyFailed once the mirror left PRIM (lock held)."""
        repl = self.repl
        if repl.state is not MirrorState.PRIM or repl.client is None:
            raise VerifyFailed(f"the mirror left PRIM during the verify (now {repl.state.value}"
                               f"{': ' + repl.alone_reason if repl.alone_reason else ''})")
        return repl.client

    def _wait(self, ticket: Ticket) -> Ticket:
        ticket.wait()
        if ticket.error:
            raise VerifyFailed(f"the peer was lost during the verify: {ticket.error}")
        return ticket


def _meta(raw: list | None) -> Meta | None:
    return Meta.from_json(raw) if raw is not None else None


def _merge(found: list[Difference]) -> list[Difference]:
    """Adjacent content ranges of one file (found in two chunks) as one."""
    merged: list[Difference] = []
    for d in found:
        last = merged[-1] if merged else None
        if last is not None and last.path == d.path and last.offset + last.length == d.offset:
            merged[-1] = Difference(d.path, "content", last.offset, last.length + d.length)
        else:
            merged.append(d)
    return merged


class Repairer(ResyncEngine):
    """The resync engine's copy path with the live mirror (PRIM) as its target: blocks compared
    again and sent under the ordering lock, so a repair is ordered with live writes exactly as a
    resync's copy is. What it sends carries its changes: if the peer is lost meanwhile, the
    journal records them and the next resync covers them."""

    def __init__(self, root_fd: int, replicator: Replicator, journal: Journal) -> None:
        if replicator.client is None:
            raise VerifyFailed("no live mirror to repair")
        super().__init__(root_fd, replicator, replicator.client, journal)
        self.progress.mode = "incremental"   # _copy_file copies the ranges it is given, only those
        self.deep = True                     # a directory created on the peer gets all its children

    def repair(self, found: list[Difference]) -> set[str]:
        """Resync exactly what ``found`` names; the paths to verify again."""
        by_path: dict[str, list[Difference]] = collections.defaultdict(list)
        for d in found:
            by_path[d.path].append(d)
        try:
            for path, diffs in sorted(by_path.items()):
                try:
                    self._repair_path(path, diffs)
                except FileNotFoundError:   # removed here meanwhile: the stream removes it there too
                    continue
            self._reap(0)
        finally:
            with self.repl.lock:
                for path in list(self.repl.pending):   # what a failed run queued (PRIM ignores it)
                    self.repl.pending.discard(path)
        return set(by_path)

    def _repair_path(self, path: str, diffs: list[Difference]) -> None:
        kinds = {d.kind for d in diffs}
        if kinds & {"missing", "extra", "type"}:
            # Remove or create on the peer, then copy whole (children of a directory too).
            with self.repl.lock:
                self.repl.pending.add(path)
            heapq.heappush(self._heap, path)
            while self._heap:
                nxt = heapq.heappop(self._heap)
                if nxt in self.repl.pending:
                    self._sync_path(nxt)
            self._parent_times()
            return
        local = meta_at(self.root, path)
        raw = decode_json(self._ask(Op.STAT, path))
        remote = Meta.from_json(raw) if raw else None
        if local is None:
            return   # removed here since: the live stream removed it on the peer too
        ranges = [(d.offset, d.length) for d in diffs if d.kind == "content"]
        if local.kind == "file" and (ranges or "size" in kinds):
            self._copy_file(path, local, remote, ranges)
        self._attributes(path, remote)

    def _parent_times(self) -> None:
        """Creating or removing entries on the peer changed their parents' times there: send
        ours (children first), as the resync does at its end."""
        with self.repl.lock:
            for d in sorted(self._dirs_touched, reverse=True):
                try:
                    st = os.stat(d, dir_fd=self.root, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                self._live()
                b = os.fsencode(d)
                self.client.submit(Op.UTIMENS, (), (b,), ((b, st.st_atime_ns, st.st_mtime_ns),), changes=((d,),))
        self._dirs_touched.clear()

    def _live(self) -> None:
        """PeerLost once the mirror left PRIM (lock held): nothing more is sent."""
        repl = self.repl
        if repl.state is not MirrorState.PRIM or repl.client is not self.client:
            raise PeerLost(repl.alone_reason or f"the mirror left PRIM (now {repl.state.value})")

    def _submit(self, op: Op, ints: tuple[int, ...], *strs: str, data: bytes | None = None) -> Ticket:
        """As the engine's, on the live mirror, with the changes a lost peer must get later."""
        self._live()
        path = strs[-1] if op is Op.LINK else strs[0]
        changes = ((path, ints[0], len(data)),) if op is Op.WRITE and data else ((path,),)
        return self.client.submit(op, ints, tuple(os.fsencode(s) for s in strs), data=data, changes=changes)

    def _reap(self, keep: int) -> None:
        """Wait for acknowledgements; unlike a resync, no progress is recorded in the journal."""
        while self._unacked:
            ticket = self._unacked[0][0]
            if ticket is not None and not ticket.done and len(self._unacked) <= keep:
                break
            if ticket is not None:
                self._wait(ticket)
            self._unacked.popleft()


def verify_and_repair(root_fd: int, replicator: Replicator, journal: Journal, repair: bool,
                      progress: VerifyProgress | None = None) -> dict:
    """One verify (and repair, then verify of the repaired paths); its summary (see summary())."""
    started = time.monotonic()
    verifier = Verifier(root_fd, replicator)
    if progress is not None:
        verifier.progress = progress
    found = verifier.run()
    if not repair or not found:
        return summary(found, [] if repair else None, None, time.monotonic() - started)
    try:
        paths = Repairer(root_fd, replicator, journal).repair(found)
    except PeerLost as exc:
        raise VerifyFailed(f"the peer was lost during the repair: {exc}") from exc
    remaining = Verifier(root_fd, replicator).run(tuple(sorted(paths)))
    return summary(found, found, remaining, time.monotonic() - started)


class VerifyJob:
    """One mount's verify, run in a thread at a control request; the agent polls :meth:`status`.
    The last summary is kept in the journal, so status shows it after a remount too."""

    def __init__(self, root_fd: int, replicator: Replicator, journal: Journal) -> None:
        self.root = root_fd
        self.repl = replicator
        self.journal = journal
        self.progress: VerifyProgress | None = None
        self.runs = 0                  # id of the newest job started
        self.error: str | None = None  # why the newest job failed, if it did
        self._thread: threading.Thread | None = None
        try:
            self.last: dict | None = json.loads(LAST_VERIFY.get(journal) or "null")
        except ValueError:
            self.last = None
        if isinstance(self.last, dict):   # job ids go on from the last one recorded (a remount)
            ident = self.last.get("id")
            self.runs = ident if isinstance(ident, int) and ident > 0 else 0   # a damaged value: start over

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, repair: bool) -> dict:
        if self.repl.state is not MirrorState.PRIM:
            return {"ok": False, "error": f"verify needs a live mirror (state PRIM), the mount is {self.repl.state.value}"}
        if self.running:
            return {"ok": False, "error": "a verify is already running"}
        self.runs += 1
        self.error = None
        self.progress = VerifyProgress()
        self._thread = threading.Thread(target=self._run, args=(self.runs, repair), name="hamirror-verify", daemon=True)
        self._thread.start()
        return {"ok": True, "id": self.runs}

    def _run(self, job: int, repair: bool) -> None:
        try:
            result = verify_and_repair(self.root, self.repl, self.journal, repair, self.progress)
        except Exception as exc:  # noqa: BLE001 - whatever stops it, the agent waiting must learn it
            self.error = str(exc)
            log.warning("verify %d failed: %s", job, exc, exc_info=not isinstance(exc, (VerifyFailed, OSError)))
            result = {**summary([], None, None, time.monotonic() - self.progress.started), "result": "failed",
                      "error": self.error}
        self.last = {**result, "id": job}
        try:
            LAST_VERIFY.set(self.journal, json.dumps(self.last))
        except Exception as exc:  # noqa: BLE001 - the result is still answered
            log.warning("last verify not recorded in the journal: %s", exc)
        if not self.error:
            log.info("verify %d: %s, %d difference(s), %d byte(s) out of sync", job, result["result"],
                     result["difference_count"], result["out_of_sync_bytes"])

    def status(self) -> dict:
        """``verify`` (progress while one runs, else None), ``last_verify``, the newest job's id and error."""
        progress = self.progress.snapshot() if self.running and self.progress else None
        return {"verify": progress, "last_verify": self.last, "verify_job": self.runs, "verify_running": self.running,
                "verify_error": self.error}
