"""Which outdated-copy marks a node asks the witness for (pure; :mod:`quorum`, "Outdated copies").

A node asks, with the tick's witness request and before deciding, for the marks its decision will
need: ``decide()`` lets a node act alone without its peer only once the answer marks the peer's
copy outdated (:func:`decide._unrenewed`). Asking in the same request makes that cost no extra
round trip. A mark asked for and not used (the decision, made after the answer, held back) only
makes the peer wait for this node or an operator after a later loss of this one: never a lost write.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Set

from hamirror.cluster.decide import decide, uses_silence
from hamirror.cluster.states import NodeState
from hamirror.cluster.view import MirrorHealth, ModuleView, PeerView
from hamirror.journal.generations import Relation


def asks_to_outdate(view: ModuleView) -> bool:
    """Whether the peer's copy must be (or stay) marked outdated: this node is ALONE, or this
    tick's decision makes it ALONE beside a heard peer, or it does not hear its peer and, were the
    witness to allow it, this tick's decision would act alone."""
    if view.state is NodeState.ALONE:
        return True
    if view.peer.alive:
        # Beside a heard peer that cannot take over (stopped, stale, or WAIT beside this node's
        # lease), a primary goes on alone with no mark needed; asked anyway, the mark keeps that
        # peer from being vouched for later on a copy without what this node acknowledges alone.
        return decide(dataclasses.replace(view, peer_outdated=True)).state is NodeState.ALONE
    allowed = dataclasses.replace(view, peer=PeerView(), relation=Relation.UNKNOWN, quorum=True,
                                  renewed=True, peer_outdated=True)
    return uses_silence(allowed, decide(allowed))


def yields_beside(state: NodeState, peer: PeerView) -> bool:
    """The handshake's first half: whether a node in ``state`` that hears ``peer`` records, then
    advertises, that the peer may act alone beside it (``peer_led``; :func:`decide._unyielded`
    is the second half). WAIT, STOP, or SECOND beside a peer that is not primary: the peer may
    promote, or go on alone, beside it with no lease, so the witness would not know, and a later
    vouch for this copy ("it held the lease last") would set the peer's writes aside."""
    beside = state in (NodeState.WAIT, NodeState.STOP) or (state is NodeState.SECOND and not peer.is_primary)
    return peer.alive and beside


def clears_outdated(view: ModuleView) -> bool:
    """Whether both copies are equal again: a primary mirroring synchronously to an up-to-date
    SECOND, so no mark on this module is true any more."""
    return (view.state is NodeState.PRIM and view.mirror is MirrorHealth.STREAMING
            and view.peer.is_synced_second)


ORPHANS_PER_REQUEST = 32   # marks of removed modules cleared by one witness request (one datagram)


def orphans(marked: Set[str], ours: Collection[str], peers: Collection[str] | None) -> set[str]:
    """The witness's marks to clear as marks of modules that neither node runs (removed from both):
    nothing else ever clears them, so they would mark a copy of a module added again later under
    that name, and count against the witness's cap (``quorum.MAX_MARKS``: beyond it, no new mark
    is recorded). ``peers``: the modules the peer runs, heard now (None: not heard). Only when both
    nodes run the same modules: in the middle of a rolling change, a module gone here may still
    run there, its copy marked for a reason. At most :data:`ORPHANS_PER_REQUEST`, so that a
    request stays one datagram (the rest go with the next ones)."""
    if peers is None or set(peers) != set(ours):
        return set()
    return set(sorted(name for name in marked if name not in ours)[:ORPHANS_PER_REQUEST])
