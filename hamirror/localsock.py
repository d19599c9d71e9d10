"""Root-only unix sockets that speak one JSON object per line (the agent's and each mount's).

The servers differ (the agent's is asyncio, a mount's is a thread), the rules do not: socket
file mode 0600, every caller's uid checked with SO_PEERCRED, requests bounded in size.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import struct

MAX_LINE = 64 * 1024


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """``(pid, uid, gid)`` of the process at the other end of a unix socket (SO_PEERCRED)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", creds)
    return pid, uid, gid


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a unix socket (SO_PEERCRED)."""
    return peer_credentials(sock)[1]


def bind_private(path: str) -> socket.socket:
    """A unix stream socket bound at ``path``, mode 0600 from its creation, checked.

    The process umask is never touched: it is process-wide, and a ``umask(0o177)`` around a bind
    while other threads create files gave them (state directories included) mode 0600. On Linux
    the socket file takes the mode of the socket's inode, so ``fchmod`` before ``bind`` makes it
    0600 at once; the ``chmod`` after it closes the gap on a kernel that would not.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.fchmod(sock.fileno(), 0o600)
        sock.bind(path)
        os.chmod(path, 0o600)
        mode = stat.S_IMODE(os.lstat(path).st_mode)
        if mode != 0o600:
            raise PermissionError(f"{path}: control socket has mode {mode:04o}, not 0600")
    except BaseException:
        sock.close()
        raise
    return sock


def read_line(sock: socket.socket) -> bytes:
    """Bytes up to and including the first newline (or EOF); ValueError past MAX_LINE."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_LINE:
            raise ValueError("line too long")
    return data


def exchange(path: str, message: dict, timeout: float) -> bytes:
    """Send one request line and return the raw answer line (b"" if the server hung up).

    Raises OSError when nobody listens at ``path``; callers turn that into their own error.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(json.dumps(message).encode() + b"\n")
        return read_line(sock)
