"""``status.json``: what a mount or a receiver tells the agent and ``hamirror mirror status``.

Each data-path daemon rewrites the file in its state directory (atomically: a temporary file,
then a rename; a crash may leave a ``.status.json.*.tmp`` that nothing reads) and other
processes read it: the agent to find, adopt and judge its mounts and receivers
(hamirror/agent/datapath.py), the CLI. It crosses a process boundary, so its shape is written
down here, once, with the one writer and the one reader.
"""

from __future__ import annotations

import json
import os
from typing import Literal, TypedDict, Union

from hamirror import durablefile

FILE = "status.json"


class MountStatus(TypedDict):
    """A mount daemon's (hamirror/fs/mount.py, StatusWriter), rewritten each second and on every
    change of state. Its control socket's ``status`` answer is this plus the verify job's."""

    role: Literal["mount"]
    dir: str
    peer: str | None                # the receiver's endpoint; None: replication off
    mode: str                       # sync | barrier | async
    pid: int
    mounted: bool
    state: str                      # a MirrorState value (hamirror/mirror/states.py)
    resync_needed: bool             # ALONE: the peer misses changes
    fenced_since: float | None      # wall clock the mount became FENCED
    fence_reason: str | None
    resync: dict | None             # progress of the running resync (resync/engine.py)
    last_resync_error: str | None
    resync_failures: dict | None    # failures in a row (resync/failures.py)
    last_resync: dict | None        # summary of the last resync that completed
    alone_reason: str | None
    alone_since: float | None
    changed_paths: int              # paths the peer lacks (the journal's changed set)
    ops_sent: int
    bytes_sent: int
    in_flight: int
    updated: float                  # wall clock of this snapshot


class ReceiverStatus(TypedDict):
    """A receiver's (hamirror/replica/receiver.py, write_status), rewritten every 0.5 s and on news."""

    role: Literal["receiver"]
    pid: int
    dir: str
    endpoint: str                   # where it listens (the port chosen when bound to :0)
    uptodate: bool                  # this copy equals the primary's (the journal's UPTODATE)
    resyncing: bool
    running: bool
    updated: float
    last_message: float | None      # wall clock of the last message from a primary
    connections: int                # TCP connections open on the replication port
    closed_at: float | None         # wall clock the last one closed
    applied: int                    # ReceiverStats, from here on
    bytes_applied: int
    refused: int
    errors: int
    last_error: str
    session: str                    # hexadecimal
    next_seq: int
    by_op: dict[str, int]
    unsynced_paths: int | None      # paths applied but not yet durable here


Status = Union[MountStatus, ReceiverStatus]


def path(state_dir: str) -> str:
    return os.path.join(state_dir, FILE)


def write(state_dir: str, status: Status) -> None:
    """Replace the file atomically (readers never see half of one; two writers never collide),
    created 0644 less the umask. Not durable: it is rewritten each second and a crash may lose it.
    Raises OSError (a full disk): each daemon says what it does then."""
    durablefile.replace(path(state_dir), json.dumps(status, indent=1), 0o644, durable=False)


def read(state_dir: str) -> Status | None:
    """The last status written in ``state_dir``, or None (none yet, unreadable, not an object)."""
    try:
        with open(path(state_dir), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None

