"""The verdict on a primary's blocked mount while an action sequence runs.

No decision is made while a module's sequence runs: :func:`~hamirror.cluster.decide.decide` sees
one settled state at a time. A mount that loses its peer in the middle of one (a swap's second
half, a restart, a takeover) blocks the application's writes until a verdict, and whatever in the
sequence writes (``start_prim``, ``stop_prim``) waits with them, until its script's timeout or the
mount's ``block_timeout`` (campaigns 4004 and 4010: 60 s without service, for a partition that had
healed after 6 s). A blocked mount acknowledges nothing, so waiting is always safe; these verdicts
only end the wait early, each as ``decide()`` would end it for a settled primary:

- **GRANT** (``_fenced``'s grant): the peer is heard, is not primary and is not about to take
  over, and it is stopped or its copy is stale (it saw our mount blocked and cleared its flag),
  nor does it hold newer or diverged data. Nothing can be acknowledged on its side, so the mount
  goes ALONE, recording what the peer misses for the resync; the mount starts the new generation.
- **REFUSE**: writes refused, so that the sequence fails at once and a decision comes:
  - the witness refuses and the peer is not heard (a settled primary steps down, writes refused
    first). A *promotion* refuses only when the witness heard the peer holding the lease just
    now (``peer_leased``: it is alive, cut from us): a swap's new primary whose old primary died
    before releasing the lease waits for that lease to lapse instead (campaign 4104: refused at
    once, it stepped down to WAIT, where it may not take over by itself, and waited for the dead
    node to boot);
  - the peer is not heard for a full timeout and the quorum does not refuse (granted, or no
    witness): the decision that follows grants ALONE with what only a decision does (the fence
    script, the witness's mark of the peer's copy) and starts the application again;
  - a promotion whose peer is heard primary: it took over meanwhile; yield.

Anything else waits for the sequence to end.
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


def verdict(peer: PeerView, quorum: bool | None, relation: Relation, *, fenced: bool, staying_primary: bool,
            promoting: bool = False, peer_leased: bool = False, listened: bool = True) -> Blocked | None:
    """What to do now for a module whose sequence runs on (or towards) a primary state. ``fenced``:
    a mount blocks writes waiting for a verdict; ``staying_primary``: the sequence's target is a
    primary state (a step-down under way refuses writes itself, and is never granted: a grant
    would open a refused mount again); ``promoting``: this node is not primary yet;
    ``peer_leased``, ``listened``: as in :class:`~hamirror.cluster.view.ModuleView`. None: nothing
    before the sequence ends."""
    return reasoned_verdict(peer, quorum, relation, fenced=fenced, staying_primary=staying_primary,
                            promoting=promoting, peer_leased=peer_leased, listened=listened)[0]


def reasoned_verdict(peer: PeerView, quorum: bool | None, relation: Relation, *, fenced: bool,
                     staying_primary: bool, promoting: bool = False, peer_leased: bool = False,
                     listened: bool = True) -> tuple[Blocked | None, str]:
    """:func:`verdict`, with the reason of the rule that gave it (for the log and the timeline)."""
    if not peer.alive or peer.silent:
        if quorum is False and (not promoting or peer_leased):
            return Blocked.REFUSE, ("the witness refuses and the peer is not heard: refusing writes now, as stepping "
                                    "down will")
        if quorum is not False and fenced and staying_primary and not peer.alive and listened:
            return Blocked.REFUSE, ("writes are blocked and the peer is lost: refusing them now, so that the decision "
                                    "to go on alone comes")
        return None, ""
    if promoting and peer.is_primary:
        return Blocked.REFUSE, "the peer is primary: refusing writes now, yielding to it"
    if fenced and staying_primary and listened and peer_stands_aside(peer, relation):
        # listened: not from heartbeats queued while this agent was frozen
        return Blocked.GRANT, ("writes are blocked and the peer's copy is stale: granting ALONE now, as the verdict "
                               "after it would")
    return None, ""
