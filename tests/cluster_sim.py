"""Two simulated nodes exchanging their states, for the properties of decide() (tests/test_cluster_sim*.py).

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

A sequence to a primary state may take ticks (an event's seventh element: how many more): its
node advertises the target from the start (as a promotion does), makes no decision until it ends,
and meanwhile gets the verdicts beside a sequence on its blocked mount (:mod:`hamirror.cluster.blocked`,
as ``agent/beside.py`` applies them): a grant goes ALONE with a new generation, a refusal refuses
writes and ends the sequence (a failed promotion says primary; the next decision handles it).
"""

from __future__ import annotations

import dataclasses

from hypothesis import strategies as st

from hamirror.cluster import blocked
from hamirror.cluster.actions import (
    ForgetHistory, MarkUpToDate, MountReplicated, NewGeneration, RefuseWrites, RemountDataPath, SetMirroring,
    StartResync,
)
from hamirror.cluster.decide import decide
from hamirror.cluster.outdate import asks_to_outdate, clears_outdated, yields_beside
from hamirror.cluster.states import NodeState
from hamirror.cluster.view import CheckerHealth, Command, MirrorHealth, ModuleView, PeerView, ResyncStatus, SwapPhase
from hamirror.journal.generations import Relation

S = NodeState

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
    busy: int = 0                        # ticks left of its sequence to a primary state (no decision)
    promoting: bool = False              # that sequence started from a state that is not primary
    peer_led: bool = False               # durable: the peer may lead beside it; never vouched for until SECOND or primary


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
                    woke=other.deaf > 0, fenced=other.state.is_primary and other.mirror is MirrorHealth.FENCED,
                    yielded=other.peer_led) \
        if link else PeerView()
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
        if up and holder is not None and not self.nodes[holder].frozen and not self.nodes[holder].busy:
            view = dataclasses.replace(views[holder], outdated=self.outdated == holder)
            if asks_to_outdate(view) and (self.outdated != holder or view.command is Command.PRIM):
                self.outdated = 1 - holder
            elif clears_outdated(view):
                self.outdated = None
        return [dataclasses.replace(v, outdated=self.outdated == i, peer_outdated=self.outdated == 1 - i)
                for i, v in enumerate(views)]

    def witness(self, link: bool, awake: list[bool], up: bool, hears: list[bool] | None = None) -> None:
        """The lease this tick: the primary's while both are heard (a holder that is not primary
        stops claiming: released); asked again once the nodes acted; in a partition, or a one-way
        loss, a claimant's (:meth:`claimants`); a frozen node's lapses; none while it is down.
        ``hears``: whether each node hears its peer (both, when not given and ``link``)."""
        hears = hears if hears is not None else [link, link]
        if not up:
            self.lease.give(None)
        elif not all(awake):
            self.lease.give(next(iter(self.claimants(awake, hears)), None))
        elif link:
            primaries = [i for i, n in enumerate(self.nodes) if n.state.is_primary]
            if len(primaries) == 1 and self.lease.holder != primaries[0]:
                self.lease.give(primaries[0])   # the holder hears its peer and is not primary: released
            elif not primaries:
                self.lease.give(None)           # nobody claims: it lapses (the last holder is remembered)
        elif self.lease.holder is None or not any(n.state.is_primary for n in self.nodes):
            self.lease.give(next(iter(self.claimants([True, True], hears)), None))

    def claimants(self, awake: list[bool], hears: list[bool]) -> list[int]:
        """The awake nodes that claim the lease (Agent._claims), the one granted first: a primary
        always claims; any other node only when it does not hear its peer, has listened a full
        timeout since it woke, and has a module started (not STOP). Among those, the holder keeps
        it (it renews), else the node whose copy is behind wins the race (the worst case), else n1."""
        nodes = [(i, n) for i, n in enumerate(self.nodes) if awake[i]]
        primaries = [i for i, n in nodes if n.state.is_primary]
        if primaries:
            return primaries
        others = [i for i, n in nodes if not hears[i] and not n.deaf and n.state is not S.STOP]
        a, b = self.nodes
        behind = {Relation.PEER_NEWER: 0, Relation.LOCAL_NEWER: 1}.get(relation(a, b))
        return sorted(others, key=lambda i: (i != self.lease.holder, i != behind, i))

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
        new = decision.state
        if new is not node.state:
            node.resync = ResyncStatus.NONE
        if new.is_primary or (new is S.SECOND and new is not node.state):
            node.peer_led = False
        if yields_beside(new, PeerView(alive=link, state=other.state)):
            node.peer_led = True         # heard a peer that may lead beside it: recorded, then advertised
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


    def beside(self, node: Node, view: ModuleView) -> None:
        """One tick of a node's sequence to a primary state: the verdict on its blocked mount."""
        verdict = blocked.verdict(view.peer, view.quorum, view.relation, fenced=node.mirror is MirrorHealth.FENCED,
                                  staying_primary=True, promoting=node.promoting, peer_leased=view.peer_leased,
                                  listened=view.listened)
        if verdict is blocked.Blocked.GRANT:
            node.mirror = MirrorHealth.ALONE            # the mount starts the new generation
            node.history += (self.next_gen,)
            self.next_gen += 1
        elif verdict is blocked.Blocked.REFUSE:
            node.mirror, node.busy = MirrorHealth.REFUSED, 0   # the sequence fails at its next write
        if node.busy:
            node.busy -= 1

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
    may carry a sixth element: (node, ticks, mid_tick) freezes that node (one freeze at a time);
    and a seventh: the ticks more that a sequence to a primary state decided this tick takes.
    ``link`` may be ``REPLICATION``: the heartbeats are lost but the replication link flows; or
    one of ``UNHEARD``: one direction lost (``link`` False in the trace). ``witness_down``: the
    ticks (counted in ``steps`` from 0) the witness machine is down. ``mirrors`` collects each
    tick's (mirror1, mirror2)."""
    world = World()
    a, b = world.nodes
    trace = []
    for tick, event in enumerate([(True, BOTH, Command.START, None, None)] + steps):
        raw, who, cmd, failing, reboot, *extra = event
        freeze, slow = extra[0] if extra else None, extra[1] if len(extra) > 1 else 0
        replication_only = raw == REPLICATION
        flows = [bool(raw) and raw != UNHEARD[1 - i] for i in range(2)]   # the peer's traffic reaches node i
        link = flows[0] and flows[1]
        world.finish_resyncs(link and not any(n.frozen for n in world.nodes))   # a frozen side applies nothing
        if reboot is not None and world.nodes[reboot].state is not S.STOP and not world.nodes[reboot].frozen:
            node = world.nodes[reboot]                              # the agent restarts: WAIT,
            node.state, node.swap, node.resync = S.WAIT, SwapPhase.NONE, ResyncStatus.NONE
            node.deaf, node.busy = LISTEN, 0                        # and listens before acting alone
        awake = [not n.frozen for n in world.nodes]
        hears = [flows[i] and awake[1 - i] and not n.woken and not replication_only for i, n in enumerate(world.nodes)]
        world.witness(link and not replication_only, awake, tick - 1 not in witness_down, hears)
        leased = [witness and world.lease.holder == 1 - i and awake[1 - i] for i in range(2)]
        asks = [witness and tick - 1 not in witness_down and awake[1 - i] for i in range(2)]   # the witness hears it
        for i, n in enumerate(world.nodes):
            n.checker_ok = failing != i or not n.state.is_primary
        views = [n.held if n.woken and n.held is not None else
                 make_view(n, world.nodes[1 - i], hears[i], cmd if who in (i, BOTH) else Command.NONE,
                           (world.lease.holder == i) if witness else None,
                           witness and world.lease.vouches(i) and not n.peer_led,
                           replication_only and all(awake) and any(n.state is S.PRIM for n in world.nodes),
                           leased[i], asks[i])
                 for i, n in enumerate(world.nodes)]
        views = [dataclasses.replace(v, listened=False) if n.woken else v for v, n in zip(views, world.nodes)]
        if witness:
            views = world.mark(views, tick - 1 not in witness_down)
        if freeze is not None and all(awake) and not any(n.deaf or n.woken for n in world.nodes):
            world.freeze(*freeze, views[freeze[0]])
        decisions = [None if n.frozen or n.busy else decide(v) for v, n in zip(views, world.nodes)]
        undecided = None in decisions      # a node frozen (this tick too) or in a sequence decides nothing
        for i, n in enumerate(world.nodes):
            if n.busy and not n.frozen:
                world.beside(n, views[i])
        for i, d in enumerate(decisions):
            if d is not None:
                before = world.nodes[i].state
                world.apply(world.nodes[i], world.nodes[1 - i], d, hears[i])
                if slow and d.state.is_primary and d.state is not before:
                    world.nodes[i].busy, world.nodes[i].promoting = slow, not before.is_primary
                if stepped_down is not None and before.is_primary and d.state is S.WAIT:
                    stepped_down.append((len(trace), i, views[i]))
        world.fence(flows, awake, replication_only)      # a mount sees the loss as the agents do, or later
        world.witness(link and not replication_only, [not n.frozen for n in world.nodes], tick - 1 not in witness_down,
                      hears)
        world.wake_up()
        trace.append((link, a.state, b.state))
        both = a.state.is_primary and b.state.is_primary
        excused = stale_primary(a, b) or stale_primary(b, a)
        if link and all(awake) and not replication_only and not undecided:
            # (Without a witness, two nodes that went ALONE in a partition meet as such until both
            # decide; with one, the check below holds.)
            assert not both or excused, f"two primaries on a connected tick: {trace}"
        if witness:
            assert not both or excused, f"two primaries despite the witness: {trace}"
        if mirrors is not None:
            mirrors.append((a.mirror, b.mirror))
        for i, d in enumerate(decisions):     # as seen when deciding: the peer may fork the same tick, unheard
            if views[i].relation is Relation.DIVERGED and d is not None:
                assert not any(isinstance(x, StartResync) for x in d.actions)
    return trace



def quiet(n: int, link: bool = True) -> list:
    return [(link, None, Command.NONE, None, None)] * n



def frozen(node: int, ticks: int, mid_tick: bool) -> list:
    return [(True, None, Command.NONE, None, None, (node, ticks, mid_tick))]



def diverged_at_some_tick(steps: list, witness: bool, witness_down: frozenset[int] = frozenset()) -> bool:
    """Run and report whether the two histories ever diverged (a write set aside)."""
    world_relations = []
    original = World.wake_up

    def watch(world: World) -> None:
        original(world)
        world_relations.append(relation(*world.nodes))

    World.wake_up = watch
    try:
        run(steps, witness, witness_down=witness_down)
    finally:
        World.wake_up = original
    return Relation.DIVERGED in world_relations



def serving(node: NodeState, mirror: MirrorHealth) -> bool:
    """A primary whose mount acknowledges writes."""
    return node.is_primary and mirror in WRITABLE
