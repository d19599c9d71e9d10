"""Reading a secret from a file (cluster key, HTTP token, CURVE secret keys): its owner alone may read it.

A leaf module shared by the heartbeat key, the HTTP token and ``config check``, so that the
check and the daemons apply one rule and say the same thing.
"""

from __future__ import annotations

import os
import stat


def read_secret(path: str, what: str, limit: int) -> bytes:
    """The file's bytes (at most ``limit`` + 1, so callers can refuse a larger file).

    ValueError, naming the file, when group or others have any access to it: a key that other
    local users can read lets them forge what it authenticates. OSError when it cannot be read.
    """
    with open(path, "rb") as stream:
        mode = os.fstat(stream.fileno()).st_mode
        data = stream.read(limit + 1)
    refuse_shared(path, mode, what)
    return data


def refuse_shared(path: str, mode: int, what: str) -> None:
    """ValueError, naming the file, when ``mode`` gives group or others any access to it."""
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValueError(f"{path}: {what} is accessible by other users (mode {stat.S_IMODE(mode):04o}); "
                         f"chmod 600 it")
