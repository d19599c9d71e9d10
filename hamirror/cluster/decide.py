"""The per-module state machine: a pure function from a :class:`ModuleView` to a :class:`Decision`.

Operator commands are looked up in a table keyed by (state, command); what no command settles is
decided by one small rule function per state. The rules that protect data (design §2):

- only up-to-date data is promoted on its own; ``prim`` forces it, with a warning;
- a primary never appears while the peer is primary; if both are (a healed partition), exactly
  one steps down (the newer-by-history, else the ``default_primary``, keeps running);
- no data moves towards a peer that is newer or on a DIVERGED history without the operator;
- a witness that refuses (``quorum is False``) stops takeovers and demotes an isolated primary;
  a SECOND that does not hear its primary while the witness hears it holding the lease marks its
  copy stale, so that the primary, which may still hear it (a one-way loss), goes on alone;
  a WAIT node with up-to-date data leads again without hearing its peer only when the witness
  grants it the lease and vouches that the peer has not held it since this node did; a node acts
  alone without hearing its peer only once the witness marks the peer's copy outdated, and never
  takes over by itself while it marks its own (:func:`_unrenewed`, ``view.outdated``);
- I/O fencing: a primary whose mount lost the peer (FENCED) goes on alone only once the peer
  cannot be primary: heard in a non-primary state with its up-to-date flag cleared (a SECOND
  clears it when it sees the primary fenced), or not heard with the witness lease held, the
  fence script run, or (availability-first, no witness, no fence script) after a full
  heartbeat timeout of silence; a primary that finds its peer primary refuses writes first;
- the decision follows what the mounts really do (``view.mirror``): a dead mount is remounted,
  a mount ALONE under PRIM moves the module to ALONE;
- maintenance and flap damping hold automatic decisions back, never a data-safety one
  (:mod:`restraint`); operator commands are not held;
- the peer's silence proves nothing until this node has listened for a full heartbeat timeout
  since it stalled or started (``view.listened``), nor while the replication link shows the peer
  alive (``view.linked``: heartbeats blocked, a wall clock off): no takeover, grant, fence or new generation
  rests on it before (:func:`_deaf`, applied to every decision, whatever rule made it); and when
  both are primary after one stalled, the one that took over keeps running (the woken one,
  which has not listened yet, steps down).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from hamirror.cluster import blocked, restraint, steps
from hamirror.cluster.actions import (
    Action, AddVip, Decision, Fence, ForgetHistory, MarkUpToDate, MountReplicated, NewGeneration, Persist,
    RefuseWrites, RemountDataPath, RestartApp, RunScript, SetMirroring, StartResync,
)
from hamirror.cluster.states import NodeState, check_transition
from hamirror.cluster.view import Command, MirrorHealth, ModuleView, PeerView, ResyncStatus, SwapPhase
from hamirror.journal.generations import Relation

S = NodeState
M = MirrorHealth
Rule = Callable[[ModuleView], Decision | None]

SPLIT_BRAIN = ("split brain: both nodes hold data the other lacks; nothing is merged. Keep the "
               "data of one node: run `hamirror second MODULE` on the other")
MAY_LOSE = "forced primary: data written on the peer and not replicated here may be lost"
NO_QUORUM = "the witness refuses: this node may not act alone"
UNRENEWED = ("the peer is not heard and the witness did not answer: not acting alone on a lease that "
             "is not renewed")
UNMARKED = ("the peer is not heard and the witness has not recorded its copy as outdated: not acting "
            "alone before it has")
OUTDATED = ("the witness marks this copy outdated: the peer acted alone and what it acknowledged is not "
            "here; waiting for the peer (or `hamirror prim` here, losing those writes)")
PEER_ALIVE_ELSEWHERE = ("the peer is not heard here but is alive (the witness or the replication link hears it); "
                        "stop it or repair the network first")
FENCED_WAIT = ("writes are blocked: the peer stopped acknowledging; waiting for it to confirm that its "
               "copy is stale before going on alone")
PEER_FENCED = ("the primary lost its replication link to this node: marking this copy stale so that "
               "the primary may go on alone")
HANDED_OVER = ("the peer is not heard during a swap's hand-over: it may be promoting; not taking over "
               "on its silence (`hamirror prim` if it is really gone)")
PEER_LEASED = ("the primary is not heard, yet the witness refuses this node and hears the primary holding the "
               "lease (a one-way loss, or a partition): it may go on alone; marking this copy stale so that it does")
STALE_AFTER_RESYNC = ("the peer marked its copy stale after the resync to it ended (it lost this node's "
                      "heartbeats meanwhile): resyncing it again")
PEER_LEAVING = ("the peer has not heard this node for half a heartbeat timeout while this node hears it (a "
                "one-way loss): it will take over; stepping down first")
ALONE_UNDER_PRIM = "the mount is ALONE while the module was PRIM: now ALONE, a resync follows"
RESUMED = ("the witness grants the lease again and the peer has not held it since this node did: "
           "taking over again")
LINKED = ("the peer's heartbeats are lost but the replication link shows it alive: not acting alone "
          "(blocked heartbeats, or a clock far off)")
DEAF = ("this node stalled or just started: the peer's silence proves nothing until it has listened for "
        "a full heartbeat timeout; not acting alone meanwhile")
PEER_TOOK_OVER = ("the peer holds newer data (it took over while this node did not run): stepping down, "
                  "data kept as is; it leads and resyncs this node")
WOKE_STEP_DOWN = ("both nodes are primary and this node has just stalled (frozen, suspended or restarted): "
                  "the peer took over meanwhile; stepping down, data kept as is")


def decide(view: ModuleView) -> Decision:
    """Decide this tick's target state and actions for one module (pure; consumes the command)."""
    rule = COMMANDS.get((view.state, view.command)) if view.command is not Command.NONE else None
    decision = rule(view) if rule else None
    if decision is None:
        decision = automatic(view)
    decision = _unyielded(view, _unrenewed(view, _deaf(view, decision)))
    if decision.state is view.state:
        return decision
    check_transition(view.state, decision.state)
    return dataclasses.replace(decision, actions=(Persist(decision.state),) + decision.actions)


def automatic(view: ModuleView) -> Decision:
    """What the rules do on their own, as maintenance and flap damping allow (:mod:`restraint`)."""
    return restraint.restrain(view, AUTOMATIC[view.state](view))


def takes_over_at_timeout(view: ModuleView) -> bool:
    """Whether this node, which has not heard its primary for half a heartbeat timeout (and has
    listened, and sees no replication traffic from it either), would take over if the silence
    lasted: advertised in its heartbeats (``leaving``), so that a primary that still hears it (a
    one-way loss) steps down before the takeover rather than serve beside it."""
    peer = view.peer
    if view.state.is_primary or not (peer.is_primary and peer.silent and view.listened and not view.linked):
        return False
    lost = dataclasses.replace(view, peer=PeerView(), relation=Relation.UNKNOWN)
    return decide(lost).state.is_primary


def uses_silence(view: ModuleView, decision: Decision) -> bool:
    """Whether a decision acts as if the unheard peer could not be primary: a promotion, PRIM ->
    ALONE, a fence, a grant of ALONE to the mounts, a new generation."""
    if decision.state.is_primary and not view.state.is_primary:
        return True
    if view.state is S.PRIM and decision.state is S.ALONE:
        return True
    return any(map(_grants_alone, decision.actions))


def _grants_alone(action: Action) -> bool:
    return isinstance(action, (NewGeneration, Fence)) or action in (
        SetMirroring(False), MountReplicated(peer_connected=False), RemountDataPath(alone=True))


def _deaf(view: ModuleView, decision: Decision) -> Decision:
    """A node that has not listened a full timeout since it stalled (or started) stays where it is
    rather than act on a silence it did not hear: the peer may have taken over meanwhile. Nor does
    one whose replication link shows the peer alive: only its heartbeats are lost."""
    if view.peer.alive or (view.listened and not view.linked) or not uses_silence(view, decision):
        return decision
    return _stay_unsure(view, DEAF if not view.listened else LINKED)


def _unrenewed(view: ModuleView, decision: Decision) -> Decision:
    """A node that does not hear its peer acts on the witness's lease only if the witness answered
    this tick: a lease believed from earlier answers, which nobody renews, lapses, and then the
    peer takes over without the writes this node acknowledged alone (campaign 3009: a primary cut
    from its peer and the witness granted its blocked mount ALONE 0.6 s before its lease lapsed; 46
    acknowledged writes were lost). The blocked mount stays blocked; the lease lapses and the
    quorum rule steps this node down with nothing acknowledged, or the next answer renews it.
    And only once that answer marks the peer's copy outdated: else the peer, frozen or cut now,
    could take over later (this node frozen, cut from the witness or powered off by then) without
    what this node acknowledged alone (the double fault). The node asks for the mark with the
    request (:mod:`outdate`), so the mark normally comes in the same answer."""
    if view.peer.alive or view.quorum is not True or not uses_silence(view, decision):
        return decision
    if not view.renewed:
        return _stay_unsure(view, UNRENEWED)
    if not view.peer_outdated:
        return _stay_unsure(view, UNMARKED)
    return decision


UNYIELDED = ("the peer could still be vouched for by the witness: not acting alone beside it before it "
             "records that this node may lead, or the witness marks its copy outdated")


def _unyielded(view: ModuleView, decision: Decision) -> Decision:
    """Acting alone beside a heard, up-to-date peer needs no lease, so the witness would not know:
    that peer, cut later, could be vouched for ("it held the lease last") on a copy without what
    this node acknowledges alone. With a witness, wait until the peer advertises that it recorded
    ``peer_led`` (it is then never vouched for until SECOND or primary again), or until the
    witness marks its copy outdated. Not an operator's ``prim``, not a node already ALONE."""
    peer = view.peer
    if (not peer.alive or view.quorum is None or not peer.uptodate or peer.yielded
            or view.peer_outdated or view.state is S.ALONE or view.command is Command.PRIM
            or not any(map(_grants_alone, decision.actions))):
        return decision
    return _stay_unsure(view, UNYIELDED)


def _stay_unsure(view: ModuleView, why: str) -> Decision:
    """Stay where the module is, saying why the peer's silence is not acted on (an operator's
    command is named as refused)."""
    text = why if view.command is Command.NONE else f"`{view.command.value}` refused in {view.state.value}: {why}"
    return steps.stay(view, warning=text)


# --- operator commands ----------------------------------------------------------------------

def _refuse(reason: str) -> Rule:
    """A command that cannot apply in this state: warn and let the automatic rules run."""
    def rule(view: ModuleView) -> Decision:
        auto = automatic(view)
        text = f"`{view.command.value}` refused in {view.state.value}: {reason}"
        return dataclasses.replace(auto, warnings=(text,) + auto.warnings)
    return rule


def _force_prim(view: ModuleView) -> Decision:
    """`prim`: promote even stale data, unless that would make two primaries."""
    peer = view.peer
    if peer.is_primary:
        return _refuse("the peer is primary; use `hamirror swap`")(view)
    if not peer.alive and view.quorum is False:
        return _refuse(NO_QUORUM)(view)
    if not peer.alive and (view.linked or view.peer_asks):
        # Unheard here, but alive by another path: it may be promoting itself on our WAIT (one
        # way lost), and our lease would not stop it, since a node that hears its peer does not ask.
        return _refuse(PEER_ALIVE_ELSEWHERE)(view)
    quiet_peer = peer.state is S.STOP or (peer.state is S.WAIT and not peer.uptodate
                                          and not view.cold_start)
    if peer.alive and not quiet_peer:
        return _refuse(f"the peer ({peer.state.value if peer.state else '?'}) may take over; "
                       "stop it first")(view)
    # Behind, or cannot know: a WAIT node (it booted, or stepped down) whose peer is not heard
    # cannot tell what the peer wrote since; a SECOND's flag is live.
    unknowable = view.state is S.WAIT and not view.peer.alive
    behind = not view.uptodate or unknowable or view.outdated or view.relation is Relation.PEER_NEWER
    return steps.promote_alone(view, warning=MAY_LOSE if behind else None)


def _second_in_wait(view: ModuleView) -> Decision:
    """`second` in WAIT is the operator's consent to lose local data the peer does not have."""
    if view.relation not in (Relation.DIVERGED, Relation.LOCAL_NEWER):
        return automatic(view)
    return steps.stay(view, ForgetHistory(), MarkUpToDate(False),
                      warning="operator chose the peer's data: local changes will be overwritten")


def _request_swap(view: ModuleView) -> Decision:
    if view.uptodate and view.peer.alive and view.peer.state is S.PRIM:
        return steps.stay(view, swap=SwapPhase.REQUEST)
    return _refuse("needs an up-to-date SECOND with a live PRIM peer")(view)


def _swap_from_prim(view: ModuleView) -> Decision:
    if view.peer.is_synced_second and view.relation is not Relation.DIVERGED:
        return steps.hand_over(view)
    return _refuse("the peer is not an up-to-date SECOND")(view)


def _restart_app(view: ModuleView) -> Decision | None:
    """`restart`: stop_prim then start_prim; it also starts an application a repair left stopped
    (the operator's way to do it in maintenance, which holds the automatic start back)."""
    if _primary_common(dataclasses.replace(view, app_stopped=False)) is not None:
        return None                    # split brain, lost quorum, failed checker come first
    return steps.stay(view, RestartApp(counted=False))


COMMANDS: dict[tuple[NodeState, Command], Rule] = {
    (S.STOP, Command.START): lambda v: steps.start(),
    (S.STOP, Command.RESTART): lambda v: steps.start(),
    (S.WAIT, Command.PRIM): _force_prim,
    (S.SECOND, Command.PRIM): _force_prim,
    (S.WAIT, Command.SECOND): _second_in_wait,
    (S.SECOND, Command.SWAP): _request_swap,
    (S.PRIM, Command.SWAP): _swap_from_prim,
    (S.PRIM, Command.SECOND): _swap_from_prim,
    (S.PRIM, Command.RESTART): _restart_app,
    (S.ALONE, Command.RESTART): _restart_app,
    (S.STOP, Command.PRIM): _refuse("start the module first"),
    (S.PRIM, Command.PRIM): _refuse("this node is already primary"),
    (S.ALONE, Command.PRIM): _refuse("this node is already primary"),
    (S.STOP, Command.SWAP): _refuse("the module is stopped"),
    (S.WAIT, Command.SWAP): _refuse("no synced pair to swap"),
    (S.ALONE, Command.SWAP): _refuse("the peer is not an up-to-date SECOND"),
    (S.ALONE, Command.SECOND): _refuse("the peer is not an up-to-date SECOND"),
}
for _state in (S.WAIT, S.SECOND, S.ALONE):
    COMMANDS[(_state, Command.STOP)] = lambda v: steps.stop(v, force=False)
for _state in (S.WAIT, S.SECOND, S.PRIM, S.ALONE):
    COMMANDS[(_state, Command.FORCESTOP)] = lambda v: steps.stop(v, force=True)


def _stop_primary(view: ModuleView) -> Decision:
    """`stop` on PRIM. When the mount blocks writes because the peer stopped acknowledging (the
    peer was stopped first: `stop --all`, `module remove` on both nodes), the application's last
    writes wait for a verdict, and `stop_prim` would find it blocked in them (a process not even
    SIGKILL ends). The verdict comes first: ALONE when the peer is heard stopped or stale (what
    `_fenced` grants; a new generation, as always), else the writes refused (nothing was
    acknowledged; no fence, no lease for a node that is stopping), then the stop."""
    stop = steps.stop(view, force=False)
    if view.mirror is not M.FENCED:
        return stop
    quiet = blocked.peer_stands_aside(view.peer, view.relation)
    first = (SetMirroring(False), NewGeneration()) if quiet else (RefuseWrites(),)
    return dataclasses.replace(stop, actions=first + stop.actions)      # decide() puts Persist first


COMMANDS[(S.PRIM, Command.STOP)] = _stop_primary


# --- automatic rules, one per state ---------------------------------------------------------

def _stop(view: ModuleView) -> Decision:
    return steps.stay(view)


def _wait(view: ModuleView) -> Decision:
    peer = view.peer
    if not peer.alive:
        if view.quorum is True and view.vouched and view.uptodate and not view.outdated and not view.peer_asks:
            # It stepped down (or left SECOND) when the witness was down; the witness is back, the
            # peer is still lost, and it has not held the lease since this node did: nothing the
            # peer wrote alone can exist, this node's data is the newest. Not while the witness
            # hears the peer: alive, it may have acted alone beside this node without the lease
            # (it took over beside this WAIT node while the witness was down, or a swap's hand-over
            # promoted it), and the vouch knows only of acting alone on the lease (found by
            # tests/test_cluster_sim_sequences.py).
            return steps.promote_alone(view, warning=RESUMED)
        # The peer holding the lease needs nothing from this WAIT node: a primary that hears it
        # goes on alone while it holds the lease (:func:`_fenced`). Clearing the flag here on
        # the witness's word made a pair whose stale node won the lease in a partition (both
        # WAIT: a rack's power back before its switch) end with both copies stale, WAIT + WAIT
        # for an operator, the newer one's flag gone for nothing.
        return steps.stay(view)
    if view.relation is Relation.DIVERGED:
        return steps.stay(view, warning=SPLIT_BRAIN)
    if peer.is_primary:
        return _receive_resync(view)
    if view.uptodate and view.relation is Relation.PEER_NEWER:
        # The peer went on alone (beside this WAIT node, or while it was stopped) and stopped or
        # stepped down since: its copy has writes this one lacks. The flag says so now, while the
        # journals can tell; unheard later, only the flag would, and a lease vouched for this node
        # would promote it without them (found by tests/test_cluster_sim_sequences.py).
        return steps.stay(view, MarkUpToDate(False))
    if _wait_should_lead(view):
        return steps.promote_alone(view)
    return steps.stay(view)


def _receive_resync(view: ModuleView) -> Decision:
    """WAIT under a live primary: the primary drives the resync; we follow its outcome."""
    if view.resync is ResyncStatus.DONE:
        return steps.enter_second()
    if view.resync is ResyncStatus.FAILED:
        return steps.stay(view, warning="resync from the peer failed; it resumes when restarted")
    if view.uptodate and view.relation in (Relation.PEER_NEWER, Relation.UNKNOWN):
        return steps.stay(view, MarkUpToDate(False), warning=PEER_FENCED if view.peer.fenced else None)
    if view.uptodate and view.peer.fenced and view.relation is not Relation.LOCAL_NEWER:
        # Not when this copy is newer: the primary is one that stalled while this node took over
        # (it steps down, PEER_TOOK_OVER, and this node leads); clearing the flag left both
        # copies stale, WAIT + WAIT for an operator (found by tests/test_cluster_sim_sequences.py).
        return steps.stay(view, MarkUpToDate(False), warning=PEER_FENCED)
    return steps.stay(view)


def _wait_should_lead(view: ModuleView) -> bool:
    """WAIT with a live, non-primary peer: become primary? Exactly one of two WAIT nodes may."""
    peer = view.peer
    if peer.state is S.SECOND:
        return False                   # a SECOND peer takes over by its own rule
    if view.cold_start:
        return view.default_primary
    if not view.uptodate or view.relation is Relation.PEER_NEWER:
        return False
    if view.relation is Relation.LOCAL_NEWER or peer.state in (S.STOP, None):
        return True
    return not peer.uptodate or view.default_primary


def _second(view: ModuleView) -> Decision:
    peer = view.peer
    if not view.uptodate:
        return steps.leave_second(view)
    if not peer.alive:
        if view.swap is SwapPhase.HANDOVER:
            # We handed the primary role over: the peer may be promoting now, heard by us or not
            # (a one-way loss), and a hand-over asks no witness. Its silence proves nothing.
            return steps.leave_second(view, warning=HANDED_OVER)
        if _peer_goes_on(view):
            return steps.leave_second(view, MarkUpToDate(False), warning=PEER_LEASED)
        if view.outdated:
            return steps.leave_second(view, MarkUpToDate(False), warning=OUTDATED)
        if view.quorum is False:
            return steps.leave_second(view, warning=NO_QUORUM)
        return steps.promote_alone(view, warning="peer lost: taking over")
    if peer.is_primary and peer.fenced:
        return steps.leave_second(view, MarkUpToDate(False), warning=PEER_FENCED)
    if view.relation is Relation.DIVERGED:
        return steps.leave_second(view, warning=SPLIT_BRAIN)
    if peer.is_primary:
        if view.relation in (Relation.PEER_NEWER, Relation.UNKNOWN):
            return steps.leave_second(view, MarkUpToDate(False))
        keep = view.swap if view.swap is SwapPhase.REQUEST and peer.state is S.PRIM else SwapPhase.NONE
        return steps.stay(view, swap=keep)
    if peer.state is S.SECOND:
        return _second_with_second(view)
    if view.relation is Relation.PEER_NEWER:
        return steps.leave_second(view, MarkUpToDate(False))
    return steps.promote_alone(view, warning="the primary stopped: taking over")


def _peer_goes_on(view: ModuleView) -> bool:
    """The peer is not heard, yet the witness heard it just now holding the lease: it is alive and
    cut from us (one way: it may still hear us), and the lease lets it go on alone. A primary that
    hears our up-to-date flag waits for it to clear (or for ``block_timeout``), so clear it. Not
    while the replication link shows the peer's mount streaming to us (then it goes on mirrored),
    nor before this node has listened a full timeout (a peer merely not heard yet holds the lease
    as every primary does)."""
    return not view.peer.alive and view.peer_leased and view.listened and not view.linked


def _second_with_second(view: ModuleView) -> Decision:
    """Both SECOND: a swap in progress, or nobody leads yet."""
    peer = view.peer
    if peer.swap is SwapPhase.HANDOVER and view.swap is not SwapPhase.HANDOVER:
        return steps.promote_handover(view)
    if view.swap is SwapPhase.HANDOVER:
        if peer.swap is SwapPhase.HANDOVER and view.default_primary and view.relation is not Relation.PEER_NEWER:
            # Both handed over: each missed the other as PRIM (one was frozen, or its agent
            # restarted, between two swaps) and waits for the other to take. Neither runs the
            # application; the default primary takes, as it does when nobody leads yet.
            return steps.promote_handover(view)
        if peer.uptodate:
            return steps.stay(view, swap=SwapPhase.HANDOVER)
        return steps.promote_alone(view, warning="swap cancelled: the peer is not up to date")
    if view.default_primary:
        return steps.promote_alone(view)
    return steps.stay(view)


def _primary_common(view: ModuleView) -> Decision | None:
    """Rules shared by PRIM and ALONE; None when the state-specific rule decides."""
    peer = view.peer
    if view.quorum is False and (not peer.alive or peer.silent):
        # Without the lease, the peer may take over as soon as it misses our heartbeats for a
        # timeout (the lease is free). Yield at half that silence, so this node is gone first.
        return steps.step_down(view, NO_QUORUM)
    if peer.is_primary:
        return _both_primary(view)
    if peer.alive and peer.leaving and view.listened:
        # A one-way loss: the peer hears nothing from us and will take over when its timeout
        # runs out, while we still hear it. Leave first, so that the service never runs on both
        # (without a witness the VIP was on both nodes for ~0.6 s; campaigns 1603, 2203). Not
        # just after a stall of this agent: that explains the peer's silence, and our heartbeats
        # reach it again now (if it took over meanwhile, the both-primary rule steps us down).
        return steps.step_down(view, PEER_LEAVING)
    if peer.alive and view.relation is Relation.PEER_NEWER:
        # The peer took over while this node did not run (frozen, or its agent stopped) and is not
        # primary now (its agent restarted): it holds the newer data. Going on here would fork it.
        return steps.step_down(view, PEER_TOOK_OVER)
    if view.mirror is M.DEAD:
        return _dead_mount(view)
    if view.mirror in (M.FENCED, M.REFUSED):
        return _fenced(view)
    if view.app_stopped:
        # The VIP too: a repair may have cut short the sequence that was to add it (a swap's).
        return steps.stay(view, AddVip(), RunScript("start_prim"),
                          warning="data path repaired: starting the application")
    if not view.checker.ok:
        return _checker_failed(view)
    return None


def _dead_mount(view: ModuleView) -> Decision:
    """A mount daemon died under the application: remount in place, or step down if it keeps dying.
    With the peer lost too (a crash of both, or a swap's second half whose first half lost power),
    nothing can stream: remount ALONE, on the same conditions as any primary going on alone."""
    if view.checker.may_restart and view.state is S.PRIM and not view.peer.alive:
        return steps.move(S.ALONE, *steps.fence_first(view), RemountDataPath(alone=True), NewGeneration(),
                          warning="no mount and the peer is lost: remounting ALONE")
    if view.checker.may_restart:
        return steps.stay(view, RemountDataPath(), warning="a mount daemon died: remounting from its journal")
    return steps.step_down(view, "the data path failed again within the restart window: stepping down "
                                 "so that the peer takes over")


def _fenced(view: ModuleView) -> Decision:
    """Our mount lost the peer and blocks writes: may we go on alone? (the peer is not primary)"""
    peer = view.peer
    waiting_beside_our_lease = peer.state is S.WAIT and view.quorum is True
    if not peer.alive or peer.state in (S.STOP, None) or not peer.uptodate or waiting_beside_our_lease:
        # Not heard: the quorum (lease) or availability-first rule already allowed it (a refusing
        # witness stepped down above; a fence script runs first). Heard: it cannot take over:
        # stopped, stale, or WAIT while this node holds the lease (a WAIT node promotes beside
        # no live primary, and alone only on a lease it held last: not after this tenure).
        return _go_alone(view)
    if view.mirror is M.REFUSED:
        return steps.step_down(view, "writes were refused while the peer is an up-to-date SECOND: "
                                     "stepping down so that it takes over")
    return steps.stay(view, warning=FENCED_WAIT)


def _go_alone(view: ModuleView, warning: str | None = None) -> Decision:
    """Grant the mounts ALONE (blocked writes succeed, recorded for a resync); PRIM -> ALONE."""
    actions = (*steps.fence_first(view), SetMirroring(False))
    if view.state is S.PRIM:
        return steps.move(S.ALONE, *actions, NewGeneration(), warning=warning)
    return steps.stay(view, *actions, warning=warning)


def _both_primary(view: ModuleView) -> Decision:
    """Both run the application (a healed partition, or a stalled primary that wakes up after its
    peer took over): one steps down, no data moves. The newer history keeps running; else the
    taker: a node that stalled has not listened yet (``woke``), and its peer took over during the
    stall; else the ``default_primary``."""
    newer = view.relation is Relation.LOCAL_NEWER
    if view.relation is Relation.PEER_NEWER:
        return steps.step_down(view, "both nodes were primary; stepping down, data kept as is")
    if not newer and not view.listened and not view.peer.woke:
        return steps.step_down(view, WOKE_STEP_DOWN)
    taker = view.listened and view.peer.woke
    if not newer and not taker and not view.default_primary:
        return steps.step_down(view, "both nodes were primary; stepping down, data kept as is")
    warning = SPLIT_BRAIN if view.relation is Relation.DIVERGED else None
    return steps.stay(view, warning=warning)


def _checker_failed(view: ModuleView) -> Decision:
    if view.checker.may_restart:
        return steps.stay(view, RestartApp(counted=True), warning="checker failed: restarting")
    if (view.state is S.PRIM and view.peer.is_synced_second
            and view.relation is not Relation.DIVERGED):
        return steps.hand_over(view, warning="restart limit reached: handing over to the peer")
    return steps.stay(view, RestartApp(counted=True),
                      warning="restart limit reached and no up-to-date peer to take over")


def _prim(view: ModuleView) -> Decision:
    common = _primary_common(view)
    if common is not None:
        return common
    peer = view.peer
    if view.mirror is M.ALONE:
        return steps.move(S.ALONE, warning=ALONE_UNDER_PRIM)
    if (peer.swap is SwapPhase.REQUEST and peer.is_synced_second
            and view.relation is not Relation.DIVERGED):
        return steps.hand_over(view)
    if peer.alive and peer.state is S.SECOND:
        return steps.stay(view)
    return _go_alone(view)


def _alone(view: ModuleView) -> Decision:
    common = _primary_common(view)
    if common is not None:
        return common
    peer = view.peer
    if not peer.alive or peer.state not in (S.WAIT, S.SECOND):
        return steps.stay(view)
    if view.relation is Relation.DIVERGED:
        return steps.stay(view, warning=SPLIT_BRAIN)
    if view.relation is Relation.PEER_NEWER:
        return steps.stay(view, warning="the peer holds newer data: not overwriting it")
    return _send_resync(view)


def _send_resync(view: ModuleView) -> Decision:
    """ALONE with a live peer behind us: resync it, then mirror synchronously (PRIM)."""
    full = view.relation is Relation.UNKNOWN
    if view.resync is ResyncStatus.DONE:
        if view.peer.state is S.SECOND:   # the peer saw the end too: mirror synchronously
            return steps.move(S.PRIM, SetMirroring(True))
        if _stale_after_resync(view):
            # The mount streams since the end (PRIM): back to ALONE (a new generation, by the
            # mount, as it leaves a live mirror), then a pass over what changed since.
            return steps.stay(view, SetMirroring(False), NewGeneration(), StartResync(full=False),
                              warning=STALE_AFTER_RESYNC)
        return steps.stay(view)
    if view.resync is ResyncStatus.RUNNING:
        return steps.stay(view)
    warning = "resync failed: resuming" if view.resync is ResyncStatus.FAILED else None
    return steps.stay(view, StartResync(full=full), warning=warning)


def _stale_after_resync(view: ModuleView) -> bool:
    """Our resync to the peer is done, yet the peer says WAIT, stale, on our very generation, and
    has had time to say otherwise (``resync_settled``): it marked its copy stale after adopting
    it (PEER_LEASED: it lost our heartbeats as the resync ended), so it will never become SECOND
    by itself; only a new pass clears the mark. Right after the end its heartbeat may still be
    one from before it: the old generation, or our generation with the flag not yet set (one
    directory of several adopted first, or read between the receiver's two journal writes);
    the settle time keeps those from starting passes, so passes cannot follow one another by
    themselves: each answers a new stale mark, i.e. a new loss of our heartbeats. A peer that
    stays stale whatever we copy (a journal it cannot write) gets a pass no more often than a
    failed resync would (the runner's backoff, also in ``resync_settled``)."""
    peer = view.peer
    return (view.resync_settled and peer.alive and peer.state is S.WAIT and not peer.uptodate
            and view.relation is Relation.SAME)


AUTOMATIC: dict[NodeState, Callable[[ModuleView], Decision]] = {
    S.STOP: _stop,
    S.WAIT: _wait,
    S.SECOND: _second,
    S.PRIM: _prim,
    S.ALONE: _alone,
}
