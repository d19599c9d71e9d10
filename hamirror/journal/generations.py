"""Generation history: who is newer after a reconnection (see docs/architecture.md)."""

from __future__ import annotations

import enum


class Relation(enum.Enum):
    """How this node's data relates to the peer's, from both generation histories."""

    SAME = "same"                # same current generation: nothing to copy
    LOCAL_NEWER = "local_newer"  # peer's current generation is in our history: we resync it
    PEER_NEWER = "peer_newer"    # our current generation is in the peer's history: it resyncs us
    DIVERGED = "diverged"        # both moved on from a common ancestor: split brain
    UNKNOWN = "unknown"          # no common history: a full resync, direction chosen by rules
