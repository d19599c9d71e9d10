"""The activity log's hot set, pure: a slot per key, what may leave, what a rename carries.

Why its own module: the rules that decide when a key may leave the log (acknowledged by the peer,
durable here and, when delegated, on the peer) and what a directory rename moves are pure, and
tested without a file; hamirror.journal.activity keeps the file and the locking around them.
"""

from __future__ import annotations

import collections
import os
import stat
from typing import Callable, Iterable, Protocol


class Acknowledgeable(Protocol):
    """What the log needs of an operation in flight (hamirror.link.client.Ticket provides it)."""

    seq: int

    @property
    def done(self) -> bool: ...


PeerCheck = Callable[[Acknowledgeable], bool]   # an acknowledged operation is on the peer's disk


def is_dir(root_fd: int, path: str) -> bool:
    """``path`` is a directory beneath ``root_fd`` now; True when that cannot be told (a scan then)."""
    try:
        return stat.S_ISDIR(os.lstat(path, dir_fd=root_fd).st_mode)
    except FileNotFoundError:
        return False          # the rename fails: nothing moves
    except OSError:
        return True


class Slot:
    """One hot path: calls inside their change block, the newest operation sent for it, and the
    durability epoch of its last change (0: nothing to make durable)."""

    __slots__ = ("busy", "ticket", "stamp")

    def __init__(self) -> None:
        self.busy = 0
        self.ticket: Acknowledgeable | None = None
        self.stamp = 0

    def settled(self) -> bool:
        """Everything about the path is acknowledged by the peer, or nothing was sent. A ticket
        that failed (the peer was lost) counts too: the replicator records what a failed ticket
        carried in the journal before completing it, and a call still inside its change block
        (recording what could not be sent) keeps ``busy`` above zero."""
        t = self.ticket
        return self.busy == 0 and (t is None or t.done)

    def sent(self, ticket: Acknowledgeable, peer: PeerCheck | None = None) -> None:
        """Keep the newest operation on the path: an older call may leave after a newer one. A
        done one is replaced by any (a new session numbers from 0 again), but with ``peer`` only
        once the peer has it on its disk too: the newer seq is the one its durability must pass."""
        t = self.ticket
        if (t is None or getattr(ticket, "seq", 0) >= getattr(t, "seq", 0)
                or (t.done and (peer is None or peer(t)))):
            self.ticket = ticket

    def on_peer(self, peer: PeerCheck | None) -> bool:
        """Nothing of the path may be missing from the peer's disk (the primary's side of a
        delegated session, docs/journal.md "Durability"): no call inside, the newest operation
        acknowledged and, with ``peer``, durable there."""
        t = self.ticket
        return self.busy == 0 and (t is None or (t.done and (peer is None or peer(t))))

    def evictable(self, durable: int | None, peer: PeerCheck | None) -> bool:
        """:meth:`on_peer`, and changed no later than ``durable`` (the newest durable epoch here)."""
        return self.on_peer(peer) and (durable is None or self.stamp <= durable)


def carried(keys: Iterable[str], src: str, dst: str) -> list[str]:
    """The hot keys under directory ``src`` (its own directory entry ``src/`` and every key
    beneath) as they are named once ``src`` is renamed ``dst`` (pure). Why: after the rename the
    peer holds them under ``dst`` only, and a record that names ``src/f`` but not ``dst/f`` lets a
    resync compare ``dst``'s listing and never ``dst/f``'s content."""
    prefix = src + "/"
    return [dst + k[len(src):] for k in keys if k.startswith(prefix)]


def choose_victims(hot: collections.OrderedDict[str, Slot], count: int, durable: int | None = None,
                   peer: PeerCheck | None = None) -> list[str]:
    """Up to ``count`` least recently used paths that may leave the hot set (pure): settled, with
    ``durable`` (the newest durable epoch) changed no later than that epoch, and with ``peer``
    durable on the peer too."""
    victims: list[str] = []
    if count <= 0:
        return victims
    for path, slot in hot.items():                    # oldest first
        if slot.evictable(durable, peer):
            victims.append(path)
            if len(victims) == count:
                break
    return victims
