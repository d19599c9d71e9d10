"""Verdicts on a blocked mount beside a running sequence (hamirror/agent/beside.py), at the agent:
a real Agent driving a fake runner whose sequence never ends, one tick each."""

from __future__ import annotations

import asyncio

from hamirror.cluster.quorum import Witness
from hamirror.cluster.states import NodeState
from tests.agent_fakes import FakeJournal
from tests.test_agent_runner import attached, make
from tests.test_agent_stall import _Heard, _HeardAgain, _Refused, _Silent, agent_with, streaming_primary

S = NodeState


def test_a_sequence_under_way_when_the_quorum_is_lost_has_its_writes_refused_at_once(tmp_path):
    """Campaign 4004: the primary's start_prim waited 60 s (its timeout) on a mount blocked by
    the partition that had also lost this node its quorum; no decision comes while a sequence
    runs. The writes are refused at once, as the step-down would first, so the sequence fails and
    the decision comes. Not while the peer is heard (the rule steps down only without it)."""
    for heard in (False, True):
        runner, dp, *_ = streaming_primary(tmp_path / f"runner-{heard}")
        heartbeat = _heard_peer(S.SECOND, True) if heard else _Silent()
        verdicts, _ = _tick_under_sequence(tmp_path / f"agent-{heard}", runner, dp, heartbeat, "PRIM", S.PRIM,
                                           _Refused())
        assert verdicts == ([] if heard else ["refuse"]), dp.calls


def _heard_peer(state: NodeState, uptodate: bool) -> _HeardAgain:
    """The heartbeat service: the peer heard all along, in ``state``."""
    from hamirror.cluster.heartbeat import ModuleInfo

    heartbeat = _HeardAgain()
    heartbeat.heard, heartbeat.info = True, ModuleInfo(state=state, uptodate=uptodate, generation="g1")
    return heartbeat


def _tick_under_sequence(tmp_path, runner, dp, heartbeat, mount: str, target: NodeState,
                         witness: Witness | None = None, before=attached) -> tuple[list, list]:
    """One agent tick while ``runner`` runs a sequence to ``target`` (its start_prim blocked, say)
    over a mount in state ``mount``: (the verdicts the data path got, what the heartbeat said)."""
    agent, clock = agent_with(tmp_path, runner)
    for _ in range(8):
        clock.now += 0.3
        agent.listening.check()
    agent.heartbeat = heartbeat
    if witness is not None:
        agent.witness = witness
    advertised = []

    async def scenario():
        await before(runner)             # attach it (and set what it observed)
        dp.mounts = [{"state": mount, "mounted": True, "pid": 1}]
        runner.task = asyncio.get_running_loop().create_future()
        runner.transition = (target, ())
        await agent.tick()
        advertised.append(runner.advertised())
        await asyncio.sleep(0.2)                                    # the verdict's thread
        runner.task.cancel()

    events = []
    runner.emit = lambda kind, text, **fields: kind.startswith("fence") and events.append(kind)
    asyncio.run(scenario())
    verdicts = [c[0] for c in dp.calls if c in (("set_alone",), ("refuse",))]
    assert events == [{"set_alone": "fence-grant", "refuse": "fence-refuse"}[v] for v in verdicts], events
    return verdicts, advertised


def test_a_promotion_whose_mount_blocks_says_so_and_is_granted_alone_once_the_peer_is_stale(tmp_path):
    """Campaigns 4004 and 4010: a partition hit a swap's second half while start_prim ran; it
    healed within 6 s, but the mount stayed blocked until start_prim's 60 s timeout. The peer never
    saw the blocked mount (a promotion under way advertised it only once primary), so it kept its
    up-to-date flag, and no verdict runs while a sequence does. Now the heartbeat says the mount
    is blocked, and once the peer's copy is stale (it cleared its flag, as it does for a blocked
    primary) the mount is granted ALONE beside the sequence. Not while the peer is an up-to-date
    SECOND (it could take over), nor for a mount that does not block, nor under a step-down (its
    writes refused first: a grant would open them again). A peer heard primary meanwhile: the
    promotion yields (writes refused, the sequence fails at once)."""
    cases = [(S.WAIT, False, "FENCED", "set_alone"), (S.SECOND, True, "FENCED", None), (S.WAIT, False, "PRIM", None),
             (S.PRIM, False, "FENCED", "refuse"), (S.WAIT, False, "FENCED", None)]
    for index, (peer_state, uptodate, mount, verdict) in enumerate(cases):
        stepping_down = index == len(cases) - 1                         # PRIM -> WAIT
        if stepping_down:
            runner, dp, *_ = streaming_primary(tmp_path / f"runner-{index}")
        else:
            runner, dp, *_ = make(tmp_path / f"runner-{index}", S.SECOND, primary=False,
                                  journal=FakeJournal(("g1",), True))
        verdicts, advertised = _tick_under_sequence(tmp_path / f"agent-{index}", runner, dp,
                                                    _heard_peer(peer_state, uptodate), mount,
                                                    S.WAIT if stepping_down else S.PRIM)
        case = (peer_state, uptodate, mount)
        assert verdicts == ([verdict] if verdict else []), (case, dp.calls)
        assert advertised[0].state is S.PRIM and advertised[0].fenced is (mount == "FENCED"), (case, advertised)


class _RefusedPeerHolds(_Refused):
    """The witness refuses this node, and heard the peer holding the lease just now."""

    def peer_holds(self, now: float, silence: float | None = None) -> bool:
        return True


class _GrantsNow(Witness):
    async def verdict(self, now: float) -> bool:
        return True


def test_a_promotion_whose_old_primary_died_waits_for_its_lease_then_ends_for_the_decision(tmp_path):
    """Campaign 4104: the swap's old primary lost power before releasing the lease. Its mount
    blocked, the new primary refused at once (the witness refused it, the peer unheard), stepped
    down to WAIT, where it may not take over by itself, and the service waited for the dead node
    to boot. Now: no refusal while the witness refuses without having heard the peer hold the
    lease; a refusal when it has (the peer is alive, cut from us: yield); and once the lease is
    granted, a refusal that ends the sequence so that the decision goes ALONE."""
    cases = [(_Refused(), None), (_RefusedPeerHolds(), "refuse"), (_GrantsNow(), "refuse")]
    for index, (witness, expected) in enumerate(cases):
        runner, dp, *_ = make(tmp_path / f"runner-{index}", S.SECOND, primary=False,
                              journal=FakeJournal(("g1",), True))
        verdicts, _ = _tick_under_sequence(tmp_path / f"agent-{index}", runner, dp, _Silent(), "FENCED", S.PRIM,
                                           witness)
        assert verdicts == ([expected] if expected else []), (type(witness).__name__, dp.calls)


class _QuietSecond(_Heard):
    """The peer silent for ``silence`` seconds, its last heartbeat: an up-to-date SECOND."""

    def peer_modules(self) -> dict:
        from hamirror.cluster.heartbeat import ModuleInfo
        return {"app": ModuleInfo(state=S.SECOND, uptodate=True, generation="g1")}


def test_a_promotion_judges_its_peer_lost_by_the_heartbeats_timeout_as_the_decision_after_it(tmp_path):
    """Campaign 4106: a swap's new primary took its peer for lost 1.2 s in (the shortcut for an
    idle SECOND whose primary's replication connection closed: its receiver had seen the old
    primary's mount close at the hand-over), refused its writes for the decision; the decision,
    without the shortcut, still heard the peer, an up-to-date SECOND, and stepped down to WAIT,
    where it waited for the dead node to boot. A busy SECOND does not take the shortcut."""
    from hamirror.agent.module_runner import Observation
    from tests.test_agent_runner import history

    runner, dp, *_ = make(tmp_path / "runner", S.SECOND, primary=False, journal=FakeJournal(("g1",), True))
    heartbeat = _QuietSecond(1.3)
    receiver = {"connections": 0, "closed_at": heartbeat.last_heard}

    async def observed(runner):
        await attached(runner)
        runner.state = S.SECOND          # as the swap's hand-over left it (the fake has no receiver)
        runner.obs = Observation(history(), True, (), (receiver,), True)

    verdicts, _ = _tick_under_sequence(tmp_path / "agent", runner, dp, heartbeat, "FENCED", S.PRIM, _GrantsNow(),
                                       before=observed)
    assert verdicts == [], dp.calls


class _Releases(Witness):
    def __init__(self) -> None:
        self.released = 0

    async def verdict(self, now: float) -> bool:
        return True

    def release_now(self) -> None:
        self.released += 1


def test_the_end_of_a_hand_over_releases_the_lease_at_once(tmp_path):
    """Campaign 4107: the release rode the next tick's request, and an old primary killed within
    that tick left the new one waiting for the lease to lapse."""
    for state, released in ((S.SECOND, 1), (S.PRIM, 0)):
        runner, *_ = make(tmp_path / f"runner-{state.value}", state, primary=False)
        agent, _ = agent_with(tmp_path / f"agent-{state.value}", runner)
        agent.witness = _Releases()
        runner.state = state                     # the sequence just ended here
        agent._changed()
        assert agent.witness.released == released, state
