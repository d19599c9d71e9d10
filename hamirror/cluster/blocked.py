"""The verdict on a primary's blocked mount while an action sequence runs.

No decision is made while a module's sequence runs: :func:`~hamirror.cluster.decide.decide` sees
one settled state at a time. A mount that loses its peer in the middle of one (a swap's second
half, a restart, a takeover) blocks the application's writes until a verdict, and whatever in the
sequence writes (``start_prim``, ``stop_prim``) waits with them, until its script's timeout or the
mount's ``block_timeout`` (campaigns 4004 and 4010: 60 s without service, for a partition that had
healed after 6 s). Two verdicts need no decision, so the agent makes them beside the sequence,
as ``decide()`` makes them for a settled primary:

- **GRANT** (``_fenced``'s grant): the peer is heard, is not primary and is not about to take
  over, and it is stopped or its copy is stale (it saw our mount blocked and cleared its flag),
  nor does it hold newer or diverged data. Nothing can be acknowledged on its side, so the mount
  goes ALONE, recording what the peer misses for the resync; the mount starts the new generation.
- **REFUSE** (the step-down's first action): the witness refuses this node and the peer is not
  heard: the peer may take over. Nothing was acknowledged on the blocked mount.

Anything else waits for the sequence to end: going on alone over an unheard peer needs its fence
script and the witness's mark of the peer's copy, which belong to a decision.
"""

from __future__ import annotations

import enum

from hamirror.cluster.states import NodeState
from hamirror.cluster.view import PeerView
from hamirror.journal.generations import Relation


class Blocked(enum.Enum):
    GRANT = "grant"
    REFUSE = "refuse"


def peer_stands_aside(peer: PeerView, relation: Relation) -> bool:
    """The peer is heard and cannot be, or become, primary with data of its own: stopped, or its
    copy stale, and not about to take over at a timeout (``leaving``)."""
    return (peer.alive and not peer.is_primary and not peer.leaving
            and relation not in (Relation.PEER_NEWER, Relation.DIVERGED)
            and (peer.state is NodeState.STOP or not peer.uptodate))


def verdict(peer: PeerView, quorum: bool | None, relation: Relation, fenced: bool,
            staying_primary: bool) -> Blocked | None:
    """What to do now for a module whose sequence runs on (or towards) a primary state; ``fenced``:
    a mount blocks writes waiting for a verdict; ``staying_primary``: the sequence's target is a
    primary state (a step-down under way refuses writes itself, and is never granted: a grant
    would open a refused mount again). None: nothing before the sequence ends."""
    if quorum is False and (not peer.alive or peer.silent):
        return Blocked.REFUSE
    if fenced and staying_primary and peer_stands_aside(peer, relation):
        return Blocked.GRANT
    return None
