"""The secondary's side of a resync: answers queries and applies REMOVE / RESYNC_DONE.

Paths arrive validated (hamirror.link.protocol) and are resolved beneath the directory exactly as
the applier does, so a query can no more read outside the directory than a write can change it.
"""

from __future__ import annotations

import os
import shutil
import time

from hamirror.journal.generations import GenerationHistory
from hamirror.journal.journal import UPTODATE_KEY, Journal
from hamirror.link.apply import Applier, resolve_beneath
from hamirror.link.protocol import Message, Op
from hamirror.resync.meta import block_sums, decode_json, encode_json, encode_sums, list_dir, meta_at

CLEAN_KEY = "mount_clean"


class ResyncAnswers:
    """Handlers for the resync operations, bound to one applier and (optionally) a journal."""

    def __init__(self, applier: Applier, journal: Journal | None) -> None:
        self.applier = applier
        self.journal = journal
        self._stamp: str | None = None   # one conflict folder per resync, however long it runs

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
            return encode_json({name: meta.to_json() for name, meta in list_dir(fd).items()})
        finally:
            os.close(fd)

    def _blocksums(self, msg: Message) -> bytes:
        offset, length, block = msg.ints
        try:
            with resolve_beneath(self.applier.root_fd, msg.strs[0]) as parent:
                fd = os.open(parent.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent.fd)
        except (FileNotFoundError, NotADirectoryError, OSError):
            return encode_sums(-1, [])
        try:
            return encode_sums(*block_sums(fd, offset, length, block))
        finally:
            os.close(fd)

    def _changes(self, msg: Message) -> bytes:
        journal = self.journal
        if journal is None:
            return encode_json({"complete": False, "paths": [], "generations": None})
        return encode_json({
            "complete": journal.get_state(CLEAN_KEY, "1") == "1",
            "paths": journal.changed_paths(),
            "generations": journal.generations().to_json(),
        })

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
        """Split brain: the losing side's version goes to a dated folder beside the directory."""
        stamp = self._stamp = self._stamp or time.strftime("%Y%m%d-%H%M%S")
        aside = f"{self.applier.directory.rstrip('/')}.hamirror-conflict-{stamp}"
        target = os.path.join(aside, os.fsdecode(path))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        try:
            os.rename(name, target, src_dir_fd=dir_fd)
        except FileNotFoundError:
            pass

    def _done(self, msg: Message) -> None:
        if self.journal is None:
            return
        history = GenerationHistory.from_json(decode_json(bytes(msg.data)))
        self.journal.adopt_generations(history)
        self.journal.set_state(UPTODATE_KEY, "1")

    def resync_started(self) -> None:
        self._stamp = None
        if self.journal is not None:
            self.journal.set_state(UPTODATE_KEY, "0")
