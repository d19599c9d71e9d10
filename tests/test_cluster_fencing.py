"""The fencing rules of decide() (issue 7): when a primary whose mount lost the peer may go on
alone, when it must step down, and what the peer does when it sees its primary fenced."""

from __future__ import annotations

import pytest

from hamirror.cluster.actions import (
    AddVip, Fence, MarkUpToDate, NewGeneration, Persist, RefuseWrites, RemountDataPath, RunScript, SetMirroring,
)
from hamirror.cluster.decide import FENCED_WAIT, NO_QUORUM, PEER_FENCED, PEER_LEASED, decide
from hamirror.cluster.states import NodeState
from hamirror.cluster.view import CheckerHealth, MirrorHealth, ModuleView, PeerView, mirror_health
from hamirror.journal.generations import Relation

S, M, R = NodeState, MirrorHealth, Relation


def view(state=S.PRIM, mirror=M.FENCED, peer: S | None = S.SECOND, peer_uptodate=True, peer_fenced=False,
         **kw) -> ModuleView:
    p = PeerView(alive=peer is not None, state=peer, uptodate=peer_uptodate, fenced=peer_fenced)
    kw.setdefault("relation", R.SAME if peer is not None else R.UNKNOWN)
    return ModuleView(module="m", node="n1", state=state, uptodate=True, peer=p, mirror=mirror, **kw)


def granted(d) -> bool:
    return SetMirroring(False) in d.actions


def test_fenced_waits_while_the_peer_is_an_up_to_date_second() -> None:
    d = decide(view())
    assert d.state is S.PRIM and d.actions == () and d.warnings == (FENCED_WAIT,)


@pytest.mark.parametrize("peer,uptodate", [(S.WAIT, False), (S.SECOND, False), (S.STOP, True), (None, True)])
def test_fenced_goes_alone_once_the_peer_cannot_be_primary(peer, uptodate) -> None:
    d = decide(view(peer=peer, peer_uptodate=uptodate))
    assert d.state is S.ALONE and granted(d) and NewGeneration() in d.actions


def test_fenced_without_quorum_steps_down_refusing_writes_first() -> None:
    d = decide(view(peer=None, quorum=False))
    assert d.state is S.WAIT and d.actions[1] == RefuseWrites()
    assert decide(view(peer=None, quorum=True)).state is S.ALONE


def test_the_fence_script_runs_before_going_alone_without_the_peer() -> None:
    d = decide(view(peer=None, fence_script=True))
    assert d.actions.index(Fence()) < d.actions.index(SetMirroring(False))
    heard = decide(view(peer=S.WAIT, peer_uptodate=False, fence_script=True))
    assert Fence() not in heard.actions and granted(heard)   # a heard peer needs no fencing


def test_a_second_takes_over_only_after_the_fence_script() -> None:
    d = decide(view(state=S.SECOND, mirror=M.NONE, peer=None, fence_script=True))
    assert d.state is S.ALONE and d.actions[1] == Fence(takeover=True)


@pytest.mark.parametrize("mirror", [M.FENCED, M.REFUSED, M.STREAMING])
def test_a_fenced_primary_that_finds_the_peer_primary_steps_down(mirror) -> None:
    d = decide(view(mirror=mirror, peer=S.ALONE, relation=R.PEER_NEWER, default_primary=True))
    assert d.state is S.WAIT and d.actions[1] == RefuseWrites() and not granted(d)


def test_refused_with_an_up_to_date_second_steps_down_so_it_takes_over() -> None:
    assert decide(view(mirror=M.REFUSED)).state is S.WAIT


def test_a_second_whose_primary_is_fenced_marks_itself_stale() -> None:
    d = decide(view(state=S.SECOND, mirror=M.NONE, peer=S.PRIM, peer_fenced=True))
    assert d.state is S.WAIT and MarkUpToDate(False) in d.actions and PEER_FENCED in d.warnings
    w = decide(view(state=S.WAIT, mirror=M.NONE, peer=S.PRIM, peer_fenced=True))
    assert w.state is S.WAIT and w.actions == (MarkUpToDate(False),)


def test_a_second_that_hears_nothing_while_the_witness_hears_its_primary_marks_itself_stale() -> None:
    """Finding 7: a one-way loss, nothing from the primary reaches the SECOND. The witness refuses
    it the lease and says the primary holds it, alive: the SECOND clears its up-to-date flag,
    so that the primary, which still hears it, goes on alone instead of waiting out the block
    timeout. Not on the refusal alone (the witness down, or this node cut from it: the primary
    may be dead), not before it has listened, not while the replication link flows."""
    d = decide(view(state=S.SECOND, mirror=M.NONE, peer=None, quorum=False, peer_leased=True))
    assert d.state is S.WAIT and MarkUpToDate(False) in d.actions and d.warnings == (PEER_LEASED,)
    refused = decide(view(state=S.SECOND, mirror=M.NONE, peer=None, quorum=False))
    assert refused.state is S.WAIT and MarkUpToDate(False) not in refused.actions and refused.warnings == (NO_QUORUM,)
    for kw in ({"listened": False}, {"linked": True}):
        held = decide(view(state=S.SECOND, mirror=M.NONE, peer=None, quorum=False, peer_leased=True, **kw))
        assert MarkUpToDate(False) not in held.actions
    # The primary hears the stale flag: it goes on alone at once, fenced or not yet.
    for mirror in (M.FENCED, M.STREAMING):
        p = decide(view(mirror=mirror, peer=S.WAIT, peer_uptodate=False, quorum=True))
        assert p.state is S.ALONE and granted(p)


def test_a_dead_mount_is_remounted_then_the_node_steps_down_past_the_restart_limit() -> None:
    d = decide(view(mirror=M.DEAD))
    assert d.state is S.PRIM and d.actions == (RemountDataPath(),)
    limit = decide(view(mirror=M.DEAD, checker=CheckerHealth(restarts=3, max_restarts=3)))
    assert limit.state is S.WAIT and limit.actions[1] == RefuseWrites()


def test_a_mount_alone_under_prim_moves_the_module_to_alone() -> None:
    d = decide(view(mirror=M.ALONE))
    assert d.state is S.ALONE and d.warnings


def test_a_repaired_data_path_starts_the_application_once_writable() -> None:
    assert decide(view(mirror=M.FENCED, app_stopped=True)).actions == ()
    d = decide(view(state=S.ALONE, mirror=M.ALONE, peer=None, app_stopped=True))
    assert d.actions == (AddVip(), RunScript("start_prim"))


def test_mirror_health_takes_the_worst_directory() -> None:
    assert mirror_health(["PRIM", "PRIM"]) is M.STREAMING
    assert mirror_health(["PRIM", "FENCED"]) is M.FENCED
    assert mirror_health(["ALONE", None]) is M.DEAD
    assert mirror_health([]) is M.NONE


def test_a_primary_without_the_lease_yields_at_half_the_silence_the_peer_needs_to_take_over() -> None:
    """Cut from the witness long ago (no lease), the primary keeps serving while it hears its
    peer; once the peer has been silent for half a timeout it steps down (writes refused first),
    before the peer, which can get the free lease, may take over."""
    heard = PeerView(alive=True, state=S.SECOND, uptodate=True)
    base = dict(module="m", node="n1", state=S.PRIM, uptodate=True, relation=R.SAME, mirror=M.STREAMING)
    assert decide(ModuleView(peer=heard, quorum=False, **base)).state is S.PRIM
    silent = PeerView(alive=True, state=S.SECOND, uptodate=True, silent=True)
    d = decide(ModuleView(peer=silent, quorum=False, **base))
    assert d.state is S.WAIT and d.actions[1] == RefuseWrites()
    assert decide(ModuleView(peer=silent, quorum=None, **base)).state is S.PRIM   # no witness: no rule
    assert decide(ModuleView(peer=silent, quorum=True, **base)).state is S.PRIM


def test_a_primary_with_no_mount_and_a_lost_peer_remounts_alone_on_the_usual_conditions() -> None:
    """E.g. a swap's second half whose first half lost power: the connected mount can never be
    made; a mount from the journal would wait for the lost peer for ever."""
    d = decide(view(mirror=M.DEAD, peer=None))
    assert d.state is S.ALONE and d.actions == (Persist(S.ALONE), RemountDataPath(alone=True), NewGeneration())
    assert decide(view(mirror=M.DEAD, peer=None, fence_script=True)).actions[1] == Fence(takeover=False)
    assert decide(view(mirror=M.DEAD, peer=None, quorum=False)).state is S.WAIT
    assert decide(view(mirror=M.DEAD)).actions == (RemountDataPath(),)       # the peer heard: from the journal


def test_a_wait_node_keeps_its_flag_on_the_witness_word_and_a_primary_holding_the_lease_goes_on_beside_it() -> None:
    """A WAIT node does not clear its up-to-date flag because the witness hears its peer holding
    the lease: the holder may be a stale WAIT node that cannot use it (both WAIT in a partition,
    the stale one asked first), and clearing left both copies stale after the heal, WAIT + WAIT
    for an operator (tests/test_cluster_sim_sequences.py). A primary that hears a WAIT peer
    needs no such flag while it holds the lease: a WAIT node promotes beside no live primary, and
    alone only on a lease it held last. Without the lease (or a witness) it still waits."""
    w = decide(view(state=S.WAIT, mirror=M.NONE, peer=None, quorum=False, peer_leased=True))
    assert w.state is S.WAIT and w.actions == ()
    p = decide(view(mirror=M.FENCED, peer=S.WAIT, peer_uptodate=True, quorum=True))
    assert p.state is S.ALONE and granted(p)
    for quorum in (None, False):
        held = decide(view(mirror=M.FENCED, peer=S.WAIT, peer_uptodate=True, quorum=quorum))
        assert held.state is S.PRIM and not granted(held) and held.warnings == (FENCED_WAIT,), quorum


def test_a_wait_node_with_newer_data_keeps_its_flag_beside_a_stale_fenced_primary() -> None:
    """The primary stalled while this node took over, and this node's agent restarted (WAIT): the
    woken primary's mount is fenced, and its data older. Clearing the flag for it ("so that the
    primary may go on alone") left both copies stale; the primary steps down instead, and this
    node, newer and up to date, leads."""
    d = decide(view(state=S.WAIT, mirror=M.NONE, peer=S.PRIM, peer_fenced=True, relation=R.LOCAL_NEWER))
    assert d.state is S.WAIT and MarkUpToDate(False) not in d.actions
    same = decide(view(state=S.WAIT, mirror=M.NONE, peer=S.PRIM, peer_fenced=True, relation=R.SAME))
    assert same.actions == (MarkUpToDate(False),) and same.warnings == (PEER_FENCED,)
    primary = decide(view(mirror=M.FENCED, peer=S.WAIT, relation=R.PEER_NEWER))
    assert primary.state is S.WAIT
