"""What the resync compares: per-path metadata and per-block checksums, read beneath a root fd.

Both sides use the same functions (the primary on its lower directory, the secondary to answer
STAT / LISTDIR / BLOCKSUMS queries), so "equal" means the same thing on both ends.
"""

from __future__ import annotations

import json
import os
import stat
import struct
from dataclasses import dataclass

import xxhash

from hamirror.link.protocol import CONFLICT_DIR

FULL_BLOCK = 1024 * 1024   # block size when nothing says which blocks changed
_SUMS_HEAD = struct.Struct("<q")


@dataclass(frozen=True)
class Meta:
    """One inode as seen through one path (no atime: reads change it on each side)."""

    kind: str            # "file", "dir", "link", "other"
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    rdev: int
    target: str | None   # symlink target
    ino: int
    nlink: int
    xattrs: dict[str, str]  # name -> value as hex

    def to_json(self) -> list:
        return [self.kind, self.mode, self.uid, self.gid, self.size, self.mtime_ns, self.rdev,
                self.target, self.ino, self.nlink, self.xattrs]

    @classmethod
    def from_json(cls, data: list) -> "Meta":
        return cls(*data)

    def same_content_hint(self, other: "Meta") -> bool:
        """Type, size and mtime equal: the replicated mtime makes this a strong hint."""
        return (self.kind, self.size, self.mtime_ns, self.target) == (other.kind, other.size,
                                                                      other.mtime_ns, other.target)

    def same_attributes(self, other: "Meta") -> bool:
        return (self.mode, self.uid, self.gid, self.xattrs) == (other.mode, other.uid, other.gid,
                                                                 other.xattrs)


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "link"
    return "other"


def read_xattrs(dir_fd: int, name: str) -> dict[str, str]:
    path = f"/proc/self/fd/{dir_fd}/{name}"
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    result = {}
    for attr in sorted(names):
        try:
            result[attr] = os.getxattr(path, attr, follow_symlinks=False).hex()
        except OSError:
            continue
    return result


def meta_at(dir_fd: int, name: str) -> Meta | None:
    """Metadata of ``name`` in ``dir_fd`` without following a final symlink; None if absent."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    kind = _kind(st.st_mode)
    target = os.fsdecode(os.readlink(name, dir_fd=dir_fd)) if kind == "link" else None
    xattrs = {} if kind == "link" else read_xattrs(dir_fd, name)
    return Meta(kind, stat.S_IMODE(st.st_mode) | stat.S_IFMT(st.st_mode), st.st_uid, st.st_gid,
                st.st_size if kind == "file" else 0, st.st_mtime_ns, st.st_rdev, target,
                st.st_ino, st.st_nlink, xattrs)


def dir_names(dir_fd: int, top: bool = False) -> list[str]:
    """The names in an open directory (``top``: without the reserved conflict folder)."""
    with os.scandir(dir_fd) as entries:
        return [e.name for e in entries if not (top and os.fsencode(e.name) == CONFLICT_DIR)]


def list_dir(dir_fd: int, top: bool = False) -> dict[str, Meta]:
    """Every entry of an open directory with its metadata; ``top`` (the replicated directory
    itself) leaves out hamirror's reserved conflict folder, which is never compared or copied."""
    result = {}
    for name in dir_names(dir_fd, top):
        meta = meta_at(dir_fd, name)
        if meta is not None:
            result[name] = meta
    return result


def block_sums(fd: int, offset: int, length: int, block: int) -> tuple[int, list[int]]:
    """(file size, xxh3-64 of each block in [offset, offset+length)); blocks past EOF are absent."""
    size = os.fstat(fd).st_size
    sums = []
    end = min(offset + length, size)
    pos = offset
    while pos < end:
        data = os.pread(fd, min(block, end - pos), pos)
        if not data:
            break
        sums.append(xxhash.xxh3_64_intdigest(data))
        pos += len(data)
    return size, sums


def encode_sums(size: int, sums: list[int]) -> bytes:
    return _SUMS_HEAD.pack(size) + struct.pack(f"<{len(sums)}Q", *sums)


def decode_sums(payload: bytes) -> tuple[int, list[int]]:
    (size,) = _SUMS_HEAD.unpack_from(payload)
    count = (len(payload) - _SUMS_HEAD.size) // 8
    return size, list(struct.unpack_from(f"<{count}Q", payload, _SUMS_HEAD.size))


def encode_json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def decode_json(payload: bytes) -> object:
    return json.loads(payload.decode())
