"""Byte comparison of the two copies of a replicated directory, read from the host.

"Up to date" means byte-identical (design.md, invariants): every file's content, size and mode, and
the tree, the keep-aside folder (``.hamirror-conflicts``) excepted. Row counts and checksums of a
database prove less: SQLite and PostgreSQL ignore bytes a later failover may serve. The fault
campaign (``scripts/chaos.py``) runs this after every trial, on each node's *lower* directory
(``ROOT/NODE/srv/...`` on the host: the node's own disk, beneath any FUSE mount, which lives in
the node's private mount namespace only).

A primary may write in the background while nothing is acknowledged to a client (a checkpoint,
autovacuum), so :func:`settled` compares again what differed, a few times: a difference that is
still there after the pauses is reported, with its ranges.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass, field

from hamirror.link.protocol import CONFLICT_DIR

BLOCK = 4096           # ranges are reported at this granularity
CHUNK = 1 << 20        # bytes read at a time
MAX_RANGES = 8         # ranges listed per file


@dataclass(frozen=True)
class Entry:
    """What is compared of one path: its type, mode bits, size (files) and target (symlinks)."""

    kind: str          # "file", "dir", "symlink", "other"
    mode: int
    size: int = 0
    target: str = ""


@dataclass
class Difference:
    path: str
    what: str                                              # "only on node1", "mode 0600 != 0644", "content"...
    ranges: list[tuple[int, int]] = field(default_factory=list)   # [start, end) byte ranges that differ

    def __str__(self) -> str:
        if not self.ranges:
            return f"{self.path}: {self.what}"
        shown = ", ".join(f"{a}-{b}" for a, b in self.ranges[:MAX_RANGES])
        more = f" (+{len(self.ranges) - MAX_RANGES} more)" if len(self.ranges) > MAX_RANGES else ""
        total = sum(b - a for a, b in self.ranges)
        return f"{self.path}: {self.what}, {total} bytes differ in [{shown}]{more}"


def _entry(path: str) -> Entry:
    st = os.lstat(path)
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISREG(st.st_mode):
        return Entry("file", mode, st.st_size)
    if stat.S_ISDIR(st.st_mode):
        return Entry("dir", mode)
    if stat.S_ISLNK(st.st_mode):
        return Entry("symlink", mode, target=os.readlink(path))
    return Entry("other", stat.S_IFMT(st.st_mode) | mode)


def tree(root: str) -> dict[str, Entry]:
    """Every path under root (relative; "." is root itself) with its entry, the conflict folder skipped."""
    found = {".": _entry(root)}
    conflict = os.fsdecode(CONFLICT_DIR)
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == root:
            dirnames[:] = [d for d in dirnames if d != conflict]
            filenames = [f for f in filenames if f != conflict]
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            try:
                found[os.path.relpath(full, root)] = _entry(full)
            except FileNotFoundError:        # removed meanwhile: settled() looks again
                continue
    return found


def content_ranges(a: str, b: str) -> list[tuple[int, int]]:
    """The BLOCK-aligned [start, end) ranges where two files' bytes differ (a longer file's tail included)."""
    ranges: list[tuple[int, int]] = []

    def add(start: int, end: int) -> None:
        if ranges and ranges[-1][1] >= start:
            ranges[-1] = (ranges[-1][0], max(ranges[-1][1], end))
        else:
            ranges.append((start, end))
    with open(a, "rb") as fa, open(b, "rb") as fb:
        offset = 0
        while True:
            da, db = fa.read(CHUNK), fb.read(CHUNK)
            if not da and not db:
                return ranges
            if da != db:
                for i in range(0, max(len(da), len(db)), BLOCK):
                    if da[i:i + BLOCK] != db[i:i + BLOCK]:
                        add(offset + i, offset + i + max(len(da[i:i + BLOCK]), len(db[i:i + BLOCK])))
            offset += max(len(da), len(db))


def compare_paths(root_a: str, root_b: str, names: tuple[str, str], only: set[str] | None = None) -> list[Difference]:
    """The differences between the two trees (``only``: these paths alone); names label each side."""
    ta, tb = tree(root_a), tree(root_b)
    if only is not None:
        ta = {p: e for p, e in ta.items() if p in only}
        tb = {p: e for p, e in tb.items() if p in only}
    out = []
    for path in sorted(set(ta) | set(tb)):
        ea, eb = ta.get(path), tb.get(path)
        if ea is None or eb is None:
            out.append(Difference(path, f"only on {names[0] if eb is None else names[1]}"))
            continue
        if ea.kind != eb.kind:
            out.append(Difference(path, f"{ea.kind} on {names[0]}, {eb.kind} on {names[1]}"))
            continue
        if ea.mode != eb.mode:
            out.append(Difference(path, f"mode {ea.mode:04o} on {names[0]}, {eb.mode:04o} on {names[1]}"))
        if ea.target != eb.target:
            out.append(Difference(path, f"symlink to {ea.target!r} on {names[0]}, {eb.target!r} on {names[1]}"))
        if ea.kind == "file":
            try:
                ranges = content_ranges(os.path.join(root_a, path), os.path.join(root_b, path))
            except FileNotFoundError:
                out.append(Difference(path, "removed while compared"))
                continue
            if ranges or ea.size != eb.size:
                size = "" if ea.size == eb.size else f"size {ea.size} on {names[0]}, {eb.size} on {names[1]}; "
                out.append(Difference(path, size + "content", ranges))
    return out


def settled(root_a: str, root_b: str, names: tuple[str, str] = ("a", "b"), attempts: int = 4,
            pause: float = 1.0) -> list[Difference]:
    """The differences that remain after ``attempts`` looks ``pause`` s apart (only what still differed
    is looked at again): what a background write in flight explains goes away, a lasting one stays."""
    diffs = compare_paths(root_a, root_b, names)
    for _ in range(attempts - 1):
        if not diffs:
            break
        time.sleep(pause)
        diffs = compare_paths(root_a, root_b, names, only={d.path for d in diffs})
    return diffs
