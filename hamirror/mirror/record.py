"""What the data path keeps in a journal's small-state table, typed, each key in one place.

The journal stores strings under names (``Journal.get_state``/``set_state``, each write durable
on return). Several processes and layers read and write the same names (the mount, the receiver,
the resync, the agent), so each name is declared here once with its type and its default, and
read or written through that declaration: a flag is ``True``/``False`` (stored ``"1"``/``"0"``),
a state is a :class:`MirrorState`, never a string compared by hand. :class:`MirrorRecord` is the
typed snapshot the mount reads when it starts.

Writes stay one key at a time, as before: each is durable on return and its order with the
other records (a generation, the changed set) is what crash safety rests on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Generic, Protocol, TypeVar

from hamirror.mirror.states import MirrorState

T = TypeVar("T")


class StateStore(Protocol):
    """The journal's small-state table (hamirror.journal.journal.Journal provides it)."""

    def get_state(self, key: str, default: str | None = None) -> str | None: ...
    def set_state(self, key: str, value: str) -> None: ...


@dataclass(frozen=True)
class Key(Generic[T]):
    """One name of the table: how its value is read and written, and what it is when absent."""

    name: str
    default: T
    decode: Callable[[str], T]
    encode: Callable[[T], str]

    def get(self, store: StateStore, default: T | None = None) -> T:
        """The stored value, or ``default`` (the key's own when not given) if there is none."""
        raw = store.get_state(self.name)
        if raw is None:
            return self.default if default is None else default
        return self.decode(raw)

    def set(self, store: StateStore, value: T) -> None:
        """Store ``value``; durable on return (the journal's promise)."""
        store.set_state(self.name, self.encode(value))


def _flag(name: str, default: bool) -> Key[bool]:
    return Key(name, default, lambda raw: raw == "1", lambda value: "1" if value else "0")


def _text(name: str) -> Key[str]:
    return Key(name, "", str, str)


def _saved_state(raw: str) -> MirrorState | str:
    """A state the replicator persisted, or what else was written there (REPLICA, or a value of
    a newer version: kept as it is, so it reads as none of the states and is never trusted)."""
    try:
        return MirrorState(raw)
    except ValueError:
        return raw


def _state_value(value: MirrorState | str) -> str:
    return value.value if isinstance(value, MirrorState) else value


# --- the mount's state machine (hamirror/mirror/replicator.py) ---------------------------------
# The last state the mount persisted (PRIM, ALONE, FENCED, REFUSED; SYNCING keeps ALONE), or the
# agent's REPLICA mark; None when nothing was written.
STATE: Key[MirrorState | str | None] = Key("mirror_state", None, _saved_state, _state_value)
ALONE_REASON = _text("mirror_alone_reason")        # why the last persisted state was entered
# The streaming state a FENCED mount left (PRIM: a granted ALONE starts a new generation).
LOST_FROM: Key[MirrorState | None] = Key("mirror_lost_from", None, _saved_state, _state_value)
NEEDS_SCAN = _flag("resync_needs_scan", False)    # a mount crashed while streaming: its journal misses writes in flight
LOG_LOST = _flag("activity_log_lost", False)      # ... and its activity log could not be folded (paths unknown)
DONE_SENT = _flag("resync_done_sent", False)      # RESYNC_DONE went out: the peer may share our generation now
CLEAN = _flag("mount_clean", True)                # the last mount (or receiver) stopped cleanly
# --- the copy ---------------------------------------------------------------------------------
UPTODATE = _flag("uptodate", False)               # this copy equals the primary's as of the current generation
COVERED = _flag("crash_covered", False)           # after an unclean stop, the changed set was made complete again
UNSYNCED = _text("unsynced_paths")                # JSON list of paths to compare whole, or "*" (journal/unsynced.py)
KEPT = _flag("unsynced_log", False)               # this node keeps an unsynced log (a missing one was lost)
UNSYNCED_PEER = _flag("unsynced_peer", False)     # lost acknowledged data its primary recorded (delegated)
WATCH_GAP = _text("watch_gap")                    # why the inotify watcher may have missed changes
# --- resync and verify --------------------------------------------------------------------------
RESYNC_FAILURES = _text("resync_failures")        # JSON: failures in a row (resync/failures.py)
LAST_VERIFY = _text("last_verify")                # JSON: the last verify's summary (resync/verify.py)

KEYS: tuple[Key, ...] = (STATE, ALONE_REASON, LOST_FROM, NEEDS_SCAN, LOG_LOST, DONE_SENT, CLEAN, UPTODATE, COVERED,
                         UNSYNCED, KEPT, UNSYNCED_PEER, WATCH_GAP, RESYNC_FAILURES, LAST_VERIFY)


@dataclass(frozen=True)
class MirrorRecord:
    """What the mount's state machine left in a journal, typed: what a starting mount and a
    crash recovery read (:meth:`read`)."""

    state: MirrorState | str | None     # STATE
    lost_from: MirrorState | str | None  # LOST_FROM
    clean: bool                          # CLEAN

    @classmethod
    def read(cls, store: StateStore) -> MirrorRecord:
        return cls(STATE.get(store), LOST_FROM.get(store), CLEAN.get(store))
