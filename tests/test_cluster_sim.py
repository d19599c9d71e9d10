"""Properties of decide(): random views, and two simulated nodes exchanging their states.

The simulation gives both nodes consistent snapshots (each sees the other's state of the previous
tick), applies their actions to a small model (generation histories, up-to-date flags, resync),
and checks after every tick that the safety rules hold.
"""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from hamirror.cluster.actions import (
    ForgetHistory, MarkUpToDate, NewGeneration, StartResync,
)
from hamirror.cluster.decide import decide
from hamirror.cluster.states import NodeState, is_allowed
from hamirror.cluster.view import (
    CheckerHealth, Command, ModuleView, PeerView, ResyncStatus, SwapPhase,
)
from hamirror.journal.generations import Relation

S = NodeState

peers = st.builds(PeerView, alive=st.booleans(), state=st.none() | st.sampled_from(NodeState),
                  uptodate=st.booleans(), swap=st.sampled_from(SwapPhase))
views = st.builds(
    ModuleView, module=st.just("m"), node=st.just("n1"), state=st.sampled_from(NodeState),
    uptodate=st.booleans(), peer=peers, relation=st.sampled_from(Relation),
    quorum=st.sampled_from([None, True, False]), command=st.sampled_from(Command),
    default_primary=st.booleans(), cold_start=st.booleans(),
    checker=st.builds(CheckerHealth, ok=st.booleans(), restarts=st.integers(0, 5)),
    resync=st.sampled_from(ResyncStatus), swap=st.sampled_from(SwapPhase),
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
    if view.relation in (Relation.DIVERGED, Relation.PEER_NEWER):
        assert not any(isinstance(a, StartResync) for a in d.actions), "moved data"
    if any(isinstance(a, ForgetHistory) for a in d.actions):
        assert view.command is Command.SECOND
    if view.quorum is False and not view.peer.alive:
        assert not d.state.is_primary, "acted alone against the witness"
    if d.state is not view.state:
        assert d.actions[0].__class__.__name__ == "Persist"


# --- two-node simulation --------------------------------------------------------------------

@dataclasses.dataclass
class Node:
    name: str
    default_primary: bool
    state: NodeState = S.STOP
    uptodate: bool = False
    history: tuple[int, ...] = ()
    swap: SwapPhase = SwapPhase.NONE
    resync: ResyncStatus = ResyncStatus.NONE
    checker_ok: bool = True


def relation(a: Node, b: Node) -> Relation:
    """The generation-history comparison the journal makes."""
    if not a.history or not b.history:
        return Relation.UNKNOWN
    if a.history[-1] == b.history[-1]:
        return Relation.SAME
    if b.history[-1] in a.history:
        return Relation.LOCAL_NEWER
    if a.history[-1] in b.history:
        return Relation.PEER_NEWER
    return Relation.DIVERGED if set(a.history) & set(b.history) else Relation.UNKNOWN


def make_view(me: Node, other: Node, link: bool, cmd: Command, quorum: bool | None) -> ModuleView:
    peer = PeerView(alive=link, state=other.state, uptodate=other.uptodate, swap=other.swap) \
        if link else PeerView()
    return ModuleView(
        module="m", node=me.name, state=me.state, uptodate=me.uptodate, peer=peer,
        relation=relation(me, other) if link else Relation.UNKNOWN,
        quorum=quorum if not link else (None if quorum is None else True),
        command=cmd, default_primary=me.default_primary,
        cold_start=link and not me.history and not other.history,
        checker=CheckerHealth(ok=me.checker_ok), resync=me.resync, swap=me.swap)


class World:
    def __init__(self) -> None:
        self.nodes = (Node("n1", True), Node("n2", False))
        self.next_gen = 1

    def finish_resyncs(self, link: bool) -> None:
        """A resync started last tick ends now: DONE if the link held, else FAILED."""
        a, b = self.nodes
        for src, dst in ((a, b), (b, a)):
            if src.resync is ResyncStatus.RUNNING and src.state.is_primary:
                ok = link and dst.resync is ResyncStatus.RUNNING
                src.resync = dst.resync = ResyncStatus.DONE if ok else ResyncStatus.FAILED
                if ok:
                    dst.history = src.history

    def apply(self, node: Node, other: Node, decision, link: bool) -> None:
        if decision.state is not node.state:
            node.resync = ResyncStatus.NONE
        node.state, node.swap = decision.state, decision.swap
        for action in decision.actions:
            if isinstance(action, NewGeneration):
                node.history += (self.next_gen,)
                self.next_gen += 1
            elif isinstance(action, ForgetHistory):
                node.history = ()
            elif isinstance(action, MarkUpToDate):
                node.uptodate = action.value
            elif isinstance(action, StartResync) and link and other.state in (S.WAIT, S.SECOND):
                node.resync = other.resync = ResyncStatus.RUNNING


BOTH = 2
events = st.tuples(
    st.booleans() | st.just(True),                                  # link up (mostly)
    st.sampled_from([None, 0, 1, BOTH]),                            # who gets a command
    st.sampled_from(list(Command)),
    st.sampled_from([None, 0, 1]),                                  # whose checker fails
    st.sampled_from([None, None, 0, 1]),                            # whose agent restarts
).filter(lambda e: not (e[1] == BOTH and e[2] is Command.PRIM))     # forcing both: operator error


def run(steps: list, witness: bool) -> list[tuple]:
    """Run the simulation; return the (link, state1, state2) trace and check every tick."""
    world = World()
    a, b = world.nodes
    trace = []
    granted = 0                                                     # the witness's favourite
    for link, who, cmd, failing, reboot in [(True, BOTH, Command.START, None, None)] + steps:
        world.finish_resyncs(link)
        if reboot is not None and world.nodes[reboot].state is not S.STOP:
            node = world.nodes[reboot]                              # the agent restarts: WAIT,
            node.state, node.swap, node.resync = S.WAIT, SwapPhase.NONE, ResyncStatus.NONE
        if not link and witness and not any(n.state.is_primary for n in world.nodes):
            granted = 0
        elif not link and witness:
            granted = 0 if a.state.is_primary else 1
        for i, n in enumerate(world.nodes):
            n.checker_ok = failing != i or not n.state.is_primary
        views = [make_view(n, world.nodes[1 - i], link, cmd if who in (i, BOTH) else Command.NONE,
                           (granted == i) if witness else None)
                 for i, n in enumerate(world.nodes)]
        decisions = [decide(v) for v in views]
        for i, d in enumerate(decisions):
            world.apply(world.nodes[i], world.nodes[1 - i], d, link)
        trace.append((link, a.state, b.state))
        both = a.state.is_primary and b.state.is_primary
        if link:
            assert not both, f"two primaries on a connected tick: {trace}"
        if witness:
            assert not both, f"two primaries despite the witness: {trace}"
        for i, d in enumerate(decisions):
            if relation(*((a, b) if i == 0 else (b, a))) is Relation.DIVERGED and link:
                assert not any(isinstance(x, StartResync) for x in d.actions)
    return trace


@settings(max_examples=600, deadline=None)
@given(st.lists(events, max_size=40), st.booleans(), st.booleans())
def test_two_nodes_never_both_primary_on_consistent_views(steps: list, witness: bool,
                                                          warm: bool) -> None:
    run((quiet(6) if warm else []) + steps, witness)


def quiet(n: int, link: bool = True) -> list:
    return [(link, None, Command.NONE, None, None)] * n


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
