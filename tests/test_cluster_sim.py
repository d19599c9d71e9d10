"""Properties of decide(): random views, and two simulated nodes exchanging their states.

The simulation gives both nodes consistent snapshots (each sees the other's state of the previous
tick), applies their actions to a small model (generation histories, up-to-date flags, resync),
and checks after every tick that the safety rules hold. A node can be *frozen* (every process
stopped) for a few ticks: it neither hears nor is heard, and on waking it has not listened for
``LISTEN`` ticks; a freeze in the middle of a tick makes it decide on waking from the view it built
before the freeze. A link may fail one way only (``UNHEARD``): a primary's mount whose writes or
acknowledgements are lost is FENCED (writes blocked) until a verdict, and refuses by itself after
``BLOCK`` ticks, as ``[fence] block_timeout`` does. With a witness, the lease holder's request
asks for the marks of outdated copies its decision will need, and every view carries the marks
(:meth:`World.mark`, as the agent and the witness do).
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hamirror.cluster.actions import (
    ForgetHistory, MarkUpToDate, MountReplicated, NewGeneration, RefuseWrites, RemountDataPath, SetMirroring,
    StartResync,
)
from hamirror.cluster.decide import automatic, decide, uses_silence
from hamirror.cluster.outdate import asks_to_outdate, clears_outdated
from hamirror.cluster.states import NodeState, is_allowed
from hamirror.cluster.view import (
    CheckerHealth, Command, MirrorHealth, ModuleView, PeerView, ResyncStatus, SwapPhase,
)
from hamirror.journal.generations import Relation

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


# --- two-node simulation --------------------------------------------------------------------

LISTEN = 2      # ticks a node listens after it wakes (or its agent starts) before silence counts
BLOCK = 30      # ticks a FENCED mount waits for a verdict before it refuses by itself (block_timeout)
WRITABLE = (MirrorHealth.STREAMING, MirrorHealth.ALONE)


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
    frozen: int = 0                      # ticks left with every process stopped
    deaf: int = 0                        # ticks left before it has listened a full timeout
    held: ModuleView | None = None       # the view it built when a freeze hit it mid-tick
    woken: bool = False                  # this tick is its first since the freeze
    frozen_on: tuple[int, ...] | None = None   # its history when the freeze hit
    mirror: MirrorHealth = MirrorHealth.NONE     # what its mount does (primary states)
    blocked: int = 0                     # ticks its mount has been FENCED
    done_ticks: int = 0                  # ticks its resync has been DONE (settled after one)


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


def make_view(me: Node, other: Node, link: bool, cmd: Command, quorum: bool | None,
              vouched: bool = False, linked: bool = False, peer_leased: bool = False,
              peer_asks: bool = False) -> ModuleView:
    peer = PeerView(alive=link, state=other.state, uptodate=other.uptodate, swap=other.swap,
                    woke=other.deaf > 0) if link else PeerView()
    resync = me.resync
    if me.state is S.WAIT and peer.is_primary and me.uptodate and relation(me, other) is Relation.SAME:
        resync = ResyncStatus.DONE          # as the runner tells it from the journal (a restart forgets)
    elif me.state is S.WAIT and resync is ResyncStatus.DONE:
        resync = ResyncStatus.NONE          # the journal's flag again: a copy marked stale since is not done
    return ModuleView(
        module="m", node=me.name, state=me.state, uptodate=me.uptodate, peer=peer,
        relation=relation(me, other) if link else Relation.UNKNOWN,
        quorum=quorum if not link else (None if quorum is None else True),
        command=cmd, default_primary=me.default_primary,
        cold_start=link and not me.history and not other.history,
        checker=CheckerHealth(ok=me.checker_ok), resync=resync, resync_settled=me.done_ticks > 0,
        swap=me.swap, listened=me.deaf == 0,
        vouched=vouched and not link, linked=linked and not link, peer_leased=peer_leased and not link,
        peer_asks=peer_asks and not link,
        mirror=me.mirror if me.state.is_primary else MirrorHealth.NONE)


class Lease:
    """The witness: who holds the lease, and who held it before this tenure (it remembers the last
    holder across its own restarts)."""

    def __init__(self) -> None:
        self.holder: int | None = None
        self.last: int | None = None
        self.before: int | None = None

    def give(self, node: int | None) -> None:
        if node is not None and node != self.holder:
            self.before, self.last = self.last, node
        self.holder = node

    def vouches(self, node: int) -> bool:
        return self.holder == node and self.before == node


class World:
    def __init__(self) -> None:
        self.nodes = (Node("n1", True), Node("n2", False))
        self.next_gen = 1
        self.lease = Lease()
        self.outdated: int | None = None     # the witness's mark: the node whose copy is outdated

    def mark(self, views: list[ModuleView], up: bool) -> list[ModuleView]:
        """The holder's request asks for its marks (cluster/outdate.py), the witness applies them
        (quorum.apply_marks), and the views carry the answer's marks."""
        holder = self.lease.holder
        if up and holder is not None and not self.nodes[holder].frozen:
            view = dataclasses.replace(views[holder], outdated=self.outdated == holder)
            if asks_to_outdate(view) and (self.outdated != holder or view.command is Command.PRIM):
                self.outdated = 1 - holder
            elif clears_outdated(view):
                self.outdated = None
        return [dataclasses.replace(v, outdated=self.outdated == i, peer_outdated=self.outdated == 1 - i)
                for i, v in enumerate(views)]

    def witness(self, link: bool, awake: list[bool], up: bool) -> None:
        """The lease this tick: the primary's while both are heard (a holder that is not primary
        stops claiming: released); asked again once the nodes acted; in a partition, or a one-way loss, the primary's (the only one
        claiming before), else n1's; a frozen node's lapses; none while it is down."""
        a, b = self.nodes
        if not up:
            self.lease.give(None)
        elif not all(awake):
            self.lease.give(awake.index(True) if any(awake) else None)
        elif link:
            primaries = [i for i, n in enumerate(self.nodes) if n.state.is_primary]
            if len(primaries) == 1 and self.lease.holder != primaries[0]:
                self.lease.give(primaries[0])   # the holder hears its peer and is not primary: released
        elif self.lease.holder is None or not any(n.state.is_primary for n in self.nodes):
            self.lease.give(0 if a.state.is_primary or not b.state.is_primary else 1)

    def finish_resyncs(self, link: bool) -> None:
        """A resync started last tick ends now: DONE if the link held, else FAILED."""
        a, b = self.nodes
        for src, dst in ((a, b), (b, a)):
            if src.resync is ResyncStatus.RUNNING and src.state.is_primary:
                ok = link and dst.resync is ResyncStatus.RUNNING
                src.resync = dst.resync = ResyncStatus.DONE if ok else ResyncStatus.FAILED
                if ok:
                    dst.history, dst.uptodate = src.history, True

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
        mount(node, decision)
        node.done_ticks = node.done_ticks + 1 if node.resync is ResyncStatus.DONE else 0

    def fence(self, flows: list[bool], awake: list[bool], replication_only: bool) -> None:
        """A streaming mount whose writes or acknowledgements are lost blocks (FENCED); one that
        waited ``BLOCK`` ticks for a verdict refuses by itself (REFUSED)."""
        for i, node in enumerate(self.nodes):
            if not node.state.is_primary or not awake[i]:
                continue
            lost = not replication_only and not (flows[0] and flows[1] and all(awake))
            if node.mirror is MirrorHealth.STREAMING and lost:
                node.mirror, node.blocked = MirrorHealth.FENCED, 0
            elif node.mirror is MirrorHealth.FENCED:
                node.blocked += 1
                if node.blocked >= BLOCK:
                    node.mirror = MirrorHealth.REFUSED


    def freeze(self, index: int, ticks: int, mid_tick: bool, view: ModuleView) -> None:
        """Stop every process of a node for ``ticks``; mid-tick: after it built this tick's view."""
        node = self.nodes[index]
        node.frozen, node.held, node.frozen_on = ticks, view if mid_tick else None, node.history

    def wake_up(self) -> None:
        """Count the frozen ticks down; a node whose freeze ends will decide next tick, deaf."""
        for node in self.nodes:
            node.woken = False
            if node.frozen:
                node.frozen -= 1
                if not node.frozen:
                    node.woken, node.deaf = True, LISTEN
            elif node.deaf:
                node.deaf -= 1


def mount(node: Node, decision) -> None:
    """What a decision's actions do to the node's mount."""
    if not node.state.is_primary:
        node.mirror = MirrorHealth.NONE
        return
    for action in decision.actions:
        if isinstance(action, (MountReplicated, SetMirroring)):
            on = action.peer_connected if isinstance(action, MountReplicated) else action.enabled
            node.mirror = MirrorHealth.STREAMING if on else MirrorHealth.ALONE   # a grant lifts REFUSED too
        elif isinstance(action, RemountDataPath):
            node.mirror = MirrorHealth.ALONE if action.alone else MirrorHealth.STREAMING
        elif isinstance(action, RefuseWrites):
            node.mirror = MirrorHealth.REFUSED
    if node.mirror is MirrorHealth.NONE:      # a primary from before mounts were modelled
        node.mirror = MirrorHealth.STREAMING if node.state is S.PRIM else MirrorHealth.ALONE

def stale_primary(node: Node, other: Node) -> bool:
    """A woken primary that has not started a generation since it froze, beside a newer peer: its
    mount lost the peer (which took over) and acknowledges nothing until a verdict it cannot get."""
    return (node.frozen_on is not None and node.history == node.frozen_on
            and relation(other, node) is Relation.LOCAL_NEWER)


BOTH = 2
REPLICATION = "replication"     # as link: heartbeats lost, the replication link flows
UNHEARD = ("n1 unheard", "n2 unheard")   # as link: nothing from n1 (n2) reaches the other; the other way flows
events = st.tuples(
    st.sampled_from([True, True, False, REPLICATION, *UNHEARD]),    # link up (mostly)
    st.sampled_from([None, 0, 1, BOTH]),                            # who gets a command
    st.sampled_from(list(Command)),
    st.sampled_from([None, 0, 1]),                                  # whose checker fails
    st.sampled_from([None, None, 0, 1]),                            # whose agent restarts
).filter(lambda e: not (e[1] == BOTH and e[2] is Command.PRIM))     # forcing both: operator error
freezes = st.none() | st.tuples(st.sampled_from([0, 1]), st.integers(1, 6), st.booleans())


def run(steps: list, witness: bool, stepped_down: list | None = None,
        witness_down: frozenset[int] = frozenset(), mirrors: list | None = None) -> list[tuple]:
    """Run the simulation; return the (link, state1, state2) trace and check every tick. An event
    may carry a sixth element: (node, ticks, mid_tick) freezes that node (one freeze at a time).
    ``link`` may be ``REPLICATION``: the heartbeats are lost but the replication link flows; or
    one of ``UNHEARD``: one direction lost (``link`` False in the trace). ``witness_down``: the
    ticks (counted in ``steps`` from 0) the witness machine is down. ``mirrors`` collects each
    tick's (mirror1, mirror2)."""
    world = World()
    a, b = world.nodes
    trace = []
    for tick, event in enumerate([(True, BOTH, Command.START, None, None)] + steps):
        raw, who, cmd, failing, reboot, freeze = (*event, None)[:6]
        replication_only = raw == REPLICATION
        flows = [bool(raw) and raw != UNHEARD[1 - i] for i in range(2)]   # the peer's traffic reaches node i
        link = flows[0] and flows[1]
        world.finish_resyncs(link and not any(n.frozen for n in world.nodes))   # a frozen side applies nothing
        if reboot is not None and world.nodes[reboot].state is not S.STOP and not world.nodes[reboot].frozen:
            node = world.nodes[reboot]                              # the agent restarts: WAIT,
            node.state, node.swap, node.resync = S.WAIT, SwapPhase.NONE, ResyncStatus.NONE
            node.deaf = LISTEN                                      # and listens before acting alone
        awake = [not n.frozen for n in world.nodes]
        hears = [flows[i] and awake[1 - i] and not n.woken and not replication_only for i, n in enumerate(world.nodes)]
        world.witness(link and not replication_only, awake, tick - 1 not in witness_down)
        leased = [witness and world.lease.holder == 1 - i and awake[1 - i] for i in range(2)]
        asks = [witness and tick - 1 not in witness_down and awake[1 - i] for i in range(2)]   # the witness hears it
        for i, n in enumerate(world.nodes):
            n.checker_ok = failing != i or not n.state.is_primary
        views = [n.held if n.woken and n.held is not None else
                 make_view(n, world.nodes[1 - i], hears[i], cmd if who in (i, BOTH) else Command.NONE,
                           (world.lease.holder == i) if witness else None, witness and world.lease.vouches(i),
                           replication_only and all(awake) and any(n.state is S.PRIM for n in world.nodes),
                           leased[i], asks[i])
                 for i, n in enumerate(world.nodes)]
        views = [dataclasses.replace(v, listened=False) if n.woken else v for v, n in zip(views, world.nodes)]
        if witness:
            views = world.mark(views, tick - 1 not in witness_down)
        if freeze is not None and all(awake) and not any(n.deaf or n.woken for n in world.nodes):
            world.freeze(*freeze, views[freeze[0]])
        decisions = [None if n.frozen else decide(v) for v, n in zip(views, world.nodes)]
        for i, d in enumerate(decisions):
            if d is not None:
                before = world.nodes[i].state
                world.apply(world.nodes[i], world.nodes[1 - i], d, hears[i])
                if stepped_down is not None and before.is_primary and d.state is S.WAIT:
                    stepped_down.append((len(trace), i, views[i]))
        world.fence(flows, awake, replication_only)      # a mount sees the loss as the agents do, or later
        world.witness(link and not replication_only, [not n.frozen for n in world.nodes], tick - 1 not in witness_down)
        world.wake_up()
        trace.append((link, a.state, b.state))
        both = a.state.is_primary and b.state.is_primary
        excused = stale_primary(a, b) or stale_primary(b, a)
        if link and all(awake) and not replication_only:
            assert not both or excused, f"two primaries on a connected tick: {trace}"
        if witness:
            assert not both or excused, f"two primaries despite the witness: {trace}"
        if mirrors is not None:
            mirrors.append((a.mirror, b.mirror))
        for i, d in enumerate(decisions):     # as seen when deciding: the peer may fork the same tick, unheard
            if views[i].relation is Relation.DIVERGED and d is not None:
                assert not any(isinstance(x, StartResync) for x in d.actions)
    return trace


@settings(max_examples=600, deadline=None)
@given(st.lists(events, max_size=40), st.booleans(), st.booleans())
def test_two_nodes_never_both_primary_on_consistent_views(steps: list, witness: bool,
                                                          warm: bool) -> None:
    run((quiet(6) if warm else []) + steps, witness)


def test_a_forced_prim_on_a_one_way_loss_does_not_run_beside_the_peer_that_hears_it() -> None:
    """Found by the property above: n1's agent restarts (n2 takes over), then n2's (both WAIT,
    link down), then n2's traffic is lost one way and the operator forces `prim` on n1, which
    holds the lease. n2 hears n1 WAIT and promotes its newer data; n1 must not promote too."""
    steps = quiet(7) + [(True, None, Command.NONE, None, 0), (False, None, Command.NONE, None, 1),
                        (UNHEARD[1], 0, Command.PRIM, None, None)]
    trace = run(steps, witness=True)
    assert trace[-1][1:] == (S.WAIT, S.ALONE)


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

def frozen(node: int, ticks: int, mid_tick: bool) -> list:
    return [(True, None, Command.NONE, None, None, (node, ticks, mid_tick))]


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


def diverged_at_some_tick(steps: list, witness: bool) -> bool:
    """Run and report whether the two histories ever diverged (a write set aside)."""
    world_relations = []
    original = World.wake_up

    def watch(world: World) -> None:
        original(world)
        world_relations.append(relation(*world.nodes))

    World.wake_up = watch
    try:
        run(steps, witness)
    finally:
        World.wake_up = original
    return Relation.DIVERGED in world_relations


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
    primary, its last holder, is vouched and leads again; the other, who never held it, still
    waits. On the heal the pair converges with no split brain."""
    steps = quiet(9) + quiet(12, link=False) + quiet(8)
    trace = run(steps, witness=True, witness_down=frozenset(range(6, 16)))
    assert trace[9] == (True, S.PRIM, S.SECOND) and trace[11][1:] == (S.WAIT, S.WAIT)
    assert all(t[1:] == (S.WAIT, S.WAIT) for t in trace[11:17])    # both refused while it is down
    assert (False, S.ALONE, S.WAIT) in trace                        # back: the last holder leads
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

def serving(node: NodeState, mirror: MirrorHealth) -> bool:
    """A primary whose mount acknowledges writes."""
    return node.is_primary and mirror in WRITABLE


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
