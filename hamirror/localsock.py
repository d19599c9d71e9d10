"""Root-only unix sockets that speak one JSON object per line (the agent's and each mount's).

The servers differ (the agent's is asyncio, a mount's is a thread), the rules do not: socket
file mode 0600, every caller's uid checked with SO_PEERCRED, requests bounded in size.
"""

from __future__ import annotations

import json
import socket
import struct

MAX_LINE = 64 * 1024


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a unix socket (SO_PEERCRED)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


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
