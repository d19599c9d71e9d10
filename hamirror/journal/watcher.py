"""Records changes made behind hamirror's back while a module is stopped (inotify).

When the module is stopped the interception layer is not in the path, but the agent still runs:
it watches the replicated directory recursively and adds every path that changes to the
journal's changed set, so the next resync visits it, and marks the copy not up to date, so it
can no longer become primary on its own. What no watcher saw (the agent itself was
down, or the kernel's event queue overflowed) is caught by a scan resync instead: ``overflowed``
says so, and the journal's ``watch_gap`` state key is set for the next start to read.
"""

from __future__ import annotations

import logging
import os
import threading

from inotify_simple import INotify, flags

from hamirror.journal.journal import Journal
from hamirror.link.protocol import CONFLICT_DIR, is_reserved
from hamirror.mirror.record import UPTODATE, WATCH_GAP

log = logging.getLogger(__name__)

_MASK = (flags.CREATE | flags.DELETE | flags.MODIFY | flags.ATTRIB | flags.MOVED_FROM | flags.MOVED_TO
         | flags.CLOSE_WRITE | flags.DELETE_SELF)


class DirectoryWatcher:
    """Watches one directory tree in a thread and records changed paths (relative) in a journal."""

    def __init__(self, directory: str, journal: Journal) -> None:
        self.directory = os.path.abspath(directory)
        self.journal = journal
        self.overflowed = False
        self._inotify = INotify()
        self._wd_path: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hamirror-watch", daemon=True)
        self._add_tree(".")

    def start(self) -> "DirectoryWatcher":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._inotify.close()

    def _add_tree(self, rel: str) -> None:
        top = os.path.join(self.directory, rel) if rel != "." else self.directory
        for dirpath, dirnames, _ in os.walk(top):
            self._add_watch(os.path.relpath(dirpath, self.directory))
            dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))
                           and not (dirpath == self.directory and os.fsencode(d) == CONFLICT_DIR)]

    def _add_watch(self, rel: str) -> None:
        path = self.directory if rel == "." else os.path.join(self.directory, rel)
        try:
            wd = self._inotify.add_watch(path, _MASK)
        except OSError as exc:   # vanished meanwhile, or out of watches: a scan resync covers it
            log.warning("cannot watch %s: %s", path, exc)
            self._gap(f"cannot watch {rel}: {exc}")
            return
        self._wd_path[wd] = rel

    def _gap(self, reason: str) -> None:
        self.overflowed = True
        WATCH_GAP.set(self.journal, reason)

    def _run(self) -> None:
        while not self._stop.is_set():
            events = self._inotify.read(timeout=200)
            changed: list[str] = []
            for event in events:
                if event.mask & flags.Q_OVERFLOW:
                    self._gap("inotify queue overflowed")
                    continue
                base = self._wd_path.get(event.wd)
                if base is None:
                    continue
                if event.mask & flags.IGNORED:
                    self._wd_path.pop(event.wd, None)
                    continue
                rel = event.name if base == "." else (f"{base}/{event.name}" if event.name else base)
                if is_reserved(os.fsencode(rel)):   # hamirror's conflict folder is never resynced
                    continue
                changed.append(rel or ".")
                if event.mask & (flags.CREATE | flags.MOVED_TO) and event.mask & flags.ISDIR:
                    self._add_tree(rel)
                    changed.extend(self._tree_paths(rel))
            if changed:
                # This copy no longer matches the last generation: record what changed (the next
                # resync visits it) and say it is not up to date before anything relies on it.
                self.journal.record_paths(sorted(set(changed)))
                if UPTODATE.get(self.journal, default=True):   # unless known not to be: never set twice
                    UPTODATE.set(self.journal, False)

    def _tree_paths(self, rel: str) -> list[str]:
        """Everything already inside a directory that appeared (created or moved in)."""
        top = os.path.join(self.directory, rel)
        found = []
        for dirpath, dirnames, filenames in os.walk(top):
            for name in dirnames + filenames:
                found.append(os.path.relpath(os.path.join(dirpath, name), self.directory))
        return found
