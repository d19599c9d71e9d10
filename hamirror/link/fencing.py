"""Fencing tokens on the data path (etcd quorum, docs/cluster.md): a primary that lost its lease
must not write to its peer, however late everything else is.

The quorum service numbers every tenure: the holder key's creation revision in etcd grows with
each new holder. The agent writes the token of the tenure it holds into ``fencing-token`` beside
each replicated directory's journal, and raises ``fencing-floor`` (the newest token this node has
seen) to it. A mount's HELLO carries its ``fencing-token``; a receiver refuses a session whose
token is older than its ``fencing-floor`` and raises the floor to a newer one. A frozen primary
whose lease lapsed wakes with the old token: the peer that took over (or any receiver that has
since heard the new holder) refuses everything it sends.

No file, no token: a mount without ``fencing-token`` sends none (no etcd quorum, or a bare
``hamirror mirror mount``), and a receiver without ``fencing-floor`` refuses nothing.
"""

from __future__ import annotations

import os

from hamirror import durablefile

TOKEN_FILE = "fencing-token"   # the token of the tenure this node holds (read by its mount)
FLOOR_FILE = "fencing-floor"   # the newest token this node has seen (read by its receiver)
MAX_TOKEN = 2**63 - 1          # the link's integers are i64


def read(path: str) -> int | None:
    """The token in ``path``; None when there is none (missing, empty or unreadable: a file cut by a
    crash before its rename cannot exist, durablefile replaces whole)."""
    try:
        with open(path, encoding="ascii") as f:
            value = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return value if 0 < value <= MAX_TOKEN else None


def write(path: str, token: int) -> None:
    """Durably record ``token`` in ``path`` (before anything acts on it)."""
    if not 0 < token <= MAX_TOKEN:
        raise ValueError(f"fencing token out of range: {token}")
    durablefile.write_text(path, f"{token}\n")


def raise_floor(state_dir: str, token: int) -> int:
    """Raise this node's floor to ``token`` if it is newer; the floor afterwards."""
    path = os.path.join(state_dir, FLOOR_FILE)
    floor = read(path)
    if floor is None or token > floor:
        write(path, token)
        return token
    return floor


def stale(token: int | None, floor: int | None) -> str | None:
    """Why a session with ``token`` must be refused by a receiver whose floor is ``floor``; None
    when it may go on. A session without a token is not judged (no etcd quorum on the sender)."""
    if token is None or floor is None or token >= floor:
        return None
    return (f"stale fencing token {token}: this node has seen token {floor}, a newer holder of the "
            "quorum lease; the sender lost its lease and must not write")


def forget(state_dir: str) -> None:
    """Remove both files (the module no longer uses a quorum service that numbers tenures)."""
    for name in (TOKEN_FILE, FLOOR_FILE):
        try:
            os.unlink(os.path.join(state_dir, name))
        except FileNotFoundError:
            pass
