"""Ports for the tests' own servers, which nothing else takes between the pick and the bind.

Why: a port picked by binding port 0 comes from the kernel's ephemeral range and is free only at
that instant. The server binds it a moment later, and in between another xdist worker's pick, or
any outgoing connection, may get the same number: "address in use", or a test talking to another
worker's server. Here each worker draws in turn from a block of its own below the ephemeral range
(32768 and up on Linux), from a random place in it, and skips a port that something holds.
"""

from __future__ import annotations

import itertools
import os
import random
import socket

BASE = 20000
BLOCK = 1000          # ports per worker
WORKERS = 12          # blocks below the ephemeral range: 20000-31999
_turn = itertools.count(random.randrange(BLOCK))


def _worker() -> int:
    """pytest-xdist's worker number (``gw3`` -> 3); 0 outside xdist."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(name[2:]) % WORKERS if name.startswith("gw") and name[2:].isdigit() else 0


def _bindable(host: str, port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_ports(count: int = 1, host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> list[int]:
    """``count`` distinct ports of this worker's block that ``host`` can bind now for ``kind``."""
    start = BASE + _worker() * BLOCK
    ports: list[int] = []
    for _ in range(BLOCK):
        port = start + next(_turn) % BLOCK
        if port not in ports and _bindable(host, port, kind):
            ports.append(port)
            if len(ports) == count:
                return ports
    raise RuntimeError(f"no {count} free ports in {start}-{start + BLOCK - 1} on {host}")


def free_port(host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> int:
    return free_ports(1, host, kind)[0]
