"""A directory entry of the activity log, expanded into the paths it covers, by listing; a
subtree mark, into every path beneath it (:func:`expand_tree`).

Why: the activity log (hamirror.journal.activity) records a directory D instead of each new name
in it (one durable append for a burst of new files, not one each). It stands for D itself and
every entry directly in D, whatever happened to them; after a crash (hamirror.resync.crash), and
when a link to a delegated peer is lost, those become paths the resync compares whole. The
listing is the node's own, taken then: a name the crash took from this disk but the peer has is
found by the resync, which compares D's listing on both sides (docs/resync.md).

The directory is reached beneath the replicated directory one component at a time with
``O_NOFOLLOW`` (hamirror.link.apply.open_beneath): a symlink never leads the listing outside the
tree, and hamirror's reserved conflict folder is never named.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat

from hamirror.link.apply import open_beneath
from hamirror.link.protocol import CONFLICT_DIR

_LIST_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# D is no directory here any more (removed, replaced by a file or a symlink): D alone is named.
_GONE = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)


def valid_dir(d: str) -> bool:
    """A normalized relative path inside the directory ("." is the directory itself)."""
    return (isinstance(d, str) and bool(d) and "\0" not in d and not d.startswith("/")
            and posixpath.normpath(d) == d and d != ".." and not d.startswith("../"))


def child(d: str, name: str) -> str:
    return name if d == "." else f"{d}/{name}"


def expand(root_fd: int, d: str) -> list[str]:
    """``d`` and every entry directly in it on this node (``d`` alone if it is no directory
    here). Raises ValueError for a path no operation could name (a damaged log), OSError when
    the directory cannot be read (the caller cannot name what it covers)."""
    if not valid_dir(d):
        raise ValueError(f"not a directory path inside the replicated directory: {d!r}")
    parts = [] if d == "." else [os.fsencode(p) for p in d.split("/")]
    try:
        parent = open_beneath(root_fd, parts[:-1])
    except OSError as exc:
        if exc.errno in _GONE:
            return [d]
        raise
    try:
        fd = os.open(parts[-1] if parts else ".", _LIST_FLAGS, dir_fd=parent)
    except OSError as exc:
        if exc.errno in _GONE:
            return [d]
        raise
    finally:
        if parent != root_fd:
            os.close(parent)
    try:
        with os.scandir(fd) as entries:
            names = [e.name for e in entries]
    finally:
        os.close(fd)
    top = d == "."
    return [d] + sorted(child(d, n) for n in names if not (top and os.fsencode(n) == CONFLICT_DIR))


def expand_tree(root_fd: int, d: str, strict: bool = True) -> list[str]:
    """``d`` and every path beneath it on this node (``d`` alone if it is no directory here): a
    subtree mark (a directory renamed to ``d``) named path by path, for a resync that compares
    what it is given by name. Reached and walked as :func:`expand` lists, never through a
    symlink, never into the conflict folder. Raises ValueError for a path no operation could
    name, OSError when a directory in it cannot be read (unless not ``strict``: then what could
    be read is named)."""
    if not valid_dir(d):
        raise ValueError(f"not a directory path inside the replicated directory: {d!r}")
    parts = [] if d == "." else [os.fsencode(p) for p in d.split("/")]
    top = parts[-1] if parts else b"."
    try:
        parent = open_beneath(root_fd, parts[:-1])
    except OSError as exc:
        if exc.errno in _GONE or not strict:
            return [d]
        raise
    found = [d]
    errors: list[OSError] = []
    try:
        try:    # fwalk opens its top before it looks: only a directory is opened (never a device)
            if not stat.S_ISDIR(os.stat(top, dir_fd=parent, follow_symlinks=False).st_mode):
                return found
        except OSError as exc:
            if exc.errno in _GONE or not strict:
                return found
            raise
        for where, dirs, names, _ in os.fwalk(top, dir_fd=parent, follow_symlinks=False, onerror=errors.append):
            if not parts and where == top:
                dirs[:] = [n for n in dirs if n != CONFLICT_DIR]
                names = [n for n in names if n != CONFLICT_DIR]
            base = d if where == top else child(d, os.fsdecode(where[len(top) + 1:]))
            found += [child(base, os.fsdecode(n)) for n in dirs + names]
    finally:
        if parent != root_fd:
            os.close(parent)
    failed = next((exc for exc in errors if exc.errno not in _GONE), None)
    if failed is not None and strict:
        raise failed
    return found


def expand_all(root_fd: int, dirs: list[str]) -> list[str]:
    """:func:`expand` for each of ``dirs``, in one list without repeats."""
    out: dict[str, None] = {}
    for d in dirs:
        out.update(dict.fromkeys(expand(root_fd, d)))
    return list(out)
