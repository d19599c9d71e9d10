"""The verdict on a primary's blocked mount while a sequence runs (hamirror/cluster/blocked.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hamirror.cluster.actions import SetMirroring
from hamirror.cluster.blocked import Blocked, peer_stands_aside, reasoned_verdict, verdict
from hamirror.cluster.decide import decide
from hamirror.cluster.states import NodeState as S
from hamirror.cluster.view import MirrorHealth, ModuleView, PeerView, SwapPhase
from hamirror.journal.generations import Relation

STALE_WAIT = PeerView(alive=True, state=S.WAIT, uptodate=False)


@pytest.mark.parametrize("peer, relation, stands_aside", [
    (STALE_WAIT, Relation.SAME, True),
    (PeerView(alive=True, state=S.STOP, uptodate=True), Relation.SAME, True),
    (PeerView(alive=True, state=S.SECOND, uptodate=False), Relation.LOCAL_NEWER, True),
    (PeerView(alive=True, state=S.SECOND, uptodate=True), Relation.SAME, False),      # it may take over
    (PeerView(alive=False, state=S.WAIT, uptodate=False), Relation.UNKNOWN, False),   # not heard
    (PeerView(alive=True, state=S.ALONE, uptodate=False), Relation.SAME, False),      # primary
    (PeerView(alive=True, state=S.WAIT, uptodate=False, leaving=True), Relation.SAME, False),
    (STALE_WAIT, Relation.PEER_NEWER, False),
    (STALE_WAIT, Relation.DIVERGED, False),
])
def test_the_peer_stands_aside_only_when_heard_and_unable_to_be_primary_with_data_of_its_own(
        peer, relation, stands_aside):
    assert peer_stands_aside(peer, relation) is stands_aside


def test_a_blocked_mount_is_granted_only_beside_a_peer_that_stands_aside():
    assert verdict(STALE_WAIT, True, Relation.SAME, fenced=True, staying_primary=True) is Blocked.GRANT
    assert verdict(STALE_WAIT, None, Relation.SAME, fenced=True, staying_primary=True) is Blocked.GRANT
    assert verdict(STALE_WAIT, True, Relation.SAME, fenced=False, staying_primary=True) is None         # nothing blocks
    synced = PeerView(alive=True, state=S.SECOND, uptodate=True)
    assert verdict(synced, True, Relation.SAME, fenced=True, staying_primary=True) is None             # it clears its flag first


def test_writes_are_refused_when_the_witness_refuses_and_the_peer_is_not_heard():
    assert verdict(PeerView(), False, Relation.UNKNOWN, fenced=False, staying_primary=True) is Blocked.REFUSE
    silent = PeerView(alive=True, state=S.SECOND, uptodate=True, silent=True)
    assert verdict(silent, False, Relation.SAME, fenced=True, staying_primary=True) is Blocked.REFUSE
    # Heard, the witness refusing: decide() would grant over a stale peer, and so does the rule.
    assert verdict(STALE_WAIT, False, Relation.SAME, fenced=True, staying_primary=True) is Blocked.GRANT


def test_a_step_down_under_way_is_never_granted():
    """Its RefuseWrites may have run: a grant would open the refused mount again (REFUSED -> ALONE
    is allowed, for the agent's own verdict after a fence timeout)."""
    assert verdict(STALE_WAIT, True, Relation.SAME, fenced=True, staying_primary=False) is None
    assert verdict(PeerView(), False, Relation.UNKNOWN, fenced=True, staying_primary=False) is Blocked.REFUSE


def test_a_promotion_refused_by_the_witness_waits_unless_the_peer_is_heard_holding_the_lease():
    """Campaign 4104: a swap's old primary died before releasing the lease; refused at once, the new
    primary stepped down to WAIT, where it may not take over by itself, and the service waited for
    the dead node to boot. It waits for the lease to lapse instead; a peer alive and cut from it
    (the witness heard it holding the lease just now) makes it yield at once, as before."""
    lost = PeerView()
    assert verdict(lost, False, Relation.UNKNOWN, fenced=True, staying_primary=True, promoting=True) is None
    assert verdict(lost, False, Relation.UNKNOWN, fenced=True, staying_primary=True, promoting=True,
                   peer_leased=True) is Blocked.REFUSE
    assert verdict(lost, False, Relation.UNKNOWN, fenced=True, staying_primary=True) is Blocked.REFUSE


def test_a_blocked_mount_whose_peer_is_lost_ends_its_sequence_once_the_quorum_allows_going_on():
    """The decision that follows grants ALONE (fence script, the witness's mark) and starts the
    application again; without it the sequence waited for its script's timeout."""
    lost = PeerView()
    for quorum in (True, None):
        assert verdict(lost, quorum, Relation.UNKNOWN, fenced=True, staying_primary=True,
                       promoting=True) is Blocked.REFUSE
    assert verdict(lost, True, Relation.UNKNOWN, fenced=True, staying_primary=True, listened=False) is None
    assert verdict(lost, True, Relation.UNKNOWN, fenced=False, staying_primary=True) is None
    silent = PeerView(alive=True, state=S.SECOND, uptodate=True, silent=True)      # not lost yet
    assert verdict(silent, True, Relation.SAME, fenced=True, staying_primary=True) is None


def test_a_promotion_yields_to_a_peer_heard_primary():
    primary = PeerView(alive=True, state=S.PRIM, uptodate=True)
    assert verdict(primary, True, Relation.SAME, fenced=False, staying_primary=True, promoting=True) is Blocked.REFUSE
    assert verdict(primary, True, Relation.SAME, fenced=True, staying_primary=True) is None   # decide()'s rule


def test_no_grant_from_a_view_this_node_has_not_listened_to():
    """Thawed after a freeze, the first heartbeats read are the ones queued during it."""
    assert verdict(STALE_WAIT, True, Relation.SAME, fenced=True, staying_primary=True, listened=False) is None


peers = st.builds(PeerView, alive=st.booleans(), state=st.none() | st.sampled_from(S), uptodate=st.booleans(),
                  swap=st.sampled_from(SwapPhase), woke=st.booleans(), leaving=st.booleans(), silent=st.booleans())


@settings(max_examples=3000)
@given(peer=peers, quorum=st.sampled_from([None, True, False]), relation=st.sampled_from(Relation),
       listened=st.booleans(), peer_leased=st.booleans(), linked=st.booleans())
def test_a_verdict_beside_a_sequence_is_the_one_decide_gives_a_settled_primary_whose_mount_blocks(
        peer, quorum, relation, listened, peer_leased, linked):
    """Each rule says it acts "as the verdict after it would": decide() on the same view of a
    settled primary (PRIM, its mount blocking writes) grants ALONE wherever the rule grants, and
    steps down exactly where the rule refuses for the witness."""
    rule, _ = reasoned_verdict(peer, quorum, relation, fenced=True, staying_primary=True, listened=listened,
                               peer_leased=peer_leased)
    view = ModuleView(module="m", node="n1", state=S.PRIM, uptodate=True, peer=peer, relation=relation,
                      quorum=quorum, mirror=MirrorHealth.FENCED, listened=listened, peer_leased=peer_leased,
                      linked=linked and not peer.alive)
    settled = decide(view)
    if rule is Blocked.GRANT:
        assert settled.state is S.ALONE and SetMirroring(False) in settled.actions, settled
    if rule is Blocked.REFUSE and quorum is False:
        assert not settled.state.is_primary, settled
    if quorum is False and (not peer.alive or peer.silent):   # decide() steps down: writes refused first
        assert rule is Blocked.REFUSE and not settled.state.is_primary, settled
