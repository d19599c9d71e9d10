"""The file format of the activity log and the receiver's unsynced log: frames of entries.

Why its own module: two logs share it (hamirror.journal.activity, the primary's hot set;
hamirror.journal.unsynced, the secondary's record of what is not durable yet), and replaying a
file after a crash (:func:`read_log`) needs nothing of either log's bookkeeping.

Format: a magic line, then frames ``<u32 length><u32 crc32(payload)><payload>``; a payload is
entries ``<u8 op><u16 n><n bytes path>`` (op 1 enter, 2 leave; 3 and 4, with no path, set and
clear the receiver's mark "acknowledged data its primary records may not be durable here",
hamirror.journal.unsynced: an older release reads them as damage and compares every block; 5 and
6 enter and leave a directory entry: an older release reads them as damage too, and compares
every path, which is safe; 7 and 8 enter and leave a *subtree*: a directory renamed to this name,
to be compared whole with everything beneath it (docs/journal.md, "Renames while the peer is
away"), which a release before them reads as damage as well, see :data:`ENTER_TREE`). Each frame
is one durable append. Only the *last* frame can be torn by a crash (every earlier one was fsynced before the
next was written, and no change is applied before its frame is durable), so a bad last frame is
ignored; a bad frame followed by good data means the file is damaged and nothing is trusted.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from typing import Iterable

from hamirror.durablefile import discard, write_all
from hamirror.durablefile import fsync_dir as _fsync_dir

MAGIC = b"hamirror activity log 1\n"
ENTER, LEAVE = 1, 2
MARK, UNMARK = 3, 4
ENTER_DIR, LEAVE_DIR = 5, 6
ENTER_TREE, LEAVE_TREE = 7, 8
"""A subtree's entries. A release that does not know them reads the file as damaged, trusts none
of it and scans, which compares a renamed directory's listing only (as that release's own fold
would): after a crash with one in the log, roll back only after the resync, or resync ``--full``."""
_OPS = frozenset((ENTER, LEAVE, MARK, UNMARK, ENTER_DIR, LEAVE_DIR, ENTER_TREE, LEAVE_TREE))
_PATH_OPS = {ENTER: LEAVE, ENTER_DIR: LEAVE_DIR, ENTER_TREE: LEAVE_TREE}   # entering -> leaving
_MARK_KEY = "\0mark"   # never a path (a path has no NUL byte)
_TREE = "\0"           # the end of a subtree's key (see tree_key)
_FRAME = struct.Struct("<II")
_ENTRY = struct.Struct("<BH")
MAX_FRAME = 64 * 1024 * 1024


def encode_frame(entries: Iterable[tuple[int, str]]) -> bytes:
    """One frame holding ``(op, path)`` entries."""
    parts = []
    for op, path in entries:
        raw = os.fsencode(path)
        if len(raw) > 0xFFFF:
            raise ValueError(f"path too long for the activity log: {path[:80]!r}...")
        parts.append(_ENTRY.pack(op, len(raw)) + raw)
    payload = b"".join(parts)
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def dir_key(d: str) -> str:
    """The hot set's key of directory ``d``'s entry: a path never ends with "/"."""
    return d + "/"


def tree_key(d: str) -> str:
    """The hot set's key of a subtree mark on ``d`` (``d`` and everything beneath it): a path has
    no NUL byte, so the key is neither a path nor a directory entry's :func:`dir_key`. A key
    beneath a renamed directory still starts with its path, so :func:`carried` moves it too."""
    return d + _TREE


def is_tree_key(key: str) -> bool:
    return key.endswith(_TREE)


def entry_of(key: str, entering: bool) -> tuple[int, str]:
    """The log entry of a hot-set key (a path, a directory entry's :func:`dir_key`, a subtree's
    :func:`tree_key`)."""
    if key.endswith("/"):
        op, key = ENTER_DIR, key[:-1]
    elif key.endswith(_TREE):
        op, key = ENTER_TREE, key[:-1]
    else:
        op = ENTER
    return (op if entering else _PATH_OPS[op]), key


@dataclass(frozen=True)
class Replay:
    """What a log file says: the hot set (``None`` when it cannot be trusted) and why."""

    paths: frozenset[str] | None
    torn: bool = False          # the last frame was incomplete (a crash while appending): ignored
    problem: str = ""           # why ``paths`` is None
    marked: bool = False        # the receiver's MARK is set (see the module docstring)
    dirs: frozenset[str] = frozenset()   # directory entries: each directory and what is directly in it
    trees: frozenset[str] = frozenset()  # subtrees: each directory and everything beneath it, whole


def _replayed(hot: dict[str, None], torn: bool = False) -> Replay:
    marked = _MARK_KEY in hot
    return Replay(frozenset(p for p in hot if p != _MARK_KEY and not p.endswith(("/", _TREE))), torn=torn,
                  marked=marked, dirs=frozenset(p[:-1] for p in hot if p.endswith("/")),
                  trees=frozenset(p[:-1] for p in hot if p.endswith(_TREE)))


def replay(data: bytes) -> Replay:
    """Rebuild the hot set from a log file's bytes (pure)."""
    if not data.startswith(MAGIC):
        return Replay(None, problem="not an activity log (bad or missing header)")
    hot: dict[str, None] = {}
    pos = len(MAGIC)
    end = len(data)
    while pos < end:
        rest = end - pos
        if rest < _FRAME.size:
            return _replayed(hot, torn=True)
        length, crc = _FRAME.unpack_from(data, pos)
        body = pos + _FRAME.size
        if length == 0 or length > MAX_FRAME:
            if not data[pos:].strip(b"\0"):          # a zero-filled tail: the append never landed
                return _replayed(hot, torn=True)
            return Replay(None, problem=f"bad frame length {length} at byte {pos}")
        if body + length > end:                       # the last append was cut short
            return _replayed(hot, torn=True)
        payload = data[body:body + length]
        if zlib.crc32(payload) != crc:
            if body + length == end:                  # the last frame: torn by the crash
                return _replayed(hot, torn=True)
            return Replay(None, problem=f"checksum mismatch at byte {pos}, followed by more frames")
        problem = _apply_payload(payload, hot)
        if problem:
            return Replay(None, problem=f"frame at byte {pos}: {problem}")
        pos = body + length
    return _replayed(hot)


def _apply_payload(payload: bytes, hot: dict[str, None]) -> str:
    pos = 0
    while pos < len(payload):
        if len(payload) - pos < _ENTRY.size:
            return "entry header cut short"
        op, n = _ENTRY.unpack_from(payload, pos)
        pos += _ENTRY.size
        if pos + n > len(payload) or op not in _OPS or (op in (MARK, UNMARK) and n) \
                or (op >= ENTER_DIR and not n):
            return f"bad entry (op {op}, {n} bytes)"
        if op in (MARK, UNMARK):
            key = _MARK_KEY
        else:
            key = os.fsdecode(payload[pos:pos + n])
            if key.endswith("/") or _TREE in key:
                return f"bad entry (op {op}, a path ending with '/' or holding a NUL byte)"
            if op in (ENTER_DIR, LEAVE_DIR):
                key = dir_key(key)
            elif op in (ENTER_TREE, LEAVE_TREE):
                key = tree_key(key)
        pos += n
        if op in (ENTER, MARK, ENTER_DIR, ENTER_TREE):
            hot[key] = None
        else:
            hot.pop(key, None)
    return ""


def read_log(path: str) -> Replay:
    """Read and replay the log file at ``path``; a missing file cannot be trusted either."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return Replay(None, problem=f"{path}: no activity log")
    except OSError as exc:
        return Replay(None, problem=f"{path}: {exc.strerror}")
    result = replay(data)
    if result.problem:
        return Replay(None, problem=f"{path}: {result.problem}")
    return result


def write_snapshot(path: str, paths: list[str], old_fd: int) -> int:
    """Replace the log at ``path`` with one entering ``paths`` (hot-set keys: a directory entry's
    key ends with "/", a subtree's with a NUL byte), through a temporary file, fsync, rename, directory fsync; close ``old_fd``
    (if >= 0) and return the new file's descriptor, at its end. A failure removes the temporary.
    One temporary name (not durablefile.replace, whose file is closed): one writer at a time, under
    the log's lock, and the next snapshot reuses what a crash left."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        write_all(fd, MAGIC + (encode_frame([entry_of(p, True) for p in paths]) if paths else b""))
        os.fsync(fd)
        os.replace(tmp, path)
    except BaseException:
        os.close(fd)
        discard(tmp)
        raise
    _fsync_dir(os.path.dirname(os.path.abspath(path)))
    if old_fd >= 0:
        os.close(old_fd)
    return fd


def remove_log(path: str) -> None:
    """Delete the log (the activity log is off: a stale one must never be trusted)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    _fsync_dir(os.path.dirname(os.path.abspath(path)))
