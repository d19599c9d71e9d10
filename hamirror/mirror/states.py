"""A mount's mirror states and the transitions allowed between them.

A leaf module, as ``hamirror/cluster/states.py`` is for node states: it imports nothing of the
package, so the agent, status and CLI can name a mount's state without the data path. Every
change of :attr:`Replicator.state <hamirror.mirror.replicator.Replicator.state>` goes through
one method that checks it against :data:`TRANSITIONS` (tests/test_mirror_states.py drives every
entry point from every state and holds the table to what the replicator does).
"""

from __future__ import annotations

import enum


class MirrorState(str, enum.Enum):
    """What a mount does with its peer; the value is what ``status.json`` and the journal hold."""

    PRIM = "PRIM"              # replicating to a live peer
    SYNCING = "SYNCING"        # online resync to a returning peer, live operations streamed too
    ALONE = "ALONE"            # peer gone: serving locally and recording changes
    FENCED = "FENCED"          # peer stopped acknowledging: mutating calls wait for the agent's verdict
    REFUSED = "REFUSED"        # the agent (or the fence timeout) refused ALONE: mutating calls fail (EIO)
    STANDALONE = "STANDALONE"  # replication off (benchmarks, a module without a peer), or not decided yet


# What the agent persists for a copy that follows its peer (agent/journal_info.py): not a state a
# mount runs in; a mount started over it streams (nothing says its peer missed anything).
REPLICA = "SECOND"

STREAMING = (MirrorState.PRIM, MirrorState.SYNCING)
BLOCKED = (MirrorState.FENCED, MirrorState.REFUSED)
# States in which data writes share the ordering lock (SYNCING changes the pending set per write).
SHARING = (MirrorState.PRIM, MirrorState.ALONE, MirrorState.STANDALONE)

_S = MirrorState
# Allowed changes of state (staying in the same state is always allowed: ALONE is persisted
# again when more is recorded, REFUSED when refused again).
# - STANDALONE is where a mount starts before its journal is read: it stays (no peer), or the
#   journal sends it ALONE (takeover, or ALONE before) or FENCED (it stopped blocked or crashed
#   while streaming). A mount that reaches its peer starts in PRIM.
# - A lost peer: ALONE (no fencing, or the agent granted it first) or FENCED (its verdict awaited).
# - REFUSED: the agent's refusal, from the streaming and blocked states (ALONE and STANDALONE
#   ignore it), or a lost peer whose missed changes the journal cannot record.
# - SYNCING only from ALONE (the resync needs ALONE); it ends in PRIM once the peer acknowledged
#   RESYNC_DONE, or like PRIM when the link is lost.
# - REFUSED -> ALONE: the agent's verdict after the fence timeout refused by itself, or the link
#   loss of a non-fencing mount that the agent refused first.
TRANSITIONS: dict[MirrorState, frozenset[MirrorState]] = {
    _S.STANDALONE: frozenset({_S.ALONE, _S.FENCED}),
    _S.PRIM: frozenset({_S.ALONE, _S.FENCED, _S.REFUSED}),
    _S.SYNCING: frozenset({_S.PRIM, _S.ALONE, _S.FENCED, _S.REFUSED}),
    _S.ALONE: frozenset({_S.SYNCING}),
    _S.FENCED: frozenset({_S.ALONE, _S.REFUSED}),
    _S.REFUSED: frozenset({_S.ALONE}),
}


def is_allowed(current: MirrorState, target: MirrorState) -> bool:
    """Whether ``current -> target`` is in the table (staying put is always allowed)."""
    return current is target or target in TRANSITIONS[current]
