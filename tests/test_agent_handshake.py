"""The handshake's agent side (docs/cluster.md, "The handshake: acting alone beside a heard peer"):
a node that hears its peer where it cannot stop it acting alone records ``peer_led`` durably, then
advertises it (``yielded``); the agent reads the peer's advertisement into the view, and takes a
peer of 0.2.0, which knows no handshake, as yielded (the rules of 0.2.0 in a mixed pair)."""

from __future__ import annotations

import asyncio

from hamirror.cluster.heartbeat import Heartbeat, ModuleInfo
from hamirror.cluster.states import NodeState
from hamirror.cluster.view import PeerView
from tests.agent_fakes import FakeJournal
from tests.test_agent_runner import attached, make, peer, step
from tests.test_agent_stall import _Granted, _Hearing, agent_with

S = NodeState


def test_a_waiting_node_that_hears_its_peer_records_then_advertises_that_the_peer_may_lead(tmp_path):
    """Durable before advertised, so that an agent restart keeps it; not recorded unheard or
    beside a primary as SECOND; gone once SECOND again (it may be vouched for again)."""
    runner, dp, vip, scripts, journal, store, _ = make(tmp_path, S.WAIT, journal=FakeJournal(("g1",), uptodate=True))

    async def scenario():
        await attached(runner)
        await step(runner, PeerView(), journal.history)                        # not heard
        assert not store.load().peer_led and not runner.advertised().yielded
        await runner.tick(peer(S.PRIM, True), journal.history, None, True)   # heard: it may act alone
        assert store.load().peer_led and runner.advertised().yielded
        await runner.task                                                      # WAIT -> SECOND
        assert runner.state is S.SECOND and not store.load().peer_led and not runner.advertised().yielded
        await step(runner, peer(S.PRIM, True), journal.history)               # SECOND beside a primary
        assert not store.load().peer_led

    asyncio.run(scenario())


class _HearingRelease(_Hearing):
    """The peer heard now, a SECOND of ``software`` (None: 0.2.0, which sends no release)."""

    def __init__(self, software: str | None, yielded: bool) -> None:
        info = ModuleInfo(S.WAIT, True, "g1", yielded=yielded)
        super().__init__({"app"})
        self.modules = {"app": info}
        self.peer_heartbeat = Heartbeat(cluster="lab", node="node2", boot_id="b", counter=1, timestamp=0.0,
                                        modules=self.modules, software=software)


def peer_seen(tmp_path, software: str | None, yielded: bool) -> PeerView:
    """The peer view one agent tick hands the runner."""
    runner, *_ = make(tmp_path / "runner", S.SECOND, primary=False, journal=FakeJournal(("g1",), True))
    agent, clock = agent_with(tmp_path, runner)
    agent.heartbeat = _HearingRelease(software, yielded)
    agent.witness = _Granted(previous="node2")
    seen = []

    async def spy(peer, *args, **kw):
        seen.append(peer)

    async def scenario():
        await attached(runner)
        runner.tick = spy
        await agent.tick()

    asyncio.run(scenario())
    return seen[-1]


def test_the_agent_reads_the_peers_advertisement_and_takes_a_0_2_0_peer_as_yielded(tmp_path):
    assert peer_seen(tmp_path / "a", "0.3.0", yielded=True).yielded
    assert not peer_seen(tmp_path / "b", "0.3.0", yielded=False).yielded
    assert peer_seen(tmp_path / "c", None, yielded=False).yielded          # 0.2.0: the rules of 0.2.0
