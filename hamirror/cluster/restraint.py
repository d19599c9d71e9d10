"""Maintenance and flap damping: which automatic decisions are held back, and what never is.

Pure, like :mod:`decide`: :func:`restrain` takes the automatic decision of one tick and either
lets it through (tagged with its :class:`Failover` kind, which the agent counts) or replaces it
by staying where the module is, with a warning that says what was held back and why.

- **Maintenance** (``view.maintenance``) holds every automatic decision that starts, stops or
  moves the application or its address (takeovers, step-downs, checker restarts, remounts,
  starting the application after a repair). The data path's own rules go on: fencing verdicts
  (a blocked mount is granted ALONE only when the peer cannot be primary), a SECOND marking its
  copy stale, resyncs, ALONE <-> PRIM, and the two halves of an operator's swap.
- **Damping** (``view.failovers.damped``) holds failovers only: takeovers, hand-overs and
  step-downs after a failure. Checker restarts and remounts in place go on.
- **Standby** (``view.standby``, ``hamirror node standby``) holds every automatic promotion on
  this node (a takeover, a cold start, a return from WAIT): the operator keeps the service off
  it. The halves of a swap typed by an operator, and a forced ``prim``, still go through.
- **Data safety first.** Neither holds back a primary that must stop acknowledging writes: its
  peer is primary, or it is cut off from its peer and the witness refuses. It steps down as
  always (writes refused first): an application left running there would write data that is
  set aside at the next resync, and a mount already ALONE cannot refuse writes in place.
"""

from __future__ import annotations

import dataclasses

from hamirror.cluster.actions import Decision, Failover, touches_service
from hamirror.cluster.states import NodeState
from hamirror.cluster.view import ModuleView, SwapPhase

S = NodeState

MAINTENANCE = "maintenance (`hamirror maintenance off {module}` to resume)"
STANDBY = "this node is in standby (`hamirror node online` to allow the service here again)"
DAMPED = ("failover damped: {recent} failover(s) within {window:g} s, limit {max} "
          "(`hamirror clear {module}` to allow failovers again)")


def failover_kind(view: ModuleView, decision: Decision) -> Failover | None:
    """Whether an automatic decision moves the application between nodes, and how."""
    if decision.state is view.state or in_swap(view):
        return None
    if view.state is S.SECOND and decision.state.is_primary:
        return Failover.TAKEOVER
    if view.state.is_primary and decision.state is S.WAIT:
        return Failover.STEP_DOWN
    if view.state is S.PRIM and decision.state is S.SECOND:
        return Failover.HAND_OVER
    return None


def in_swap(view: ModuleView) -> bool:
    """A swap hand-shake is under way: its steps carry out an operator's command."""
    return view.swap is SwapPhase.HANDOVER or (
        view.peer.alive and view.peer.swap in (SwapPhase.REQUEST, SwapPhase.HANDOVER))


def must_stop_acknowledging(view: ModuleView) -> bool:
    """This primary's writes may be lost or diverge: its peer is primary, or it is cut off from
    its peer and the witness refuses (the peer may get the lease and take over)."""
    return view.state.is_primary and (view.peer.is_primary or (not view.peer.alive and view.quorum is False))


def restrain(view: ModuleView, decision: Decision) -> Decision:
    """The automatic decision as maintenance and damping allow it (tagged with its failover kind)."""
    kind = failover_kind(view, decision)
    decision = dataclasses.replace(decision, failover=kind)
    if must_stop_acknowledging(view):
        return decision
    if view.standby and not in_swap(view) and decision.state.is_primary and not view.state.is_primary:
        return _hold(view, decision, STANDBY)
    if view.maintenance and not in_swap(view) and any(map(touches_service, decision.actions)):
        return _hold(view, decision, MAINTENANCE.format(module=view.module))
    if view.failovers.damped and kind is not None:
        f = view.failovers
        return _hold(view, decision, DAMPED.format(recent=f.recent, window=f.window, max=f.max,
                                                   module=view.module))
    return decision


def _hold(view: ModuleView, decision: Decision, why: str) -> Decision:
    """Stay where the module is, doing nothing; say what was held back."""
    what = "; ".join(decision.warnings) or (
        f"{view.state.value} -> {decision.state.value}" if decision.state is not view.state
        else ", ".join(type(action).__name__ for action in decision.actions))
    return Decision(view.state, (), SwapPhase.NONE, (f"{why}: held back: {what}",), held=True)
