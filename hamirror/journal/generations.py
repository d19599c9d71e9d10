"""Generation history: who is newer after a reconnection (see docs/journal.md)."""

from __future__ import annotations

import dataclasses
import enum
import secrets
import time


class Relation(enum.Enum):
    """How this node's data relates to the peer's, from both generation histories."""

    SAME = "same"                # same current generation: nothing to copy
    LOCAL_NEWER = "local_newer"  # peer's current generation is in our history: we resync it
    PEER_NEWER = "peer_newer"    # our current generation is in the peer's history: it resyncs us
    DIVERGED = "diverged"        # both moved on from a common ancestor: split brain
    UNKNOWN = "unknown"          # no common history: a full resync, direction chosen by rules


HISTORY_LIMIT = 32
"""How many generations a node remembers (current included)."""


@dataclasses.dataclass(frozen=True)
class Generation:
    """One period of a data lineage: starts when a node becomes primary without its peer."""

    id: str            # random 64-bit id, 16 hex digits
    created_at: float  # Unix time, for operators; never used to decide anything


@dataclasses.dataclass(frozen=True)
class GenerationHistory:
    """A node's lineage: its current generation and its ancestors, newest first.

    ``changes_base`` is the generation that was current when the changed set was last cleared
    (the last point where the mirror was in sync): the recorded changes cover everything since
    then. ``None`` means the changed set proves nothing (never synced).
    """

    current: Generation | None = None
    history: tuple[Generation, ...] = ()
    changes_base: str | None = None

    def ids(self) -> list[str]:
        """Every known generation id, newest first, current included."""
        head = [self.current.id] if self.current else []
        return head + [g.id for g in self.history]

    def with_new(self, generation: Generation, limit: int = HISTORY_LIMIT) -> GenerationHistory:
        """This lineage after ``generation`` started on top of it (oldest entries drop off)."""
        head = (self.current,) if self.current else ()
        return dataclasses.replace(self, current=generation,
                                   history=(head + self.history)[: max(limit - 1, 0)])

    def to_json(self) -> dict:
        """Plain data for the journal and for the wire."""
        return {"current": dataclasses.asdict(self.current) if self.current else None,
                "history": [dataclasses.asdict(g) for g in self.history],
                "changes_base": self.changes_base}

    @classmethod
    def from_json(cls, data: object) -> GenerationHistory:
        """Inverse of :meth:`to_json`. The data may come from the peer: anything but the exact
        shape raises ValueError saying what is wrong, never another exception."""
        if not isinstance(data, dict) or set(data) - {"current", "history", "changes_base"}:
            raise ValueError("generation history: expected an object with current, history, changes_base")
        history = data.get("history", ())
        if not isinstance(history, (list, tuple)) or len(history) > HISTORY_LIMIT:
            raise ValueError(f"generation history: history must be a list of at most {HISTORY_LIMIT}")
        base = data.get("changes_base")
        if base is not None and not _is_id(base):
            raise ValueError("generation history: changes_base must be null or a generation id")
        current = data.get("current")
        return cls(current=_generation(current) if current else None,
                   history=tuple(_generation(g) for g in history), changes_base=base)


def _is_id(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 64


def _generation(data: object) -> Generation:
    """One generation from plain data, checked (see :meth:`GenerationHistory.from_json`)."""
    if not isinstance(data, dict) or set(data) != {"id", "created_at"} or not _is_id(data["id"]) \
            or isinstance(data["created_at"], bool) or not isinstance(data["created_at"], (int, float)):
        raise ValueError("generation history: a generation must be {\"id\": str, \"created_at\": number}")
    return Generation(data["id"], float(data["created_at"]))


def new_generation_id() -> str:
    """A random 64-bit id as 16 hex digits."""
    return f"{secrets.randbits(64):016x}"


def make_generation() -> Generation:
    """A fresh generation stamped now."""
    return Generation(new_generation_id(), time.time())


def compare(local: GenerationHistory, peer: GenerationHistory) -> Relation:
    """How local data relates to the peer's (pure; see the table in docs/journal.md).

    Relies on one rule kept by every caller: a node changes its data outside the mirror only
    after starting a new generation, so equal current ids mean equal data.
    """
    if local.current is None or peer.current is None:
        return Relation.UNKNOWN
    if local.current.id == peer.current.id:
        return Relation.SAME
    local_ids, peer_ids = local.ids(), peer.ids()
    if peer.current.id in local_ids:
        return Relation.LOCAL_NEWER
    if local.current.id in peer_ids:
        return Relation.PEER_NEWER
    if set(local_ids) & set(peer_ids):
        return Relation.DIVERGED
    return Relation.UNKNOWN


def common_generation(local: GenerationHistory, peer: GenerationHistory) -> str | None:
    """The newest generation id both lineages contain, or ``None``."""
    peer_ids = set(peer.ids())
    return next((gid for gid in local.ids() if gid in peer_ids), None)


def changes_cover(side: GenerationHistory, since: str) -> bool:
    """True when ``side``'s changed set holds every change it made after generation ``since``.

    Either ``side`` is still at ``since`` (no new generation, so no change of its own), or its
    changed set was last cleared at ``since`` or at an ancestor of it.
    """
    ids = side.ids()
    if not ids or since not in ids:
        return False
    if ids[0] == since:
        return True
    return side.changes_base in ids and ids.index(side.changes_base) >= ids.index(since)


def incremental_possible(local: GenerationHistory, peer: GenerationHistory) -> bool:
    """True when the union of both changed sets is all that differs between the two copies.

    Holds for LOCAL_NEWER, PEER_NEWER and DIVERGED when both sides' changes reach back to the
    common generation; SAME needs nothing; UNKNOWN always needs a full resync.
    """
    common = common_generation(local, peer)
    return common is not None and changes_cover(local, common) and changes_cover(peer, common)
