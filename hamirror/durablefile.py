"""Replacing a small file whole: a reader, a crash or a power loss sees the old one or the new
one, never a mix or nothing.

Each replacement writes a temporary file of its own beside the file, ``.NAME.RANDOM.tmp``,
created with O_EXCL (and O_NOFOLLOW): two writers of one file (threads or processes) never share
a temporary, so one's rename can never take the other's (ENOENT), and a symlink planted there is
never followed. Then the data, an fsync when durable, the rename over the file, and an fsync of
the folder when durable. A failure before the rename removes the temporary and raises.

A crash (or a kill) between the temporary's creation and the rename can leave one such file
behind. Nothing reads it, the leading dot keeps it out of most listings, and a later replace does
not remove it (it could be another writer's, in flight); :func:`leftovers` names them for a
cleanup that knows no writer is left.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import re
import secrets

_ATTEMPTS = 100     # unused random names tried (48 bits each: one is enough in practice)
_TOKEN_BYTES = 6    # of randomness in each temporary's name (hex in the name: twice as many digits)
_LEFTOVER = re.compile(rf"\..+\.[0-9a-f]{{{2 * _TOKEN_BYTES}}}\.tmp", re.DOTALL)   # what _create names


def write_json(path: str, doc: object, mode: int = 0o600, dir_mode: int = 0o700) -> None:
    """Durably replace ``path`` with ``doc`` as JSON (its folder is made if missing)."""
    write_text(path, json.dumps(doc), mode, dir_mode)


def write_text(path: str, text: str, mode: int = 0o600, dir_mode: int = 0o700) -> None:
    """Durably replace ``path`` with ``text`` (its folder is made if missing)."""
    os.makedirs(os.path.dirname(path) or ".", mode=dir_mode, exist_ok=True)
    replace(path, text, mode)


def replace(path: str, data: str | bytes, mode: int = 0o600, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` (a str as UTF-8), a new file of ``mode`` less the umask.
    ``durable``: on the disk at return (fsyncs); without it only atomic for readers (a file
    rewritten each second that a crash may lose). Raises OSError (a full disk): nothing is left
    behind then and the old file is intact."""
    folder, name = os.path.split(path)
    folder = folder or "."
    fd, temporary = _create(folder, name, mode)
    try:
        try:
            write_all(fd, data.encode("utf-8") if isinstance(data, str) else data)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        discard(temporary)
        raise
    if durable:
        fsync_dir(folder)


def leftovers(path: str) -> list[str]:
    """The temporaries of ``path`` that :func:`replace` may have left behind after a crash."""
    folder, name = os.path.split(path)
    return glob.glob(os.path.join(glob.escape(folder or "."), f".{glob.escape(name)}.*.tmp"))


def is_leftover(name: str) -> bool:
    """Whether a file name is one of :func:`replace`'s temporaries (a crash's leftover, or a write
    under way): never a file of its own to read, bundle or copy."""
    return _LEFTOVER.fullmatch(name) is not None


def discard(path: str) -> None:
    """Remove a temporary file if it is there (the clean-up of a failed write)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def fsync_dir(path: str) -> None:
    """Make the directory's entries durable (a new or renamed file is not, by itself)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create(folder: str, name: str, mode: int) -> tuple[int, str]:
    """A new temporary file of this writer's alone: its descriptor and path."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(_ATTEMPTS):
        temporary = os.path.join(folder, f".{name}.{secrets.token_hex(_TOKEN_BYTES)}.tmp")
        try:
            return os.open(temporary, flags, mode), temporary
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary name", os.path.join(folder, f".{name}.*.tmp"))


def write_all(fd: int, data: bytes) -> None:
    """All of ``data`` to ``fd`` (os.write may write less)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
