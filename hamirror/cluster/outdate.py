"""Which outdated-copy marks a node asks the witness for (pure; :mod:`quorum`, "Outdated copies").

A node asks, with the tick's witness request and before deciding, for the marks its decision will
need: ``decide()`` lets a node act alone without its peer only once the answer marks the peer's
copy outdated (:func:`decide._unrenewed`). Asking in the same request makes that cost no extra
round trip. A mark asked for and not used (the decision, made after the answer, held back) only
makes the peer wait for this node or an operator after a later loss of this one: never a lost write.
"""

from __future__ import annotations

import dataclasses

from hamirror.cluster.decide import decide, uses_silence
from hamirror.cluster.states import NodeState
from hamirror.cluster.view import MirrorHealth, ModuleView, PeerView
from hamirror.journal.generations import Relation


def asks_to_outdate(view: ModuleView) -> bool:
    """Whether the peer's copy must be (or stay) marked outdated: this node is ALONE, or it does
    not hear its peer and, were the witness to allow it, this tick's decision would act alone."""
    if view.state is NodeState.ALONE:
        return True
    if view.peer.alive:
        return False
    allowed = dataclasses.replace(view, peer=PeerView(), relation=Relation.UNKNOWN, quorum=True,
                                  renewed=True, peer_outdated=True)
    return uses_silence(allowed, decide(allowed))


def clears_outdated(view: ModuleView) -> bool:
    """Whether both copies are equal again: a primary mirroring synchronously to an up-to-date
    SECOND, so no mark on this module is true any more."""
    return (view.state is NodeState.PRIM and view.mirror is MirrorHealth.STREAMING
            and view.peer.is_synced_second)
