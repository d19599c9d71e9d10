"""Which outdated-copy marks a node asks the witness for, before it decides (cluster/outdate.py)."""

from __future__ import annotations

import dataclasses

from hamirror.cluster.outdate import ORPHANS_PER_REQUEST, asks_to_outdate, clears_outdated, orphans, yields_beside
from hamirror.cluster.states import NodeState
from hamirror.cluster.view import CheckerHealth, Command, MirrorHealth, ModuleView, PeerView

S = NodeState


def view(state: NodeState, peer: NodeState | None = None, **kw) -> ModuleView:
    """Module ``m`` on ``n1``, as the runner sees it before the verdict (quorum not known yet)."""
    return ModuleView(module="m", node="n1", state=state, uptodate=kw.pop("uptodate", True),
                      peer=PeerView(alive=peer is not None, state=peer, uptodate=True), **kw)


def test_a_node_asks_for_the_mark_its_decision_will_need():
    assert asks_to_outdate(view(S.PRIM, mirror=MirrorHealth.FENCED))           # blocked, peer lost
    assert asks_to_outdate(view(S.SECOND))                                     # a takeover is due
    assert asks_to_outdate(view(S.ALONE, peer=S.WAIT))                         # alone: the mark stays
    assert asks_to_outdate(view(S.WAIT, command=Command.PRIM))                 # the operator forces
    assert asks_to_outdate(view(S.PRIM, mirror=MirrorHealth.DEAD, checker=CheckerHealth(restarts=0)))


def test_a_primary_going_on_alone_beside_a_heard_peer_asks_to_mark_it():
    """No mark is needed to go on alone beside a stopped or stale peer that is heard, but without
    one that peer, cut later, could be vouched for on a copy without this node's writes."""
    assert asks_to_outdate(view(S.PRIM, peer=S.STOP, mirror=MirrorHealth.STREAMING))
    stale = dataclasses.replace(view(S.PRIM, mirror=MirrorHealth.STREAMING),
                                peer=PeerView(alive=True, state=S.WAIT, uptodate=False))
    assert asks_to_outdate(stale)
    assert not asks_to_outdate(view(S.WAIT, peer=S.SECOND))          # not going on alone


def test_a_promotion_beside_a_heard_up_to_date_peer_asks_to_mark_it():
    """The handshake's alternative: the witness's mark lets a node act alone beside a peer that has
    not advertised ``peer_led`` yet (it may not hear this node: a one-way loss)."""
    assert asks_to_outdate(view(S.SECOND, peer=S.WAIT))
    assert asks_to_outdate(view(S.WAIT, peer=S.STOP))


def test_a_node_yields_to_a_heard_peer_only_where_it_cannot_stop_it_acting_alone():
    heard = {state: PeerView(alive=True, state=state, uptodate=True) for state in S}
    assert yields_beside(S.WAIT, heard[S.PRIM]) and yields_beside(S.WAIT, heard[S.WAIT])
    assert yields_beside(S.STOP, heard[S.ALONE]) and yields_beside(S.STOP, heard[S.SECOND])
    assert yields_beside(S.SECOND, heard[S.WAIT]) and yields_beside(S.SECOND, heard[S.STOP])
    assert not yields_beside(S.SECOND, heard[S.PRIM]) and not yields_beside(S.SECOND, heard[S.ALONE])
    assert not any(yields_beside(state, heard[S.WAIT]) for state in (S.PRIM, S.ALONE))
    assert not any(yields_beside(state, PeerView()) for state in S)                    # not heard


def test_a_node_that_will_not_act_alone_asks_for_nothing():
    assert not asks_to_outdate(view(S.PRIM, peer=S.SECOND, mirror=MirrorHealth.STREAMING))
    assert not asks_to_outdate(view(S.SECOND, outdated=True))                 # its own copy is outdated
    assert not asks_to_outdate(view(S.SECOND, listened=False))                # the silence proves nothing yet
    assert not asks_to_outdate(view(S.SECOND, linked=True))                   # the link shows the peer alive
    assert not asks_to_outdate(view(S.SECOND, uptodate=False))
    assert not asks_to_outdate(view(S.WAIT))                                  # not vouched: it will wait


def test_only_a_primary_mirroring_to_an_up_to_date_second_clears_the_mark():
    synced = view(S.PRIM, peer=S.SECOND, mirror=MirrorHealth.STREAMING)
    assert clears_outdated(synced)
    assert not clears_outdated(dataclasses.replace(synced, mirror=MirrorHealth.SYNCING))
    assert not clears_outdated(dataclasses.replace(synced, state=S.ALONE))
    assert not clears_outdated(dataclasses.replace(synced, peer=PeerView(alive=True, state=S.SECOND, uptodate=False)))
    assert not clears_outdated(dataclasses.replace(synced, peer=PeerView()))


def test_marks_of_modules_neither_node_runs_are_cleared_only_when_both_run_the_same_modules():
    marked = {"db", "gone", "old"}
    assert orphans(marked, ["db", "web"], ["web", "db"]) == {"gone", "old"}
    assert orphans(marked, ["db", "web"], None) == set()                       # the peer not heard
    assert orphans(marked, ["db", "web"], ["db", "web", "old"]) == set()        # "old" still runs there
    assert orphans(marked, ["db"], ["db", "web"]) == set()                      # a rolling change under way
    assert orphans(set(), ["db"], ["db"]) == set()


def test_orphan_marks_go_a_few_at_a_time_so_that_a_request_stays_one_datagram():
    marked = {f"m{i:04}" for i in range(1000)}
    first = orphans(marked, [], [])
    assert len(first) == ORPHANS_PER_REQUEST and first == set(sorted(marked)[:ORPHANS_PER_REQUEST])
    assert orphans(marked - first, [], []).isdisjoint(first)
