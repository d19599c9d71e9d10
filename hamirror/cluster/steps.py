"""Action sequences shared by several rules: entering and leaving each role.

Kept apart from :mod:`decide` so that the rules read as "when X, do <step>", and each step's
order (what must be stopped before what is started) is written exactly once.
"""

from __future__ import annotations

from hamirror.cluster.actions import (
    Action, AddVip, Decision, Fence, Flush, KillApp, MarkUpToDate, MountReplicated, NewGeneration, Persist,
    RefuseWrites, RemoveVip, RunScript, StartReceiver, StopReceiver, Unmount,
)
from hamirror.cluster.states import NodeState
from hamirror.cluster.view import ModuleView, SwapPhase


TAKEOVER_GRACE = 1.0   # seconds a receiver gets to stop when this node becomes primary
STOP_SECOND = RunScript("stop_second")
STOP_PRIM = RunScript("stop_prim")


def stops_service(action: Action) -> bool:
    """Part of a primary's safety prefix: what must be done before it may say it is no longer
    primary (writes refused, application stopped, VIP removed, data flushed, unmounted)."""
    return isinstance(action, (RefuseWrites, KillApp, RemoveVip, Flush, Unmount)) or action == STOP_PRIM


def state_after(current: NodeState, target: NodeState, actions: tuple[Action, ...], done: int) -> NodeState:
    """The state to advertise once the first ``done`` of ``actions`` succeeded (and the next one
    failed). A primary leaving its role says so only once its safety prefix is complete: the peer
    promotes on it, and a failed ``stop_prim`` or VIP removal would leave the application or the
    address up beside the new primary. Any other sequence advertises its target at once (a failed
    promotion says primary, on which the peer never promotes)."""
    if done >= len(actions) or not current.is_primary or target.is_primary:
        return target
    prefix = max((i for i, x in enumerate(actions) if stops_service(x)), default=-1)
    return target if done > prefix else current


def stay(view: ModuleView, *actions: Action, warning: str | None = None,
         swap: SwapPhase = SwapPhase.NONE) -> Decision:
    """Keep the current state, optionally running ``actions``."""
    return Decision(view.state, tuple(actions), swap, (warning,) if warning else ())


def move(target: NodeState, *actions: Action, warning: str | None = None,
         swap: SwapPhase = SwapPhase.NONE) -> Decision:
    """Go to ``target`` through ``actions`` (decide() adds the Persist in front)."""
    return Decision(target, tuple(actions), swap, (warning,) if warning else ())


def _leave_receiving(view: ModuleView) -> tuple[Action, ...]:
    """Stop being a secondary/receiver before the application starts here."""
    script = (STOP_SECOND,) if view.state is NodeState.SECOND else ()
    return script + (StopReceiver(grace=TAKEOVER_GRACE),)


def _stop_app(force: bool) -> tuple[Action, ...]:
    """Stop the application and release the VIP and the mount; ``force`` never waits."""
    if force:
        return (KillApp(), RemoveVip(), Unmount(force=True))
    return (STOP_PRIM, RemoveVip(), Flush(), Unmount())


def fence_first(view: ModuleView) -> tuple[Action, ...]:
    """The fence script, when configured and the peer is not heard: before acting alone."""
    if not view.fence_script or view.peer.alive:
        return ()
    return (Fence(takeover=not view.state.is_primary),)


def promote_alone(view: ModuleView, warning: str | None = None) -> Decision:
    """WAIT/SECOND -> ALONE: primary without a synced peer, so a new generation starts first."""
    mark = () if view.uptodate else (MarkUpToDate(True),)
    return move(NodeState.ALONE, *fence_first(view), *_leave_receiving(view), NewGeneration(), *mark,
                MountReplicated(peer_connected=False), AddVip(), RunScript("start_prim"),
                warning=warning)


def promote_handover(view: ModuleView) -> Decision:
    """SECOND -> PRIM at the end of a swap: the old primary is already an up-to-date SECOND."""
    return move(NodeState.PRIM, *_leave_receiving(view), MountReplicated(peer_connected=True),
                AddVip(), RunScript("start_prim"))


def hand_over(view: ModuleView, warning: str | None = None) -> Decision:
    """PRIM -> SECOND, first half of a swap: stop, flush, unmount, then ask the peer to lead
    while the receiver starts (the peer's mount waits for it: the halves overlap)."""
    return move(NodeState.SECOND, *_stop_app(force=False), StartReceiver(listening=False),
                RunScript("start_second"), warning=warning, swap=SwapPhase.HANDOVER)


def step_down(view: ModuleView, warning: str) -> Decision:
    """PRIM/ALONE -> WAIT without touching data (split brain, lost quorum, the peer took over).
    Writes are refused first: nothing is acknowledged from the moment the decision is made."""
    return move(NodeState.WAIT, RefuseWrites(), RemoveVip(), STOP_PRIM, Unmount(force=True),
                StartReceiver(), warning=warning)


def leave_second(view: ModuleView, *actions: Action, warning: str | None = None) -> Decision:
    """SECOND -> WAIT: the application does not run, the receiver keeps listening."""
    return move(NodeState.WAIT, STOP_SECOND, *actions, warning=warning)


def enter_second() -> Decision:
    """WAIT -> SECOND once the resync from the primary finished."""
    return move(NodeState.SECOND, MarkUpToDate(True), RunScript("start_second"))


def start() -> Decision:
    """STOP -> WAIT: listen for the peer; the next ticks choose the role."""
    return move(NodeState.WAIT, StartReceiver())


def stop(view: ModuleView, force: bool) -> Decision:
    """Any state -> STOP. ``force`` (forcestop) skips graceful scripts and never waits on the peer."""
    if view.state.is_primary:
        return move(NodeState.STOP, *_stop_app(force))
    script = (STOP_SECOND,) if view.state is NodeState.SECOND and not force else ()
    return move(NodeState.STOP, *script, StopReceiver())


def undone_by_deciding_again(done: tuple[Action, ...], promoting: bool) -> bool:
    """Whether deciding again undoes ``done``, so that a stall there may drop the decision (made
    from a view the peer may have outdated meanwhile): the record (put back), and in a promotion
    also a secondary's ``stop_second`` and its receiver stopped (the next tick restarts it; a
    takeover's 1 s receiver grace is a window). Past its first commitment (a new generation, a
    fence, the mount, the VIP, the application) a sequence is finished: half a takeover is worse."""
    def undone(x: Action) -> bool:
        return isinstance(x, Persist) or (promoting and (isinstance(x, StopReceiver) or x == STOP_SECOND))
    return all(map(undone, done))
