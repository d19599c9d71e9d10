"""Per-module node states and the transitions allowed between them.

A leaf module: it imports nothing of the package, so every layer (agent, status, CLI, HTTP)
can name states without pulling in the cluster machinery. Design §2 explains the states.
"""

from __future__ import annotations

import enum


class NodeState(enum.Enum):
    """State of one module on one node; the value is what ``hamirror status --json`` prints."""

    STOP = "STOP"      # module stopped here
    WAIT = "WAIT"      # started, waiting for the peer or for up-to-date data (may receive a resync)
    SECOND = "SECOND"  # up-to-date secondary, receiving every write
    PRIM = "PRIM"      # primary with a live secondary
    ALONE = "ALONE"    # primary whose peer is gone: changes are recorded for a later resync

    @property
    def is_primary(self) -> bool:
        """True where the application runs and owns the data (PRIM or ALONE)."""
        return self in PRIMARY_STATES


PRIMARY_STATES = frozenset({NodeState.PRIM, NodeState.ALONE})

# Allowed changes of state (staying in the same state is always allowed).
# WAIT never jumps to PRIM: a primary without a synchronised peer is ALONE until a resync ends.
# SECOND -> PRIM exists only for the swap hand-over, where the old primary is already SECOND.
TRANSITIONS: dict[NodeState, frozenset[NodeState]] = {
    NodeState.STOP: frozenset({NodeState.WAIT}),
    NodeState.WAIT: frozenset({NodeState.STOP, NodeState.SECOND, NodeState.ALONE}),
    NodeState.SECOND: frozenset({NodeState.STOP, NodeState.WAIT, NodeState.PRIM, NodeState.ALONE}),
    NodeState.PRIM: frozenset({NodeState.STOP, NodeState.WAIT, NodeState.SECOND, NodeState.ALONE}),
    NodeState.ALONE: frozenset({NodeState.STOP, NodeState.WAIT, NodeState.PRIM}),
}


class TransitionError(ValueError):
    """A state change that the transition table forbids."""


def is_allowed(current: NodeState, target: NodeState) -> bool:
    """Whether ``current -> target`` is in the table (staying put is always allowed)."""
    return current is target or target in TRANSITIONS[current]


def check_transition(current: NodeState, target: NodeState) -> None:
    """Raise :class:`TransitionError` unless ``current -> target`` is allowed."""
    if not is_allowed(current, target):
        raise TransitionError(f"transition {current.value} -> {target.value} is not allowed")
