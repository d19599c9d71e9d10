"""Properties of decide(): random views, and two simulated nodes exchanging their states
(tests/cluster_sim.py): never two primaries, no acknowledged write set aside, convergence after
freezes, restarts, partitions and one-way losses."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hamirror.cluster.actions import ForgetHistory, MarkUpToDate, StartResync
from hamirror.cluster.decide import automatic, decide, uses_silence
from hamirror.cluster.states import NodeState, is_allowed
from hamirror.cluster.view import CheckerHealth, Command, MirrorHealth, ModuleView, PeerView, ResyncStatus, SwapPhase
from hamirror.journal.generations import Relation
from tests.cluster_sim import (
    BLOCK, REPLICATION, UNHEARD, World, diverged_at_some_tick, events, freezes, frozen, quiet, run, serving,
)

S = NodeState

peers = st.builds(PeerView, alive=st.booleans(), state=st.none() | st.sampled_from(NodeState),
                  uptodate=st.booleans(), swap=st.sampled_from(SwapPhase), woke=st.booleans(),
                  leaving=st.booleans())
views = st.builds(
    ModuleView, module=st.just("m"), node=st.just("n1"), state=st.sampled_from(NodeState),
    uptodate=st.booleans(), peer=peers, relation=st.sampled_from(Relation),
    quorum=st.sampled_from([None, True, False]), command=st.sampled_from(Command),
    default_primary=st.booleans(), cold_start=st.booleans(),
    checker=st.builds(CheckerHealth, ok=st.booleans(), restarts=st.integers(0, 5)),
    resync=st.sampled_from(ResyncStatus), swap=st.sampled_from(SwapPhase), listened=st.booleans(),
    mirror=st.sampled_from(MirrorHealth), linked=st.booleans(), peer_leased=st.booleans(),
    peer_asks=st.booleans(), resync_settled=st.booleans(),
)


@settings(max_examples=3000)
@given(views)
def test_random_views_obey_the_data_rules(view: ModuleView) -> None:
    d = decide(view)
    assert is_allowed(view.state, d.state)
    promoted = d.state.is_primary and not view.state.is_primary
    if promoted and view.command is not Command.PRIM:
        assert view.uptodate or view.cold_start, "promoted stale data without `prim`"
    if promoted:
        assert not view.peer.is_primary, "became primary beside a live primary"
        if view.command is Command.PRIM and not view.peer.alive and (view.peer_asks or view.linked):
            assert d.state is automatic(view).state, "forced beside a peer alive elsewhere"
    if view.relation in (Relation.DIVERGED, Relation.PEER_NEWER):
        assert not any(isinstance(a, StartResync) for a in d.actions), "moved data"
    if any(isinstance(a, ForgetHistory) for a in d.actions):
        assert view.command is Command.SECOND
    if view.quorum is False and not view.peer.alive:
        assert not d.state.is_primary, "acted alone against the witness"
    if d.state is not view.state:
        assert d.actions[0].__class__.__name__ == "Persist"
    if not view.peer.alive and (not view.listened or view.linked):
        assert not uses_silence(view, d), "acted on a silence it did not listen to, or a live link"
    if MarkUpToDate(False) in d.actions and view.command is Command.NONE and not view.peer.alive:
        assert view.listened and not view.linked and view.peer_leased, "marked stale on a silence alone"


@settings(max_examples=600, deadline=None)
@given(st.lists(events, max_size=40), st.booleans(), st.booleans())
def test_two_nodes_never_both_primary_on_consistent_views(steps: list, witness: bool,
                                                          warm: bool) -> None:
    run((quiet(6) if warm else []) + steps, witness)


def test_a_forced_prim_on_a_one_way_loss_does_not_run_beside_the_peer_that_hears_it() -> None:
    """Found by the property above: n1's agent restarts (n2 takes over), then n2's (both WAIT,
    link down), then n2's traffic is lost one way and the operator forces `prim` on n1, which
    holds the lease. n1 must not promote. Nor does n2, which hears n1 WAIT: n1, not hearing it,
    never advertises that it recorded ``peer_led``, and the witness takes no mark from n2, not the
    holder (the handshake's price: nobody serves until the loss heals). Once healed, the pair
    converges with no write set aside."""
    one_way = (UNHEARD[1], None, Command.NONE, None, None)
    steps = quiet(7) + [(True, None, Command.NONE, None, 0), (False, None, Command.NONE, None, 1),
                        (UNHEARD[1], 0, Command.PRIM, None, None)] + [one_way] * 4
    assert run(steps, witness=True)[-1][1:] == (S.WAIT, S.WAIT)
    assert run(steps + quiet(8), witness=True)[-1] == (True, S.PRIM, S.SECOND)
    assert not diverged_at_some_tick(steps + quiet(8), witness=True)


def test_cold_start_converges_to_prim_and_second() -> None:
    trace = run(quiet(6), witness=False)
    assert trace[-1] == (True, S.PRIM, S.SECOND)


def test_failover_failback_and_swap_converge() -> None:
    steps = quiet(6) + quiet(3, link=False)                         # partition: both ALONE
    trace = run(steps, witness=False)
    assert trace[-1] == (False, S.ALONE, S.ALONE)
    trace = run(steps + quiet(4), witness=False)                    # heal: split brain
    assert trace[-1][1:] == (S.ALONE, S.WAIT)                       # n2 stepped down, kept data
    resolved = steps + quiet(2) + [(True, 1, Command.SECOND, None, None)] + quiet(6)
    assert run(resolved, witness=False)[-1] == (True, S.PRIM, S.SECOND)
    swapped = quiet(6) + [(True, 0, Command.SWAP, None, None)] + quiet(4)
    assert run(swapped, witness=False)[-1] == (True, S.SECOND, S.PRIM)
    asked = quiet(6) + [(True, 0, Command.SWAP, None, None)] + quiet(4) + [(True, 0, Command.SWAP, None, None)] + quiet(4)
    assert run(asked, witness=False)[-1] == (True, S.PRIM, S.SECOND)


def test_witness_partition_keeps_one_primary_and_heals_without_split_brain() -> None:
    steps = quiet(6) + quiet(3, link=False) + quiet(6)
    trace = run(steps, witness=True)
    assert (False, S.ALONE, S.WAIT) in trace
    assert trace[-1] == (True, S.PRIM, S.SECOND)


def test_the_alone_primary_marks_its_peer_outdated_until_they_mirror_again(monkeypatch) -> None:
    """The marks in the simulation: set when node1 goes ALONE in the partition (asked with the
    request that keeps its lease), kept while it is ALONE, gone once PRIM + SECOND again."""
    marks: list = []
    original = World.mark

    def record(world: World, views: list, up: bool) -> list:
        views = original(world, views, up)
        marks.append(world.outdated)
        return views

    monkeypatch.setattr(World, "mark", record)
    trace = run(quiet(6) + quiet(8, link=False) + quiet(8), witness=True)
    cut = [i for i, t in enumerate(trace) if not t[0]]
    alone = [i for i in cut if trace[i][1] is S.ALONE]
    assert len(alone) > 4 and all(marks[i] == 1 for i in alone)
    assert trace[-1] == (True, S.PRIM, S.SECOND) and marks[-1] is None


# --- freezes (issue 15, finding 1) -----------------------------------------------------------

calm = st.tuples(st.just(True), st.sampled_from([None, 0, 1]), st.sampled_from([Command.NONE, Command.SWAP]),
                 st.just(None), st.sampled_from([None, None, None, 0, 1]), freezes)


@settings(max_examples=400, deadline=None)
@given(st.lists(calm, max_size=30), st.booleans())
def test_freezes_never_lose_writes_the_taker_keeps_running_and_the_pair_converges(steps: list,
                                                                                   witness: bool) -> None:
    """Freezes of either node (some in the middle of a tick), agent restarts and swaps, with the
    link up: histories never diverge (no acknowledged write is set aside), a node that took over
    never yields to a woken one, and the pair ends as one PRIM and one SECOND."""
    stepped_down: list = []
    trace = run(quiet(6) + steps + quiet(12), witness, stepped_down)
    world_states = {trace[-1][1:]}
    assert world_states <= {(S.PRIM, S.SECOND), (S.SECOND, S.PRIM)}, trace
    for tick, node, view in stepped_down:
        assert not (view.listened and view.peer.woke), f"the taker n{node + 1} yielded at tick {tick}: {trace}"


@settings(max_examples=300, deadline=None)
@given(st.lists(calm, max_size=30), st.booleans())
def test_freezes_alone_never_make_a_split_brain(steps: list, witness: bool) -> None:
    assert not diverged_at_some_tick(quiet(6) + steps + quiet(6), witness)


@pytest.mark.parametrize("mid_tick", [False, True])
@pytest.mark.parametrize("witness", [False, True])
def test_a_frozen_primary_wakes_beside_its_taker_and_steps_down(mid_tick: bool, witness: bool) -> None:
    """Finding 1: node1 (PRIM, default primary) frozen for 4 ticks; node2 takes over. On waking
    node1 acts on no silence (neither the stale view nor the old heartbeats), steps down, is
    resynced and becomes SECOND; node2 keeps running all along."""
    stepped_down: list = []
    trace = run(quiet(6) + frozen(0, 4, mid_tick) + quiet(10), witness, stepped_down)
    assert trace[5][1:] == (S.PRIM, S.SECOND)
    took_over = next(i for i, t in enumerate(trace) if t[2].is_primary)
    assert all(t[2].is_primary for t in trace[took_over:]), trace
    assert trace[-1][1:] == (S.SECOND, S.PRIM)
    assert [n for _, n, _ in stepped_down] == [0]
    assert not diverged_at_some_tick(quiet(6) + frozen(0, 4, mid_tick) + quiet(10), witness)


def test_a_frozen_secondary_wakes_under_the_primary_that_went_on_alone() -> None:
    trace = run(quiet(6) + frozen(1, 4, True) + quiet(10), witness=False)
    assert all(t[1].is_primary for t in trace[5:]) and trace[-1][1:] == (S.PRIM, S.SECOND)


# --- the witness down, then the peer lost (issue 15, finding 11) ------------------------------

def test_a_primary_that_stepped_down_for_a_downed_witness_comes_back_with_it() -> None:
    """The witness goes down (ticks 6-15), then the link is cut (ticks 9-20): the primary steps
    down (it cannot tell), the SECOND may not take over. When the witness is back, the former
    primary, its last holder, is vouched; it leads again only while the witness does not hear
    the other (lost for good here: frozen from tick 18), who never held the lease and still
    waits. On the heal the pair converges with no split brain."""
    freeze_cut = (False, None, Command.NONE, None, None, (1, 12, False))   # the link stays cut
    steps = quiet(9) + quiet(8, link=False) + [freeze_cut] + quiet(3, link=False) + quiet(20)
    trace = run(steps, witness=True, witness_down=frozenset(range(6, 16)))
    assert trace[9] == (True, S.PRIM, S.SECOND) and trace[11][1:] == (S.WAIT, S.WAIT)
    assert all(t[1:] == (S.WAIT, S.WAIT) for t in trace[11:17])    # both refused while it is down
    assert (False, S.ALONE, S.WAIT) in trace                        # back: the last holder leads
    assert trace[-1][1:] == (S.PRIM, S.SECOND)
    assert not diverged_at_some_tick(steps, witness=True)


def test_a_vouched_node_does_not_resume_while_the_witness_hears_its_peer() -> None:
    """The same, both nodes alive and reaching the witness once it is back: the peer may have
    acted alone beside this node without the lease, so nobody resumes until the heal (the
    price of the rule); then the pair converges with no split brain."""
    steps = quiet(9) + quiet(12, link=False) + quiet(8)
    trace = run(steps, witness=True, witness_down=frozenset(range(6, 16)))
    assert all(t[1:] == (S.WAIT, S.WAIT) for t in trace[11:22]), trace
    assert trace[-1] == (True, S.PRIM, S.SECOND)
    assert not diverged_at_some_tick(steps, witness=True)


def test_the_node_that_never_held_the_lease_stays_out_when_the_witness_returns() -> None:
    """Same, but the survivor is the SECOND (node1, the primary, frozen for 20 ticks from tick 7):
    node2 never held the lease, so it cannot tell what node1 may have written alone; it waits,
    and the pair converges once node1 is back."""
    steps = quiet(6) + frozen(0, 20, False) + quiet(30)
    trace = run(steps, witness=True, witness_down=frozenset(range(6, 16)))
    assert all(t[2] is S.WAIT for t in trace[9:27]), trace
    assert trace[-1][1:] in ((S.PRIM, S.SECOND), (S.SECOND, S.PRIM))
    assert not diverged_at_some_tick(steps, witness=True)


def test_heartbeats_lost_while_replication_flows_move_nothing() -> None:
    """Finding 6: heartbeats blocked (or refused for a clock far off) while the replication link
    flows: no takeover, no going alone; with a witness the SECOND may leave (it is refused),
    never promote; on the heal the pair is mirrored again."""
    for witness in (False, True):
        steps = quiet(6) + [(REPLICATION, None, Command.NONE, None, reboot, None) for reboot in (None, 1, None, None, None)]
        trace = run(steps + quiet(8), witness)
        assert all(t[1] is S.PRIM and not t[2].is_primary for t in trace[5:12]), trace
        assert trace[-1][1:] == (S.PRIM, S.SECOND)


# --- one-way losses (issue 15, finding 7) -----------------------------------------------------

@pytest.mark.parametrize("witness", [False, True])
@pytest.mark.parametrize("unheard", [0, 1])
def test_a_one_way_loss_blocks_writes_briefly_and_the_pair_converges_after_the_heal(unheard: int,
                                                                                    witness: bool) -> None:
    """Finding 7: nothing from one node reaches the other, the other way flows, for longer than
    the block timeout. Never two primaries that acknowledge writes; writes blocked for at most
    two ticks (never until the mount refuses by itself); one node serves to the end of the loss;
    after the heal, PRIM + SECOND. With a witness and the primary unheard, the SECOND hears
    nothing and is refused the lease: it used to keep its up-to-date flag, so the primary, which
    hears it, waited for the block timeout and stepped down, and nothing served."""
    lost = BLOCK + 10
    mirrors: list = []
    trace = run(quiet(6) + [(UNHEARD[unheard], None, Command.NONE, None, None)] * lost + quiet(10), witness,
                mirrors=mirrors)
    assert trace[6][1:] == (S.PRIM, S.SECOND)
    for (_, s1, s2), (m1, m2) in zip(trace, mirrors):
        assert not (serving(s1, m1) and serving(s2, m2)), trace
    during = [serving(s1, m1) or serving(s2, m2) for (_, s1, s2), (m1, m2) in zip(trace[7:7 + lost], mirrors[7:7 + lost])]
    runs = "".join("x" if up else "-" for up in during)
    assert max(map(len, runs.split("x"))) <= 2 and during[-1], f"writes blocked: {runs}: {trace}"
    assert MirrorHealth.REFUSED not in {m for pair in mirrors for m in pair}
    assert trace[-1][1:] in ((S.PRIM, S.SECOND), (S.SECOND, S.PRIM)), trace
    assert not diverged_at_some_tick(quiet(6) + [(UNHEARD[unheard], None, Command.NONE, None, None)] * lost
                                     + quiet(10), witness)


def test_a_one_way_loss_during_a_swaps_hand_over_makes_one_primary():
    """Found by the property above in CI: node1 hands over (`second`) and stops hearing node2 the
    same moment (one way). node2 promotes by the hand-over (no witness asked); node1, which holds
    the witness's lease, must not take over on the silence of a peer it just handed over to."""
    trace = run(quiet(6) + [(True, 0, Command.SECOND, None, None), (UNHEARD[1], None, Command.NONE, None, None)]
                + quiet(6), True)
    assert [s.is_primary for s in trace[-1][1:]] == [False, True]


def test_a_secondary_marked_stale_as_the_resync_to_it_ends_is_resynced_again():
    """Campaigns 1602 and 1604: node2 loses node1's heartbeats (one way, the witness hears node1)
    and marks itself stale; node1 goes ALONE and resyncs it; as that resync ends, node2 stops
    hearing node1 again (heartbeats only here) and marks its fresh copy stale once more. node1's
    resync was done and it waited for a SECOND that never came: ALONE + WAIT for ever. Now it
    resyncs the stale peer again and the pair converges with no operator."""
    lost = [(UNHEARD[0], None, Command.NONE, None, None)] * 2
    resync_ends_unheard = [(True, None, Command.NONE, None, None), (REPLICATION, None, Command.NONE, None, None)]
    trace = run(quiet(6) + lost + resync_ends_unheard + quiet(8), witness=True)
    assert trace[5][1:] == (S.PRIM, S.SECOND)
    assert trace[9][1:] == (S.ALONE, S.WAIT), trace     # node2 stale again after the resync ended
    assert trace[-1] == (True, S.PRIM, S.SECOND), trace
    assert not diverged_at_some_tick(quiet(6) + lost + resync_ends_unheard + quiet(8), witness=True)


def test_swap_then_a_mid_tick_freeze_then_a_swap_request_converges() -> None:
    """Found by the freeze property in CI (2026-12-04, night): node1 hands over, is frozen for a
    tick mid-tick, and wakes on the view it built before (node2 still SECOND); meanwhile node2
    took over and was told `swap` back. Both were SECOND in HANDOVER, each waiting for the other
    to take: nothing served for ever. The default primary takes."""
    steps = quiet(6) + [(True, 0, Command.SWAP, None, None), (True, None, Command.NONE, None, None, (0, 1, True)),
                        (True, 1, Command.SWAP, None, None)] + quiet(12)
    trace = run(steps, witness=False)
    assert trace[9][1:] == (S.SECOND, S.SECOND), trace      # both handed over
    assert trace[-1] == (True, S.PRIM, S.SECOND), trace
    assert not diverged_at_some_tick(steps, witness=False)
