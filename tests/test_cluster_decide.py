"""Hand-written cases for each rule of the state machine (docs/cluster.md)."""

from __future__ import annotations

import dataclasses

import pytest

from hamirror.cluster.actions import (
    AddVip, Flush, ForgetHistory, KillApp, MarkUpToDate, MountReplicated, NewGeneration, Persist,
    RefuseWrites, RemoveVip, RestartApp, RunScript, SetMirroring, StartReceiver, StartResync, StopReceiver,
    Unmount,
)
from hamirror.cluster.decide import (
    MAY_LOSE, OUTDATED, PEER_LEAVING, UNMARKED, UNRENEWED, UNYIELDED, decide, takes_over_at_timeout,
)
from hamirror.cluster.states import NodeState
from hamirror.cluster.view import (
    CheckerHealth, Command, MirrorHealth, ModuleView, PeerView, ResyncStatus, SwapPhase,
)
from hamirror.journal.generations import Relation

S = NodeState
R = Relation


def view(state: NodeState, uptodate: bool = True, peer: NodeState | None = None,
         peer_uptodate: bool = True, **kw) -> ModuleView:
    """A view of module ``m`` on ``n1``; ``peer=None`` means the peer is not heard."""
    swap = kw.pop("peer_swap", SwapPhase.NONE)
    p = PeerView(alive=peer is not None, state=peer, uptodate=peer_uptodate, swap=swap)
    kw.setdefault("relation", R.SAME if peer is not None else R.UNKNOWN)
    return ModuleView(module="m", node="n1", state=state, uptodate=uptodate, peer=p, **kw)


TAKEOVER = (StopReceiver(grace=1.0), NewGeneration(), MountReplicated(peer_connected=False), AddVip(),
            RunScript("start_prim"))


def test_start_goes_to_wait_and_persists_first() -> None:
    d = decide(view(S.STOP, command=Command.START))
    assert d.state is S.WAIT
    assert d.actions == (Persist(S.WAIT), StartReceiver())


def test_no_command_in_stop_stays_stopped() -> None:
    assert decide(view(S.STOP, peer=S.PRIM)).actions == ()


@pytest.mark.parametrize("default,expected", [(True, S.ALONE), (False, S.WAIT)])
def test_cold_start_default_primary_decides(default: bool, expected: NodeState) -> None:
    d = decide(view(S.WAIT, uptodate=False, peer=S.WAIT, peer_uptodate=False,
                    relation=R.UNKNOWN, cold_start=True, default_primary=default))
    assert d.state is expected
    if default:
        assert d.actions == (Persist(S.ALONE), StopReceiver(grace=1.0), NewGeneration(), MarkUpToDate(True),
                             MountReplicated(peer_connected=False), AddVip(),
                             RunScript("start_prim"))


def test_second_not_uptodate_that_loses_peer_waits() -> None:
    d = decide(view(S.SECOND, uptodate=False))
    assert d.state is S.WAIT and AddVip() not in d.actions


def test_wait_not_uptodate_never_promotes_alone() -> None:
    assert decide(view(S.WAIT, uptodate=False)).state is S.WAIT
    assert decide(view(S.WAIT, uptodate=True)).state is S.WAIT  # boots alone: waits for operator


def test_prim_command_forces_with_a_warning() -> None:
    d = decide(view(S.WAIT, uptodate=False, command=Command.PRIM))
    assert d.state is S.ALONE
    assert MarkUpToDate(True) in d.actions and NewGeneration() in d.actions
    assert any("may be lost" in w for w in d.warnings)


def test_prim_command_on_uptodate_node_has_no_warning() -> None:
    d = decide(view(S.SECOND, uptodate=True, command=Command.PRIM))
    assert d.state is S.ALONE and d.warnings == ()


@pytest.mark.parametrize("alive_elsewhere", [{"peer_asks": True}, {"linked": True}])
def test_prim_command_refused_on_a_peer_unheard_here_but_alive_elsewhere(alive_elsewhere: dict) -> None:
    """One way lost: the peer hears this WAIT node and may promote itself on it; our lease
    would not stop it (a node that hears its peer does not ask the witness)."""
    d = decide(view(S.WAIT, command=Command.PRIM, quorum=True, **alive_elsewhere))
    assert d.state is S.WAIT
    assert d.warnings[0] == ("`prim` refused in WAIT: the peer is not heard here but is alive (the witness "
                             "or the replication link hears it); stop it or repair the network first")


def test_prim_command_refused_while_peer_is_primary() -> None:
    d = decide(view(S.SECOND, peer=S.PRIM, command=Command.PRIM))
    assert d.state is S.SECOND and any("refused" in w for w in d.warnings)


def test_prim_that_loses_peer_goes_alone_and_keeps_running() -> None:
    d = decide(view(S.PRIM))
    assert d.state is S.ALONE
    assert d.actions == (Persist(S.ALONE), SetMirroring(False), NewGeneration())


def test_prim_whose_peer_fell_back_to_wait_goes_alone() -> None:
    assert decide(view(S.PRIM, peer=S.WAIT, peer_uptodate=False)).state is S.ALONE


def test_uptodate_second_takes_over_when_peer_lost() -> None:
    d = decide(view(S.SECOND))
    assert d.state is S.ALONE
    assert d.actions == (Persist(S.ALONE), RunScript("stop_second")) + TAKEOVER


@pytest.mark.parametrize("quorum,expected", [(None, S.ALONE), (True, S.ALONE), (False, S.WAIT)])
def test_takeover_needs_quorum_when_a_witness_exists(quorum: bool | None,
                                                     expected: NodeState) -> None:
    d = decide(view(S.SECOND, quorum=quorum))
    assert d.state is expected
    assert (AddVip() in d.actions) is (expected is S.ALONE)


def test_a_blocked_primary_cut_from_the_witness_too_is_not_let_go_on_alone() -> None:
    """Campaign 3009: the primary lost its peer and the witness at once; its lease, believed from
    an earlier answer, still held for 0.6 s, and its blocked mount was granted ALONE: the writes
    it acknowledged then were lost when the lease lapsed and the peer took over. Without an answer
    this tick the mount stays blocked; once the lease lapses the primary steps down."""
    cut = view(S.PRIM, quorum=True, renewed=False, mirror=MirrorHealth.FENCED)
    d = decide(cut)
    assert d.state is S.PRIM and d.actions == ()
    assert d.warnings == (UNRENEWED,)
    renewed = decide(dataclasses.replace(cut, renewed=True))   # the witness answered: the peer cannot take over
    assert renewed.state is S.ALONE and SetMirroring(False) in renewed.actions
    lapsed = decide(dataclasses.replace(cut, quorum=False))
    assert lapsed.state is S.WAIT and lapsed.actions[1] == RefuseWrites()


def test_no_takeover_on_a_lease_the_witness_did_not_renew() -> None:
    d = decide(view(S.SECOND, quorum=True, renewed=False))
    assert d.state is S.SECOND and d.actions == () and d.warnings == (UNRENEWED,)
    assert decide(view(S.SECOND, quorum=True)).state is S.ALONE
    heard = decide(view(S.PRIM, peer=S.WAIT, peer_uptodate=False, quorum=True, renewed=False,
                        mirror=MirrorHealth.FENCED))   # a peer heard in WAIT cannot take over
    assert heard.state is S.ALONE


def test_no_node_acts_alone_before_the_witness_marks_the_peer_copy_outdated() -> None:
    """The double fault: the blocked primary, or a SECOND taking over, acts alone only once this
    tick's answer marks the peer's copy outdated; else the peer, frozen now, could take over later
    without what this node acknowledged alone."""
    for cut in (view(S.PRIM, quorum=True, mirror=MirrorHealth.FENCED), view(S.SECOND, quorum=True),
                view(S.PRIM, quorum=True, mirror=MirrorHealth.DEAD, checker=CheckerHealth(restarts=0)),
                view(S.WAIT, quorum=True, command=Command.PRIM)):
        held = decide(dataclasses.replace(cut, peer_outdated=False))
        assert held.state is cut.state and held.actions == (), cut
        assert held.warnings[-1].endswith(UNMARKED), cut
        marked = decide(cut)
        assert marked.state is S.ALONE, cut
    # A peer heard stale needs no mark (it knows), nor does a node without a witness.
    heard = view(S.PRIM, peer=S.WAIT, peer_uptodate=False, quorum=True, mirror=MirrorHealth.FENCED,
                 peer_outdated=False)
    assert decide(heard).state is S.ALONE
    assert decide(view(S.SECOND, quorum=None, peer_outdated=False)).state is S.ALONE


def test_a_copy_the_witness_marks_outdated_never_takes_over_by_itself() -> None:
    """The SECOND was frozen while its primary went on alone: its own flag still says up to date,
    the witness says otherwise. It marks its copy stale and waits; a WAIT node is not vouched;
    an operator's `prim` still promotes it, saying what may be lost."""
    d = decide(view(S.SECOND, quorum=True, outdated=True))
    assert d.state is S.WAIT and MarkUpToDate(False) in d.actions and d.warnings == (OUTDATED,)
    assert decide(view(S.WAIT, quorum=True, vouched=True, outdated=True)).state is S.WAIT
    assert decide(view(S.WAIT, quorum=True, vouched=True)).state is S.ALONE
    forced = decide(view(S.SECOND, quorum=True, outdated=True, command=Command.PRIM))
    assert forced.state is S.ALONE and MAY_LOSE in forced.warnings


@pytest.mark.parametrize("state", [S.PRIM, S.ALONE])
def test_isolated_primary_steps_down_when_witness_refuses(state: NodeState) -> None:
    d = decide(view(state, quorum=False))
    assert d.state is S.WAIT and RemoveVip() in d.actions and Unmount(force=True) in d.actions
    assert d.actions[1] == RefuseWrites()   # nothing acknowledged from the decision on


def test_second_takes_over_when_primary_stops() -> None:
    assert decide(view(S.SECOND, peer=S.STOP)).state is S.ALONE


def test_wait_does_not_compete_with_an_uptodate_second() -> None:
    assert decide(view(S.WAIT, peer=S.SECOND, default_primary=True)).state is S.WAIT


@pytest.mark.parametrize("relation", [R.DIVERGED, R.SAME, R.UNKNOWN])
def test_both_primary_non_default_steps_down_without_moving_data(relation: Relation) -> None:
    loser = decide(view(S.ALONE, peer=S.ALONE, relation=relation, default_primary=False))
    winner = decide(view(S.ALONE, peer=S.ALONE, relation=relation, default_primary=True))
    assert loser.state is S.WAIT and winner.state is S.ALONE
    assert loser.actions == (Persist(S.WAIT), RefuseWrites(), RemoveVip(), RunScript("stop_prim"), Unmount(force=True),
                             StartReceiver())
    for d in (loser, winner):
        assert not any(isinstance(a, (StartResync, ForgetHistory)) for a in d.actions)
    if relation is R.DIVERGED:
        assert any("split brain" in w for w in winner.warnings)


def test_both_primary_newer_history_wins_over_default() -> None:
    assert decide(view(S.PRIM, peer=S.ALONE, relation=R.PEER_NEWER, default_primary=True)).state is S.WAIT
    assert decide(view(S.ALONE, peer=S.PRIM, relation=R.LOCAL_NEWER)).state is S.ALONE


def test_restart_command_does_not_bypass_split_brain_rule() -> None:
    d = decide(view(S.ALONE, peer=S.ALONE, relation=R.DIVERGED, command=Command.RESTART))
    assert d.state is S.WAIT


def test_wait_under_newer_primary_marks_outdated_then_becomes_second() -> None:
    d = decide(view(S.WAIT, uptodate=True, peer=S.ALONE, relation=R.PEER_NEWER))
    assert d.state is S.WAIT and d.actions == (MarkUpToDate(False),)
    d = decide(view(S.WAIT, uptodate=False, peer=S.ALONE, relation=R.PEER_NEWER,
                    resync=ResyncStatus.RUNNING))
    assert d.actions == ()
    d = decide(view(S.WAIT, uptodate=False, peer=S.ALONE, resync=ResyncStatus.DONE))
    assert d.state is S.SECOND
    assert d.actions == (Persist(S.SECOND), MarkUpToDate(True), RunScript("start_second"))


@pytest.mark.parametrize("peer", [S.STOP, S.WAIT])
def test_wait_behind_a_peer_that_is_not_primary_clears_its_flag(peer: NodeState) -> None:
    """The peer went on alone and stopped (or stepped down) since: the journals tell this copy is
    behind while the peer is heard; unheard later only the flag would, and a vouched lease would
    promote a copy without the peer's writes (test_cluster_sim_sequences.py found it)."""
    d = decide(view(S.WAIT, uptodate=True, peer=peer, relation=R.PEER_NEWER))
    assert d.state is S.WAIT and d.actions == (MarkUpToDate(False),)
    assert decide(view(S.WAIT, uptodate=False, peer=peer, relation=R.PEER_NEWER)).actions == ()
    assert decide(view(S.WAIT, uptodate=True, peer=peer, relation=R.SAME)).actions != (MarkUpToDate(False),)


def test_second_under_a_new_generation_goes_wait() -> None:
    d = decide(view(S.SECOND, peer=S.ALONE, relation=R.PEER_NEWER))
    assert d.state is S.WAIT and MarkUpToDate(False) in d.actions


@pytest.mark.parametrize("relation,full", [(R.LOCAL_NEWER, False), (R.UNKNOWN, True),
                                           (R.SAME, False)])
def test_alone_resyncs_a_returning_peer_behind_it(relation: Relation, full: bool) -> None:
    d = decide(view(S.ALONE, peer=S.WAIT, peer_uptodate=False, relation=relation))
    assert d.state is S.ALONE and d.actions == (StartResync(full=full),)


def test_alone_resync_progress_then_prim() -> None:
    running = decide(view(S.ALONE, peer=S.WAIT, relation=R.LOCAL_NEWER, resync=ResyncStatus.RUNNING))
    assert running.actions == () and running.state is S.ALONE
    waiting = decide(view(S.ALONE, peer=S.WAIT, relation=R.SAME, resync=ResyncStatus.DONE))
    assert waiting.state is S.ALONE and waiting.actions == ()
    done = decide(view(S.ALONE, peer=S.SECOND, relation=R.SAME, resync=ResyncStatus.DONE))
    assert done.state is S.PRIM and done.actions == (Persist(S.PRIM), SetMirroring(True))
    failed = decide(view(S.ALONE, peer=S.WAIT, relation=R.LOCAL_NEWER, resync=ResyncStatus.FAILED))
    assert failed.actions == (StartResync(full=False),) and failed.warnings


def test_alone_resyncs_again_a_peer_that_marked_itself_stale_after_the_resync_ended() -> None:
    """The resync is done and the peer adopted our generation (SAME), then marked its copy stale
    (it lost our heartbeats as the resync ended): it never becomes SECOND by itself, so a new,
    incremental pass, once the end has settled. A peer still showing the old generation (its
    heartbeat from before the end), or any stale peer right after the end, starts none."""
    done = dict(resync=ResyncStatus.DONE, resync_settled=True)
    stale = decide(view(S.ALONE, peer=S.WAIT, peer_uptodate=False, relation=R.SAME, **done))
    assert stale.state is S.ALONE
    assert stale.actions == (SetMirroring(False), NewGeneration(), StartResync(full=False))
    assert stale.warnings and "stale" in stale.warnings[0]
    for before_the_end in (R.LOCAL_NEWER, R.UNKNOWN):
        lag = decide(view(S.ALONE, peer=S.WAIT, peer_uptodate=False, relation=before_the_end, **done))
        assert lag.actions == () and lag.state is S.ALONE
    just_done = decide(view(S.ALONE, peer=S.WAIT, peer_uptodate=False, relation=R.SAME, resync=ResyncStatus.DONE))
    assert just_done.actions == ()        # its heartbeat may predate the end: not settled yet


def test_alone_never_overwrites_a_diverged_peer() -> None:
    d = decide(view(S.ALONE, peer=S.WAIT, relation=R.DIVERGED))
    assert d.state is S.ALONE and d.actions == () and d.warnings


@pytest.mark.parametrize("state", [S.PRIM, S.ALONE])
def test_a_primary_beside_a_newer_peer_steps_down_and_never_forks_it(state: NodeState) -> None:
    """The peer took over while this primary was frozen, then its agent restarted (WAIT): the
    woken primary must not go on alone (a new generation beside the newer one); it steps down."""
    d = decide(view(state, peer=S.WAIT, relation=R.PEER_NEWER))
    assert d.state is S.WAIT and d.actions[:2] == (Persist(S.WAIT), RefuseWrites())
    assert not any(isinstance(x, (NewGeneration, SetMirroring, StartResync)) for x in d.actions)


def test_wait_on_diverged_waits_for_operator_and_second_discards() -> None:
    d = decide(view(S.WAIT, peer=S.ALONE, relation=R.DIVERGED))
    assert d.actions == () and any("split brain" in w for w in d.warnings)
    d = decide(view(S.WAIT, peer=S.ALONE, relation=R.DIVERGED, command=Command.SECOND))
    assert d.state is S.WAIT and d.actions == (ForgetHistory(), MarkUpToDate(False))


def test_swap_from_primary_is_a_handover_then_peer_promotes() -> None:
    a = decide(view(S.PRIM, peer=S.SECOND, command=Command.SWAP))
    assert a.state is S.SECOND and a.swap is SwapPhase.HANDOVER
    assert a.actions == (Persist(S.SECOND), RunScript("stop_prim"), RemoveVip(), Flush(),
                         Unmount(), StartReceiver(listening=False), RunScript("start_second"))
    b = decide(view(S.SECOND, peer=S.SECOND, peer_swap=SwapPhase.HANDOVER))
    assert b.state is S.PRIM
    assert b.actions == (Persist(S.PRIM), RunScript("stop_second"), StopReceiver(grace=1.0),
                         MountReplicated(peer_connected=True), AddVip(), RunScript("start_prim"))
    # the old primary keeps advertising HANDOVER until it sees the new primary, then clears it
    assert decide(view(S.SECOND, peer=S.SECOND, swap=SwapPhase.HANDOVER,
                       default_primary=True)).swap is SwapPhase.HANDOVER
    after = decide(view(S.SECOND, peer=S.PRIM, swap=SwapPhase.HANDOVER))
    assert after.state is S.SECOND and after.swap is SwapPhase.NONE and after.actions == ()


def test_swap_asked_on_the_secondary_is_requested_from_the_primary() -> None:
    b = decide(view(S.SECOND, peer=S.PRIM, command=Command.SWAP))
    assert b.state is S.SECOND and b.swap is SwapPhase.REQUEST and b.actions == ()
    assert decide(view(S.SECOND, peer=S.PRIM, swap=SwapPhase.REQUEST)).swap is SwapPhase.REQUEST
    a = decide(view(S.PRIM, peer=S.SECOND, peer_swap=SwapPhase.REQUEST))
    assert a.state is S.SECOND and a.swap is SwapPhase.HANDOVER


def test_swap_refused_without_an_uptodate_secondary() -> None:
    d = decide(view(S.PRIM, peer=S.WAIT, peer_uptodate=False, command=Command.SWAP))
    assert d.state is not S.SECOND and any("refused" in w for w in d.warnings)
    d = decide(view(S.PRIM, peer=S.SECOND, peer_uptodate=False, peer_swap=SwapPhase.REQUEST))
    assert d.state is S.PRIM


def test_handover_cancelled_if_peer_not_uptodate() -> None:
    d = decide(view(S.SECOND, peer=S.SECOND, peer_uptodate=False, swap=SwapPhase.HANDOVER))
    assert d.state is S.ALONE


def test_stop_primary_is_graceful_and_flushes() -> None:
    d = decide(view(S.PRIM, peer=S.SECOND, command=Command.STOP))
    assert d.state is S.STOP
    assert d.actions == (Persist(S.STOP), RunScript("stop_prim"), RemoveVip(), Flush(), Unmount())


@pytest.mark.parametrize("peer,peer_uptodate,first", [
    (S.STOP, False, (SetMirroring(False), NewGeneration())),      # stopped first (stop --all, module remove)
    (S.WAIT, False, (SetMirroring(False), NewGeneration())),      # stale: nothing to wait for either
    (S.SECOND, True, (RefuseWrites(),)),                          # may take over: nothing acknowledged
    (None, True, (RefuseWrites(),)),                              # not heard: no fence, no lease to stop
])
def test_stop_primary_with_writes_blocked_gives_the_verdict_first(peer, peer_uptodate, first) -> None:
    """Its peer stopped acknowledging: stop_prim would find the application blocked in its last
    writes (seen: 'stop_prim: 1 process(es) left ... 1 survive SIGKILL' in stop --all and reload)."""
    d = decide(view(S.PRIM, peer=peer, peer_uptodate=peer_uptodate, mirror=MirrorHealth.FENCED,
                    command=Command.STOP))
    assert d.state is S.STOP
    assert d.actions == (Persist(S.STOP), *first, RunScript("stop_prim"), RemoveVip(), Flush(), Unmount())


def test_forcestop_primary_skips_scripts_and_peer() -> None:
    d = decide(view(S.ALONE, command=Command.FORCESTOP))
    assert d.actions == (Persist(S.STOP), KillApp(), RemoveVip(), Unmount(force=True))


@pytest.mark.parametrize("cmd,actions", [
    (Command.STOP, (RunScript("stop_second"), StopReceiver())),
    (Command.FORCESTOP, (StopReceiver(),)),
])
def test_stop_secondary(cmd: Command, actions: tuple) -> None:
    d = decide(view(S.SECOND, peer=S.PRIM, command=cmd))
    assert d.state is S.STOP and d.actions == (Persist(S.STOP),) + actions


def test_checker_failure_restarts_in_place_within_policy() -> None:
    d = decide(view(S.PRIM, peer=S.SECOND, checker=CheckerHealth(ok=False, restarts=2)))
    assert d.state is S.PRIM and d.actions == (RestartApp(counted=True),)


def test_checker_failure_beyond_policy_hands_over_to_uptodate_peer() -> None:
    d = decide(view(S.PRIM, peer=S.SECOND, checker=CheckerHealth(ok=False, restarts=3)))
    assert d.state is S.SECOND and d.swap is SwapPhase.HANDOVER


def test_checker_failure_beyond_policy_without_peer_keeps_restarting() -> None:
    d = decide(view(S.ALONE, checker=CheckerHealth(ok=False, restarts=3)))
    assert d.state is S.ALONE and d.actions == (RestartApp(counted=True),) and d.warnings


def test_operator_restart_is_not_counted() -> None:
    d = decide(view(S.PRIM, peer=S.SECOND, command=Command.RESTART))
    assert d.actions == (RestartApp(counted=False),)


def test_both_second_default_primary_leads() -> None:
    assert decide(view(S.SECOND, peer=S.SECOND, default_primary=True)).state is S.ALONE
    assert decide(view(S.SECOND, peer=S.SECOND, default_primary=False)).state is S.SECOND


def test_view_is_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        view(S.STOP).state = S.PRIM  # type: ignore[misc]


@pytest.mark.parametrize("state", [S.PRIM, S.ALONE])
def test_prim_on_a_primary_is_refused_without_a_data_loss_warning(state: NodeState) -> None:
    d = decide(view(state, peer=S.SECOND, command=Command.PRIM))
    assert d.state is state and d.actions == decide(view(state, peer=S.SECOND)).actions   # as without it
    assert d.warnings[0] == f"`prim` refused in {state.value}: this node is already primary"
    assert not any("may be lost" in w for w in d.warnings)


def test_a_node_that_has_not_listened_acts_on_no_silence() -> None:
    """Finding 1: after a stall (or an agent start) the peer's silence proves nothing: no takeover,
    no grant of ALONE, no remount ALONE, no forced `prim`, until a full timeout of listening."""
    from hamirror.cluster.view import MirrorHealth
    deaf = {"listened": False}
    assert decide(view(S.PRIM, **deaf)).state is S.PRIM and decide(view(S.PRIM, **deaf)).actions == ()
    assert decide(view(S.PRIM, mirror=MirrorHealth.FENCED, **deaf)).actions == ()
    assert decide(view(S.SECOND, **deaf)).actions == ()
    assert decide(view(S.PRIM, mirror=MirrorHealth.DEAD, **deaf)).actions == ()
    forced = decide(view(S.WAIT, command=Command.PRIM, **deaf))
    assert forced.state is S.WAIT and forced.warnings[0].startswith("`prim` refused")
    assert decide(view(S.SECOND)).state is S.ALONE                   # once listened: the takeover
    assert decide(view(S.SECOND, peer=S.PRIM, **deaf)).state is S.SECOND   # a heard peer is news
    stop = decide(view(S.PRIM, command=Command.STOP, **deaf))
    assert stop.state is S.STOP                                      # stopping rests on no silence


@pytest.mark.parametrize("relation", [R.DIVERGED, R.SAME, R.UNKNOWN])
def test_both_primary_the_taker_keeps_running_and_the_woken_node_steps_down(relation: Relation) -> None:
    """The woken node (default primary or not) steps down; the one that took over during its
    stall stays, whatever the default; the heartbeat's woke flag tells the taker."""
    woken = decide(view(S.ALONE, peer=S.ALONE, relation=relation, default_primary=True, listened=False))
    assert woken.state is S.WAIT and woken.actions[1] == RefuseWrites()
    taker_view = view(S.ALONE, peer=S.ALONE, relation=relation, default_primary=False)
    taker = decide(dataclasses.replace(taker_view, peer=dataclasses.replace(taker_view.peer, woke=True)))
    assert taker.state is S.ALONE
    assert decide(taker_view).state is S.WAIT                       # no stall on either side: default


def test_no_takeover_nor_grant_while_the_replication_link_shows_the_peer_alive() -> None:
    """Finding 6: heartbeats lost (blocked, or a wall clock far off) while the receiver still hears
    the primary's mount: the SECOND does not take over, the primary does not go on alone."""
    second = decide(view(S.SECOND, linked=True))
    assert second.state is S.SECOND and second.actions == () and "replication link" in second.warnings[0]
    assert decide(view(S.PRIM, linked=True)).state is S.PRIM
    assert decide(view(S.SECOND, linked=False)).state is S.ALONE


def test_a_node_that_stepped_down_for_the_witness_leads_again_once_vouched() -> None:
    """Finding 11: the witness down, then the peer lost: the primary stepped down (WAIT) and never
    came back. Once the witness grants it the lease again and says the peer has not held it
    since, it takes over again (a new generation); without that word, or stale, it waits."""
    back = decide(view(S.WAIT, quorum=True, vouched=True))
    assert back.state is S.ALONE and NewGeneration() in back.actions and "witness" in back.warnings[0]
    assert decide(view(S.WAIT, quorum=True, vouched=False)).state is S.WAIT
    assert decide(view(S.WAIT, quorum=True, vouched=True, uptodate=False)).state is S.WAIT
    assert decide(view(S.WAIT, quorum=False, vouched=True)).state is S.WAIT
    assert decide(view(S.WAIT, quorum=True, vouched=True, listened=False)).state is S.WAIT


# --- a one-way loss without a witness: the taker says so first --------------------------------

def silent_primary(**kw) -> ModuleView:
    """node n1 SECOND up to date; its PRIM peer unheard for half a timeout (still alive)."""
    kw.setdefault("listened", True)
    v = view(S.SECOND, peer=S.PRIM, **kw)
    return dataclasses.replace(v, peer=dataclasses.replace(v.peer, silent=True))


def test_a_secondary_that_would_take_over_on_the_silence_says_so() -> None:
    assert takes_over_at_timeout(silent_primary())


@pytest.mark.parametrize("why", ["not silent", "linked", "deaf", "witness refuses", "standby", "stale"])
def test_a_secondary_that_would_not_take_over_says_nothing(why: str) -> None:
    v = {"linked": lambda: silent_primary(linked=True), "deaf": lambda: silent_primary(listened=False),
         "witness refuses": lambda: silent_primary(quorum=False), "standby": lambda: silent_primary(standby=True),
         "stale": lambda: dataclasses.replace(silent_primary(), uptodate=False),
         "not silent": lambda: view(S.SECOND, peer=S.PRIM)}[why]()
    assert not takes_over_at_timeout(v)


@pytest.mark.parametrize("state", [S.PRIM, S.ALONE])
def test_a_primary_whose_peer_will_take_over_steps_down_first(state: NodeState) -> None:
    """Campaigns 1603 and 2203: node1 -> node2 dropped, one way, no witness. node2 took over at its
    timeout; node1, which heard it, stepped down only on seeing it ALONE: the VIP and the
    application were on both nodes for ~0.6 s. node2 says it is leaving at half its timeout."""
    v = view(state, peer=S.SECOND)
    v = dataclasses.replace(v, peer=dataclasses.replace(v.peer, leaving=True))
    d = decide(v)
    assert d.state is S.WAIT and d.warnings == (PEER_LEAVING,)
    assert d.actions[:3] == (Persist(S.WAIT), RefuseWrites(), RemoveVip())
    assert decide(dataclasses.replace(v, listened=False)).state is state   # its own stall explains the silence


# --- the handshake: acting alone beside a heard peer (docs/cluster.md, "The vouch") ---------------

@pytest.mark.parametrize("state,peer_state", [(S.SECOND, S.WAIT), (S.SECOND, S.STOP), (S.WAIT, S.STOP),
                                              (S.PRIM, S.WAIT), (S.PRIM, S.STOP)])
def test_with_a_witness_a_node_acts_alone_beside_a_heard_peer_once_it_yields_or_is_marked(
        state: NodeState, peer_state: NodeState) -> None:
    """Beside a heard, up-to-date peer a node acts alone with no lease, so the witness never
    learns of it: that peer, cut later, could be vouched for on a copy without this node's writes.
    It waits until the peer advertises that it recorded ``peer_led``, or the witness marks it."""
    v = view(state, peer=peer_state, quorum=True, renewed=True, peer_outdated=False,
             mirror=MirrorHealth.STREAMING, relation=R.SAME)
    held = decide(v)
    assert held.state is state and held.warnings == (UNYIELDED,) and held.actions == ()
    yielded = dataclasses.replace(v, peer=dataclasses.replace(v.peer, yielded=True))
    assert decide(yielded).state is S.ALONE
    assert decide(dataclasses.replace(v, peer_outdated=True)).state is S.ALONE       # the witness's mark
    assert decide(dataclasses.replace(v, quorum=None)).state is S.ALONE              # no witness: no vouch
    stale = dataclasses.replace(v, peer=dataclasses.replace(v.peer, uptodate=False))
    assert decide(stale).state is S.ALONE                                            # never vouched for


def test_an_operators_prim_beside_a_peer_that_has_not_yielded_is_not_held() -> None:
    v = view(S.WAIT, peer=S.STOP, quorum=True, renewed=True, peer_outdated=False, command=Command.PRIM)
    assert decide(v).state is S.ALONE
