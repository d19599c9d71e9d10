"""Keeping every name of a hard-linked file coherent in the kernel's caches.

libfuse's high-level API gives the kernel one node per *name* (parent, name), whatever
``use_ino`` says: two names of one file are two kernel inodes, each with its own attribute cache
(``attr_timeout``, 1 s) and its own page cache. A change made through one name was therefore
invisible through the others (old size, mtime, mode, nlink, bytes) until their cache expired.

The daemon sees every name the kernel learns (each lookup stats it, each link and rename passes
through here), so it keeps, for inodes with several links, which names the kernel may hold.
After a change through one of them it asks libfuse (``fuse_invalidate_path``) to make the kernel
forget the others' attributes and pages before the change is answered. Files with one link
(nearly all) pay one dictionary lookup per change and nothing per read.

The invalidation is sent from a thread of its own and waited for at most ``WAIT``: the kernel
takes the other name's page locks, and a write in flight through that name holds them while it
waits for this daemon. Two writers on two names of one file would otherwise wait for each other
forever; with the bound, that rare case is a short stall and the old one-second staleness.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import queue
import threading

log = logging.getLogger(__name__)

WAIT = 0.5   # seconds a change waits for its invalidations (see the module docstring)

@functools.cache
def _libfuse() -> ctypes.CDLL:
    """mfusepy's libfuse, on first use: only the mfusepy engine needs it (highlevel.py)."""
    import mfusepy
    lib = mfusepy._libfuse
    lib.fuse_invalidate_path.argtypes = (ctypes.c_void_p, ctypes.c_char_p)
    lib.fuse_invalidate_path.restype = ctypes.c_int
    return lib


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top + "/")


class LinkNames:
    """For inodes with several links: the FUSE paths ("/a/b") the kernel may cache, and back."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._names: dict[int, set[str]] = {}
        self._ino: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._ino)

    def ino_of(self, path: str) -> int | None:
        return self._ino.get(path)   # one dict read: atomic, the fast path of every change

    def seen(self, path: str, ino: int) -> None:
        """``path`` names ``ino`` (a lookup's stat said nlink > 1, or a link was just made)."""
        with self._lock:
            if self._ino.get(path) != ino:
                self._drop(path)
                self._ino[path] = ino
                self._names.setdefault(ino, set()).add(path)

    def others(self, ino: int, *but: str) -> list[str]:
        with self._lock:
            return [p for p in self._names.get(ino, ()) if p not in but]

    def removed(self, path: str) -> int | None:
        """``path`` is gone (unlink, replaced by a rename); the inode it named, if tracked."""
        with self._lock:
            return self._drop(path)

    def renamed(self, src: str, dst: str, is_dir: bool, exchange: bool) -> int | None:
        """Follow a rename: ``src`` (and, for a directory, all below it) is now ``dst``, and the
        other way round for an exchange. Returns the inode ``dst`` named if it was replaced."""
        with self._lock:
            if not exchange and src != dst and self._ino.get(src, -1) == self._ino.get(dst):
                return None   # two names of one file: rename(2) does nothing, both remain
            replaced = None if exchange else self._drop(dst)
            if is_dir:
                moves = [(p, ino) for p, ino in self._ino.items()
                         if _under(p, src) or (exchange and _under(p, dst))]
            else:
                moves = [(p, self._ino[p]) for p in ((src, dst) if exchange else (src,)) if p in self._ino]
            for p, _ in moves:
                self._drop(p)
            for p, ino in moves:
                new = dst + p[len(src):] if _under(p, src) else src + p[len(dst):]
                self._ino[new] = ino
                self._names.setdefault(ino, set()).add(new)
            return replaced

    def _drop(self, path: str) -> int | None:
        ino = self._ino.pop(path, None)
        if ino is not None:
            names = self._names[ino]
            names.discard(path)
            if not names:
                del self._names[ino]
        return ino


class Invalidator:
    """Sends ``fuse_invalidate_path`` from its own thread; callers wait at most ``WAIT``."""

    def __init__(self, wait: float = WAIT) -> None:
        self.wait = wait
        self.sent = 0
        self._fuse: int | None = None
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()

    def invalidate(self, paths: list[str]) -> None:
        """From a FUSE handler thread: the kernel forgets what it cached for ``paths``."""
        if self._fuse is None:
            # libfuse's ``struct fuse``, known to handler threads only (not to ours).
            self._fuse = _libfuse().fuse_get_context().contents.fuse
        if self._thread is None:
            with self._start:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._loop, name="hamirror-inval", daemon=True)
                    self._thread.start()
        done = threading.Event()
        self._jobs.put(([p.encode("utf-8", "surrogateescape") for p in paths], done))
        if not done.wait(self.wait):
            log.warning("invalidating other names of a hard-linked file took over %.1f s: %s",
                        self.wait, paths[:4])

    def _loop(self) -> None:
        while True:
            paths, done = self._jobs.get()
            for p in paths:
                # -ENOENT: the kernel holds no node for that name: nothing cached, nothing to do.
                _libfuse().fuse_invalidate_path(self._fuse, p)
                self.sent += 1
            done.set()


class LinkCoherence:
    """What the FUSE operations call: names learnt and changes made, by FUSE path."""

    def __init__(self) -> None:
        self.names = LinkNames()
        self.invalidator = Invalidator()

    def seen(self, path: str | None, st_ino: int, st_nlink: int, is_dir: bool) -> None:
        if path is not None and st_nlink > 1 and not is_dir:
            self.names.seen(path, st_ino)

    def changed(self, path: str | None) -> None:
        """A change to the inode named ``path`` (data, size, times, mode, owner, xattrs)."""
        ino = None if path is None else self.names.ino_of(path)
        if ino is not None:
            self._tell(self.names.others(ino, path))

    def linked(self, old: str, new: str, ino: int) -> None:
        """A new name: the others' nlink and ctime changed (``new`` is looked up afresh)."""
        self.names.seen(old, ino)
        self.names.seen(new, ino)
        self._tell(self.names.others(ino, new))

    def removed(self, path: str) -> None:
        """``path`` no longer names its inode: the remaining names' nlink changed."""
        ino = self.names.removed(path)
        if ino is not None:
            self._tell(self.names.others(ino))

    def renamed(self, src: str, dst: str, is_dir: bool, exchange: bool) -> None:
        """Names move; a replaced file's remaining names changed nlink, a moved one's ctime."""
        replaced = self.names.renamed(src, dst, is_dir, exchange)
        stale = self.names.others(replaced) if replaced is not None else []
        if not is_dir:
            for name in (dst, src) if exchange else (dst,):
                ino = self.names.ino_of(name)
                if ino is not None:
                    stale += self.names.others(ino, name)
        self._tell(stale)

    def _tell(self, paths: list[str]) -> None:
        if paths:
            self.invalidator.invalidate(paths)


class OneInodePerFile:
    """LinkCoherence's place when the engine gives every name of a file one kernel inode (the
    native loop): there is no other name's cache to invalidate, so nothing to track."""

    names: tuple = ()

    def seen(self, path: str | None, st_ino: int, st_nlink: int, is_dir: bool) -> None:
        pass

    def changed(self, path: str | None) -> None:
        pass

    def linked(self, old: str, new: str, ino: int) -> None:
        pass

    def removed(self, path: str) -> None:
        pass

    def renamed(self, src: str, dst: str, is_dir: bool, exchange: bool) -> None:
        pass
