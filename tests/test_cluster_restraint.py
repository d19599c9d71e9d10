"""Maintenance and flap damping in decide() (issue 9): what is held back, what never is."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hamirror.cluster.actions import (
    AddVip, Failover, MarkUpToDate, RefuseWrites, RemountDataPath, RestartApp, RunScript, SetMirroring,
    StartResync, touches_service,
)
from hamirror.cluster.decide import FENCED_WAIT, PEER_FENCED, decide
from hamirror.cluster.restraint import in_swap, must_stop_acknowledging
from hamirror.cluster.states import NodeState
from hamirror.cluster.view import (
    CheckerHealth, Command, FailoverHealth, MirrorHealth, ModuleView, PeerView, ResyncStatus, SwapPhase,
)
from hamirror.journal.generations import Relation
from tests.test_cluster_sim import views

S, M, R = NodeState, MirrorHealth, Relation
HELD_BY_MAINTENANCE = "maintenance (`hamirror maintenance off m` to resume): held back: "
DAMPED = FailoverHealth(recent=3, max=3, window=600.0)
HELD_BY_DAMPING = ("failover damped: 3 failover(s) within 600 s, limit 3 (`hamirror clear m` to allow "
                   "failovers again): held back: ")


def view(state: NodeState, peer: NodeState | None = S.SECOND, peer_uptodate: bool = True, peer_fenced=False,
         peer_swap=SwapPhase.NONE, mirror=M.NONE, **kw) -> ModuleView:
    p = PeerView(alive=peer is not None, state=peer, uptodate=peer_uptodate, fenced=peer_fenced, swap=peer_swap)
    kw.setdefault("relation", R.SAME if peer is not None else R.UNKNOWN)
    if state.is_primary and mirror is M.NONE:
        mirror = M.STREAMING if state is S.PRIM else M.ALONE
    return ModuleView(module="m", node="n1", state=state, uptodate=kw.pop("uptodate", True), peer=p,
                      mirror=mirror, **kw)


def held(d, prefix: str = HELD_BY_MAINTENANCE) -> bool:
    return d.held and d.actions == () and len(d.warnings) == 1 and d.warnings[0].startswith(prefix)


# --- maintenance: the application is left alone --------------------------------------------

@pytest.mark.parametrize("case,v,what", [
    ("takeover", view(S.SECOND, peer=None), "peer lost: taking over"),
    ("primary stopped", view(S.SECOND, peer=S.STOP), "the primary stopped: taking over"),
    ("wait leads", view(S.WAIT, peer=S.WAIT, peer_uptodate=False), "WAIT -> ALONE"),
    ("checker restart", view(S.PRIM, checker=CheckerHealth(ok=False)), "checker failed: restarting"),
    ("checker hand-over", view(S.PRIM, checker=CheckerHealth(ok=False, restarts=3)),
     "restart limit reached: handing over to the peer"),
    ("remount", view(S.PRIM, mirror=M.DEAD), "a mount daemon died: remounting from its journal"),
    ("dead mount step-down", view(S.PRIM, mirror=M.DEAD, checker=CheckerHealth(restarts=3)),
     "the data path failed again within the restart window: stepping down so that the peer takes over"),
    ("refused step-down", view(S.PRIM, mirror=M.REFUSED),
     "writes were refused while the peer is an up-to-date SECOND: stepping down so that it takes over"),
    ("start after repair", view(S.ALONE, peer=None, app_stopped=True), "data path repaired: starting the application"),
])
def test_maintenance_holds_back_what_starts_stops_or_moves_the_application(case, v, what) -> None:
    assert decide(v).state is not v.state or decide(v).actions          # what it does without maintenance
    d = decide(ModuleView(**{**v.__dict__, "maintenance": True}))
    assert d.state is v.state and held(d), case
    assert d.warnings == (HELD_BY_MAINTENANCE + what,) and d.failover is None


@pytest.mark.parametrize("case,v,expected", [
    ("fenced primary granted when the peer is stale", view(S.PRIM, peer=S.WAIT, peer_uptodate=False, mirror=M.FENCED),
     (S.ALONE, SetMirroring(False))),
    ("second marks its copy stale for a fenced primary", view(S.SECOND, peer=S.PRIM, peer_fenced=True),
     (S.WAIT, MarkUpToDate(False))),
    ("resync to the peer", view(S.ALONE, peer=S.WAIT, peer_uptodate=False), (S.ALONE, StartResync(full=False))),
    ("mirroring after the resync", view(S.ALONE, resync=ResyncStatus.DONE), (S.PRIM, SetMirroring(True))),
    ("receiving secondary becomes SECOND", view(S.WAIT, peer=S.PRIM, uptodate=False, resync=ResyncStatus.DONE),
     (S.SECOND, MarkUpToDate(True))),
    ("swap requested by the peer", view(S.PRIM, peer_swap=SwapPhase.REQUEST), (S.SECOND, RunScript("stop_prim"))),
    ("swap hand-over completed", view(S.SECOND, peer=S.SECOND, peer_swap=SwapPhase.HANDOVER),
     (S.PRIM, RunScript("start_prim"))),
])
def test_maintenance_keeps_the_data_path_rules_and_the_operators_swap(case, v, expected) -> None:
    d = decide(ModuleView(**{**v.__dict__, "maintenance": True}))
    assert d == decide(v), case
    assert d.state is expected[0] and expected[1] in d.actions and not d.held


def test_maintenance_never_grants_a_fenced_mount_blindly() -> None:
    """The peer, an up-to-date SECOND, could still take over: the fenced primary waits, as always."""
    d = decide(view(S.PRIM, mirror=M.FENCED, maintenance=True))
    assert d.state is S.PRIM and d.actions == () and d.warnings == (FENCED_WAIT,)
    assert decide(view(S.SECOND, peer=S.PRIM, peer_fenced=True, maintenance=True)).warnings == (PEER_FENCED,)


@pytest.mark.parametrize("case,v", [
    ("peer primary", view(S.ALONE, peer=S.ALONE, relation=R.PEER_NEWER)),
    ("cut off and refused by the witness", view(S.ALONE, peer=None, quorum=False)),
])
def test_maintenance_never_holds_a_primary_that_must_stop_acknowledging(case, v) -> None:
    d = decide(ModuleView(**{**v.__dict__, "maintenance": True}))
    assert d.state is S.WAIT and d.actions[1] == RefuseWrites() and not d.held, case
    assert d.failover is Failover.STEP_DOWN


@pytest.mark.parametrize("command,state,expected", [
    (Command.STOP, S.PRIM, S.STOP), (Command.SWAP, S.PRIM, S.SECOND), (Command.PRIM, S.SECOND, S.ALONE),
    (Command.START, S.STOP, S.WAIT),
])
def test_operator_commands_still_work_in_maintenance(command, state, expected) -> None:
    peer = S.STOP if command is Command.PRIM else S.SECOND
    d = decide(view(state, peer=peer, command=command, maintenance=True))
    assert d.state is expected and not d.held and d.failover is None


def test_operator_restart_runs_in_maintenance() -> None:
    d = decide(view(S.PRIM, command=Command.RESTART, maintenance=True))
    assert d.actions == (RestartApp(counted=False),) and not d.held


# --- flap damping ---------------------------------------------------------------------------

@pytest.mark.parametrize("v,kind", [
    (view(S.SECOND, peer=None), Failover.TAKEOVER),
    (view(S.PRIM, checker=CheckerHealth(ok=False, restarts=3)), Failover.HAND_OVER),
    (view(S.PRIM, mirror=M.REFUSED), Failover.STEP_DOWN),
    (view(S.ALONE, peer=S.ALONE, relation=R.PEER_NEWER), Failover.STEP_DOWN),
])
def test_automatic_failovers_are_tagged_for_counting(v, kind) -> None:
    assert decide(v).failover is kind


@pytest.mark.parametrize("v", [
    view(S.PRIM, peer_swap=SwapPhase.REQUEST),                                   # the peer's operator swaps
    view(S.SECOND, peer=S.SECOND, peer_swap=SwapPhase.HANDOVER),                 # ... and completes it
    view(S.WAIT, peer=S.WAIT, peer_uptodate=False),                              # a start, not a failover
    view(S.PRIM, peer=S.STOP, command=Command.STOP),                             # an operator's stop
    view(S.SECOND, peer=S.STOP, command=Command.PRIM),                           # an operator's prim
])
def test_swaps_starts_and_commands_are_not_failovers(v) -> None:
    assert decide(v).failover is None


@pytest.mark.parametrize("v,what", [
    (view(S.SECOND, peer=None), "peer lost: taking over"),
    (view(S.PRIM, checker=CheckerHealth(ok=False, restarts=3)), "restart limit reached: handing over to the peer"),
    (view(S.PRIM, mirror=M.REFUSED), "writes were refused while the peer is an up-to-date SECOND: "
                                     "stepping down so that it takes over"),
])
def test_a_damped_module_stays_where_it_is_and_says_why(v, what) -> None:
    d = decide(ModuleView(**{**v.__dict__, "failovers": DAMPED}))
    assert d.state is v.state and held(d, HELD_BY_DAMPING) and d.warnings == (HELD_BY_DAMPING + what,)


def test_damping_keeps_restarts_in_place_and_data_safety() -> None:
    restart = decide(view(S.PRIM, checker=CheckerHealth(ok=False), failovers=DAMPED))
    assert restart.actions == (RestartApp(counted=True),)
    remount = decide(view(S.PRIM, mirror=M.DEAD, failovers=DAMPED))
    assert remount.actions == (RemountDataPath(),)
    both = decide(view(S.ALONE, peer=S.ALONE, relation=R.PEER_NEWER, failovers=DAMPED))
    assert both.state is S.WAIT and not both.held


def test_damping_counts_up_to_the_limit_and_stays_latched() -> None:
    assert not FailoverHealth(recent=2, max=3).damped
    assert FailoverHealth(recent=3, max=3).damped
    assert not FailoverHealth(recent=50, max=0).damped                 # max 0: no damping
    assert FailoverHealth(recent=0, max=3, latched=True).damped        # the window passed: still held
    promote = decide(view(S.SECOND, peer=None, failovers=FailoverHealth(recent=2, max=3)))
    assert promote.state is S.ALONE and AddVip() in promote.actions


def test_operator_restart_starts_an_application_a_repair_left_stopped_in_maintenance() -> None:
    v = view(S.PRIM, app_stopped=True, maintenance=True)
    assert held(decide(v))
    d = decide(ModuleView(**{**v.__dict__, "command": Command.RESTART}))
    assert d.actions == (RestartApp(counted=False),) and not d.held


# --- properties over random views -----------------------------------------------------------

restrained = st.builds(
    lambda v, mirror, maintenance, failovers: ModuleView(**{**v.__dict__, "mirror": mirror,
                                                            "maintenance": maintenance, "failovers": failovers}),
    views, st.sampled_from(MirrorHealth), st.booleans(),
    st.builds(FailoverHealth, recent=st.integers(0, 4), max=st.integers(0, 3), latched=st.booleans()))


@settings(max_examples=3000)
@given(restrained)
def test_random_views_in_maintenance_or_damped(v: ModuleView) -> None:
    d = decide(v)
    automatic = v.command is Command.NONE
    if v.maintenance and automatic and not in_swap(v) and not must_stop_acknowledging(v):
        assert not any(map(touches_service, d.actions)), "maintenance started, stopped or moved the application"
    if v.failovers.damped and automatic and not must_stop_acknowledging(v):
        assert d.failover is None, "a damped module failed over"
    if SetMirroring(False) in d.actions and v.mirror in (M.FENCED, M.REFUSED):
        # a grant: never while the peer may be primary (alive, up to date, SECOND or primary)
        assert not (v.peer.alive and v.peer.uptodate and v.peer.state in (S.SECOND, S.PRIM, S.ALONE))
    if d.held:
        assert d.actions == () and d.state is v.state and d.failover is None


# --- standby (issue 17: `hamirror node standby`) ---------------------------------------------

HELD_BY_STANDBY = "this node is in standby (`hamirror node online` to allow the service here again): held back: "


@pytest.mark.parametrize("case, v", [
    ("takeover", view(S.SECOND, peer=None, quorum=None)),
    ("cold start", view(S.WAIT, peer=S.WAIT, peer_uptodate=False, uptodate=False, cold_start=True,
                        default_primary=True, relation=R.UNKNOWN)),
    ("newer data back", view(S.WAIT, peer=S.WAIT, peer_uptodate=False, relation=R.LOCAL_NEWER)),
])
def test_standby_holds_every_automatic_promotion(case, v) -> None:
    assert decide(v).state.is_primary, case                     # what happens online
    d = decide(view(v.state, peer=v.peer.state if v.peer.alive else None, peer_uptodate=v.peer.uptodate,
                    uptodate=v.uptodate, cold_start=v.cold_start, default_primary=v.default_primary,
                    relation=v.relation, quorum=v.quorum, standby=True))
    assert d.state is v.state and held(d, HELD_BY_STANDBY), (case, d)


def test_standby_lets_the_operators_swap_and_forced_prim_through() -> None:
    handed = view(S.SECOND, peer=S.SECOND, peer_swap=SwapPhase.HANDOVER, standby=True)
    assert decide(handed).state.is_primary                      # the peer already stopped: take it
    forced = view(S.WAIT, peer=None, uptodate=True, command=Command.PRIM, standby=True)
    assert decide(forced).state is S.ALONE


@settings(max_examples=2000)
@given(views, st.booleans())
def test_a_standby_node_never_promotes_itself(v: ModuleView, standby: bool) -> None:
    v = ModuleView(**{**v.__dict__, "standby": standby})
    d = decide(v)
    if standby and d.state.is_primary and not v.state.is_primary:
        assert v.command is Command.PRIM or in_swap(v), d
