"""The secondary's side of a resync: answers queries and applies REMOVE / RESYNC_DONE.

Paths arrive validated (hamirror.link.protocol) and are resolved beneath the directory exactly as
the applier does, so a query can no more read outside the directory than a write can change it.
Keep-aside moves the losing version into the reserved conflict folder *inside* the directory (same
filesystem, so a rename always works; resolved beneath the directory too, never through a symlink).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import time

from hamirror.journal import hotdirs, unsynced
from hamirror.journal.generations import GenerationHistory
from hamirror.journal.journal import Journal
from hamirror.link.apply import Applier, open_beneath, open_data, resolve_beneath
from hamirror.link.protocol import CONFLICT_DIR, Message, Op, ProtocolError, is_reserved
from hamirror.mirror import record
from hamirror.resync import crash
from hamirror.resync.meta import block_sums, dir_names, encode_json, encode_sums, list_dir, meta_at
from hamirror.resync.pages import changes_page, listing_page
from hamirror.syscalls import renameat2, syncfs

log = logging.getLogger(__name__)

RENAME_NOREPLACE = 1
MAX_ASIDE_TRIES = 100   # name, name.1, ... name.99 in the conflict folder before giving up


class ResyncAnswers:
    """Handlers for the resync operations, bound to one applier and (optionally) a journal."""

    def __init__(self, applier: Applier, journal: Journal | None) -> None:
        self.applier = applier
        self.journal = journal
        self._stamp: str | None = None   # one conflict folder per resync, however long it runs
        self._paged_changes: dict | None = None   # a paged CHANGES answer until its last page is asked
        # A primary that crashed and came back as secondary: its activity log completes its
        # journal (the peer then resyncs incrementally, not by a scan of the whole tree).
        self.complete = journal is not None and crash.recover_for_receiver(
            journal, record.CLEAN.get(journal), applier.root_fd)

    def handle(self, msg: Message) -> bytes | None:
        """Answer a query (a payload) or apply REMOVE / RESYNC_DONE (None)."""
        handler = {
            Op.STAT: self._stat, Op.LISTDIR: self._listdir, Op.BLOCKSUMS: self._blocksums,
            Op.CHANGES: self._changes, Op.REMOVE: self._remove, Op.RESYNC_DONE: self._done,
        }[msg.op]
        return handler(msg)

    def _stat(self, msg: Message) -> bytes:
        path = msg.strs[0]
        try:
            with resolve_beneath(self.applier.root_fd, path) as parent:
                meta = meta_at(parent.fd, os.fsdecode(parent.name))
        except (FileNotFoundError, NotADirectoryError):
            meta = None
        return encode_json(meta.to_json() if meta else None)

    def _listdir(self, msg: Message) -> bytes:
        try:
            with resolve_beneath(self.applier.root_fd, msg.strs[0]) as parent:
                fd = os.open(parent.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                             dir_fd=parent.fd)
        except (FileNotFoundError, NotADirectoryError):
            return encode_json(None)
        try:
            if msg.ints:   # paged (docs/resync.md, "Answers larger than a message")
                return encode_json(self._listing_page(fd, msg.strs[0] == b".", msg.ints[0]))
            listing = list_dir(fd, top=msg.strs[0] == b".")
            return encode_json({name: meta.to_json() for name, meta in listing.items()})
        finally:
            os.close(fd)

    @staticmethod
    def _listing_page(fd: int, top: bool, start: int) -> dict:
        """Every name, sorted (the cursor's order), but the metadata of one page's entries only.
        The directory stays as it is between pages: the primary holds back whatever would change
        it until it has them all (its path is pending)."""
        names = sorted(dir_names(fd, top))

        def meta(name: str) -> list | None:
            found = meta_at(fd, name)
            return found.to_json() if found is not None else None
        return listing_page(names, start, meta)

    def _blocksums(self, msg: Message) -> bytes:
        offset, length, block = msg.ints
        try:
            with resolve_beneath(self.applier.root_fd, msg.strs[0]) as parent:
                fd = open_data(parent.fd, parent.name, os.O_RDONLY)   # never a FIFO or a device
        except OSError:
            return encode_sums(-1, [])
        try:
            return encode_sums(*block_sums(fd, offset, length, block))
        finally:
            os.close(fd)

    def _changes(self, msg: Message) -> bytes:
        if not msg.ints:   # a primary of an earlier release: the whole answer, one message
            return encode_json(self._changes_doc())
        # Paged: computed once (the primary asks for nothing else until it has every page).
        start = msg.ints[0]
        doc = self._paged_changes if start and self._paged_changes is not None else self._changes_doc()
        page = changes_page(doc, start)
        self._paged_changes = doc if page["next"] is not None else None
        return encode_json(page)

    def _changes_doc(self) -> dict:
        journal = self.journal
        if journal is None:
            return {"complete": False, "paths": [], "generations": None}
        paths = journal.changed_paths() + self._beneath(journal.subtrees())
        return {
            "complete": self.complete,
            "paths": [p for p in dict.fromkeys(paths) if not is_reserved(os.fsencode(p))],
            "generations": journal.generations().to_json(),
            # Acknowledged here but lost by an unclean stop: compared whole (None: every block).
            "unsynced": unsynced.pending(journal),
            # Lost in a delegated session: the primary's journal names them (when complete).
            "unsynced_peer": unsynced.peer_recorded(journal),
        }

    def _beneath(self, subtrees: list[str]) -> list[str]:
        """Every path beneath the directories renamed here while this node was primary alone
        (subtree marks, docs/journal.md): named in the answer, so the primary compares each whole
        (or sets it aside), whatever its size and times say. Expanded here rather than sent as
        marks: a primary of the previous release reads the paths and compares as much."""
        found: list[str] = []
        for top in subtrees:
            # What cannot be listed here is not named: the primary's visit of ``top`` sees the same.
            found += hotdirs.expand_tree(self.applier.root_fd, top, strict=False)[1:]
        return found

    def _remove(self, msg: Message) -> None:
        self.applier.forget_descriptors()
        path, keep_aside = msg.strs[0], bool(msg.ints[0])
        with resolve_beneath(self.applier.root_fd, path) as parent:
            if keep_aside:
                self._keep_aside(parent.fd, parent.name, path)
                return
            try:
                os.unlink(parent.name, dir_fd=parent.fd)
            except IsADirectoryError:
                shutil.rmtree(os.fsdecode(parent.name), dir_fd=parent.fd)
            except FileNotFoundError:
                pass

    def _keep_aside(self, dir_fd: int, name: bytes, path: bytes) -> None:
        """Split brain: the losing side's version moves to ``CONFLICT_DIR/STAMP/path`` inside the
        directory. Every component is opened beneath the root with O_NOFOLLOW, as the applier
        does, so a symlink the peer planted in the conflict folder cannot lead the move outside;
        an existing name there gets a numeric suffix rather than being replaced."""
        stamp = self._stamp = self._stamp or time.strftime("%Y%m%d-%H%M%S")
        *dirs, last = [CONFLICT_DIR, stamp.encode(), *path.split(b"/")]
        root = self.applier.root_fd
        root_times = os.stat(root)
        aside = open_beneath(root, dirs, make_mode=0o700)   # root-only: what is set aside may be private
        try:
            if os.stat(root).st_mtime_ns != root_times.st_mtime_ns:   # the folder is hidden: so is making it
                os.utime(root, ns=(root_times.st_atime_ns, root_times.st_mtime_ns))
            for n in range(MAX_ASIDE_TRIES):
                try:
                    renameat2(dir_fd, name, aside, last + (b".%d" % n if n else b""), RENAME_NOREPLACE)
                    return
                except FileExistsError:
                    continue
                except FileNotFoundError:
                    return
            raise OSError(errno.EEXIST, f"keep-aside: {MAX_ASIDE_TRIES} versions of this path set aside already")
        finally:
            os.close(aside)

    def _done(self, msg: Message) -> None:
        if self.journal is None:
            return
        try:
            history = GenerationHistory.from_json(json.loads(bytes(msg.data)))
        except (ValueError, RecursionError) as exc:   # JSONDecodeError is a ValueError
            raise ProtocolError(f"RESYNC_DONE: bad generation history: {exc}") from None
        # The resync's copies were written without fsync: make them durable before this copy
        # calls itself up to date (a node that may take over must survive its own power loss).
        syncfs(self.applier.root_fd)
        self.journal.adopt_generations(history)
        unsynced.resolved(self.journal)
        record.UPTODATE.set(self.journal, True)

    def apply_failed(self) -> None:
        """An operation could not be applied here (disk full, EIO): this copy may differ from the
        primary's, so it is stale (never primary on its own) until a resync completes (issue 15,
        finding 12). Best effort: the journal may sit on the failing disk too."""
        if self.journal is None:
            return
        try:
            record.UPTODATE.set(self.journal, False)
        except Exception as exc:   # noqa: BLE001 - keep serving; the status shows the failure
            log.error("could not mark this copy stale: %s", exc)

    def resync_started(self) -> None:
        # A new resync starts from what is on disk now: a descriptor kept from an earlier session
        # may name a file removed since (an operator freeing a full disk: its blocks stay taken).
        self.applier.forget_descriptors()
        self._stamp = None
        self._paged_changes = None
        if self.journal is not None:
            record.UPTODATE.set(self.journal, False)
