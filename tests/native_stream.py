"""One replicated message stream, applied by the native core or by the Python applier.

Shared by tests/test_native_apply.py (both paths must leave the same bytes, modes, owners, times
and errors) and by its AddressSanitizer run, which executes this module in a process that has
the sanitized build of the core loaded: ``python -m tests.native_stream DIR [EXTENSION.so]``.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import stat
import sys

from hamirror.link.apply import EARLY_WRITEBACK_MIN, Applier
from hamirror.link.protocol import Message, Op, decode, encode

T = 1_700_000_000_000_000_000   # ns; every message carries the primary's times, as a real one does


def _msg(op: Op, ints: tuple, strs: tuple, times: tuple = (), data: bytes | None = None) -> Message:
    frames = [encode(op, 1, 1, ints, strs, times)] + ([data] if data is not None else [])
    return decode(frames)


def _t(n: int, *paths: bytes) -> tuple:
    return tuple((p, T + n, T + n * 1000 + 7) for p in paths)


def stream() -> list[Message]:
    """Every operation the native core applies, the Python ones between them (names change
    behind the core's descriptors), and the refusals both paths must give alike."""
    uid, gid = os.getuid(), os.getgid()
    big = bytes(range(256)) * (EARLY_WRITEBACK_MIN // 256 + 3)
    reg = stat.S_IFREG
    return [
        _msg(Op.MKDIR, (0o40750, uid, gid), (b"d",), _t(1, b"d", b".")),
        _msg(Op.MKDIR, (0o42755, uid, gid), (b"d/e",), _t(2, b"d/e", b"d")),
        _msg(Op.CREATE, (reg | 0o640, uid, gid, 0), (b"d/e/f",), _t(3, b"d/e/f", b"d/e")),
        _msg(Op.WRITE, (0,), (b"d/e/f",), _t(4, b"d/e/f"), b"hello"),
        _msg(Op.WRITE, (300_000,), (b"d/e/f",), _t(5, b"d/e/f"), big),
        _msg(Op.TRUNCATE, (400_000,), (b"d/e/f",), _t(6, b"d/e/f")),
        _msg(Op.FALLOCATE, (0, 0, 8192), (b"d/e/f",), _t(7, b"d/e/f")),
        _msg(Op.WRITE_FSYNC, (10, 1), (b"d/e/f",), _t(8, b"d/e/f"), b"commit"),
        _msg(Op.FSYNC, (0,), (b"d/e",)),
        _msg(Op.FSYNC, (1,), (b".",)),
        _msg(Op.CREATE, (reg | 0o4755, 1000, 1000, 0), (b"top",), _t(9, b"top", b".")),
        _msg(Op.WRITE, (0,), (b"top",), _t(10, b"top"), b"setuid stays"),
        _msg(Op.CHMOD, (0o600,), (b"top",), _t(11, b"top")),                  # Python
        _msg(Op.RENAME, (0,), (b"d/e/f", b"d/g"), _t(12, b"d/g", b"d/e", b"d")),   # Python
        _msg(Op.WRITE, (0,), (b"d/g",), _t(13, b"d/g"), b"after rename"),
        _msg(Op.WRITE, (0,), (b"d/e/f",), (), b"old name"),                      # ENOENT
        _msg(Op.CREATE, (reg | 0o644, uid, gid, 0), (b"d/e/f",), _t(14, b"d/e/f", b"d/e")),
        _msg(Op.WRITE, (0,), (b"d/e/f",), _t(15, b"d/e/f"), b"a new inode"),
        _msg(Op.LINK, (), (b"d/e/f", b"d/hard"), _t(16, b"d/hard", b"d")),       # Python
        _msg(Op.WRITE, (0,), (b"d/hard",), _t(17, b"d/hard"), b"A NEW"),
        _msg(Op.UNLINK, (), (b"d/g",), _t(18, b"d")),
        _msg(Op.SYMLINK, (uid, gid), (b"d/link", b"../.."), _t(19, b"d")),       # Python
        _msg(Op.WRITE, (0,), (b"d/link/x",), (), b"escape"),                     # ELOOP
        _msg(Op.CREATE, (reg | 0o644, uid, gid, 0), (b"d/link/x",)),             # ELOOP
        _msg(Op.WRITE, (0,), (b"d/link",), (), b"through the link"),             # ELOOP
        _msg(Op.CREATE, (stat.S_IFIFO | 0o600, uid, gid, 0), (b"d/fifo",), _t(20, b"d/fifo", b"d")),
        _msg(Op.WRITE, (0,), (b"d/fifo",), (), b"would block"),                  # EINVAL
        _msg(Op.FSYNC, (0,), (b"d/fifo",)),                                      # EINVAL
        _msg(Op.CREATE, (reg | 0o644, uid, gid, 0), (b"d/fifo",)),               # EINVAL
        _msg(Op.MKDIR, (0o40700, uid, gid), (b"d/tmp",), _t(21, b"d/tmp", b"d")),
        _msg(Op.CREATE, (reg | 0o600, uid, gid, 0), (b"d/tmp/old",), _t(22, b"d/tmp/old", b"d/tmp")),
        _msg(Op.UNLINK, (), (b"d/tmp/old",), _t(23, b"d/tmp")),
        _msg(Op.RMDIR, (), (b"d/tmp",), _t(24, b"d")),                          # Python
        _msg(Op.MKDIR, (0o40711, uid, gid), (b"d/tmp",), _t(25, b"d/tmp", b"d")),
        _msg(Op.CREATE, (reg | 0o600, uid, gid, 0), (b"d/tmp/new",), _t(26, b"d/tmp/new", b"d/tmp")),
        _msg(Op.RENAME, (0,), (b"d/tmp", b"d/tmp2"), _t(31, b"d")),            # Python
        _msg(Op.CREATE, (reg | 0o600, uid, gid, 0), (b"d/tmp/x",)),              # ENOENT
        _msg(Op.SETXATTR, (0,), (b"d/e/f", b"user.k"), _t(27, b"d/e/f"), b"v"),  # Python
        _msg(Op.UNLINK, (), (b"d/none",)),                                       # ENOENT
        _msg(Op.WRITE, (0,), (b"nodir/x",), (), b"x"),                           # ENOENT
        _msg(Op.WRITE, (0,), (b"d/e/f/x",), (), b"x"),                           # ENOTDIR
        _msg(Op.MKDIR, (0o40755, uid, gid), (b"d/e",)),                          # EEXIST
        _msg(Op.CREATE, (reg | 0o600, uid, gid, 0), (b"d/e/f",), _t(28, b"d/e/f")),   # truncates
        _msg(Op.WRITE_FSYNC, (0, 0), (b"d/e/f",), _t(29, b"d/e/f", b"d/e"), b"last"),
        _msg(Op.UTIMENS, (), (b"top",), _t(30, b"top", b".", b"d")),
    ]


EXPECTED_ERRORS = {15: errno.ENOENT, 22: errno.ELOOP, 23: errno.ELOOP, 24: errno.ELOOP,
                   26: errno.EINVAL, 27: errno.EINVAL, 28: errno.EINVAL, 36: errno.ENOENT,
                   38: errno.ENOENT, 39: errno.ENOENT, 40: errno.ENOTDIR, 41: errno.EEXIST}


def run(directory: str, use_native: bool) -> list[int]:
    """Apply the stream to ``directory``; the errno of every message (0: applied)."""
    applier = Applier(directory, use_native=use_native)
    if use_native and applier.native is None:
        raise AssertionError("the native core is not built: run scripts/setup.sh")
    outcomes = []
    try:
        for msg in stream():
            try:
                applier.apply(msg)
                outcomes.append(0)
            except OSError as exc:
                outcomes.append(exc.errno or -1)
    finally:
        applier.close()
    return outcomes


def _load_extension(path: str) -> None:
    """Use the core built at ``path`` (e.g. with AddressSanitizer) instead of the package's."""
    spec = importlib.util.spec_from_file_location("hamirror.link._native", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules["hamirror.link._native"] = module


if __name__ == "__main__":
    if len(sys.argv) > 2:
        _load_extension(sys.argv[2])
    print(json.dumps(run(sys.argv[1], use_native=True)))
