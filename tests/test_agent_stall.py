"""Stall detection (issue 15, finding 1): a node that did not run decides nothing on the peer's
silence until it has listened a full timeout, even when the freeze hits in the middle of a tick
(fakes for the data path, scripts, VIP and journal; a fake clock)."""

from __future__ import annotations

import asyncio

from hamirror.agent.stall import Listening
from hamirror.cluster import actions as a
from hamirror.cluster.quorum import Witness
from hamirror.cluster.states import NodeState
from hamirror.cluster.view import PeerView
from tests.agent_fakes import FakeJournal
from tests.test_agent_runner import attached, make

S = NodeState
TIMEOUT, THRESHOLD = 2.0, 1.3


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_a_gap_is_a_stall_and_listening_starts_again_after_it() -> None:
    clock = Clock()
    listening = Listening(TIMEOUT, THRESHOLD, clock)
    assert not listening.listened()                    # the agent just started
    for _ in range(10):
        clock.now += 0.3
        assert listening.check() == 0
    assert listening.listened()
    clock.now += 7.8                                   # SIGSTOP of every process of the node
    assert not listening.listened() and listening.stalls == 1
    clock.now += 1.0
    assert listening.check() == 1 and not listening.listened()
    clock.now += 1.0
    assert listening.listened()


def streaming_primary(tmp_path):
    """A PRIM whose mount streams; told the peer is lost, it would go ALONE (a grant)."""
    runner, dp, vip, scripts, journal, store, _ = make(tmp_path, S.PRIM, journal=FakeJournal(("g1",), True))
    dp.mounts = [{"state": "PRIM", "mounted": True, "pid": 1}]
    clock = Clock()
    runner.listening = Listening(TIMEOUT, THRESHOLD, clock)
    for _ in range(8):                                 # listened since the start
        clock.now += 0.3
        runner.listening.check()
    assert runner.listening.listened()
    return runner, dp, store, clock


def test_a_freeze_while_observing_drops_the_decision(tmp_path):
    """The agent read the heartbeats (the peer silent for a while), then froze while observing
    the mounts: on waking it must not decide from that view (PRIM -> ALONE was the bug)."""
    runner, dp, store, clock = streaming_primary(tmp_path)
    statuses = dp.mount_statuses

    def frozen_meanwhile():
        clock.now += 7.8
        return statuses()

    async def scenario():
        await attached(runner)
        listened, epoch = runner.listening.listened(), runner.listening.check()
        dp.mount_statuses = frozen_meanwhile
        await runner.tick(PeerView(alive=False), None, None, listened, epoch)
        assert runner.task is None

    asyncio.run(scenario())
    assert runner.state is S.PRIM and store.load().state is S.PRIM
    assert ("set_alone",) not in dp.calls and runner.advertised().woke


def test_a_freeze_between_the_decision_and_its_grant_undoes_the_persist(tmp_path):
    runner, dp, store, clock = streaming_primary(tmp_path)
    run = runner.executor.run

    def frozen_after(action, target):
        run(action, target)
        if isinstance(action, a.Persist):
            clock.now += 7.8

    async def scenario():
        await attached(runner)
        runner.executor.run = frozen_after
        listened, epoch = runner.listening.listened(), runner.listening.check()
        await runner.tick(PeerView(alive=False), None, None, listened, epoch)
        await runner.task

    asyncio.run(scenario())
    assert runner.state is S.PRIM and store.load().state is S.PRIM and runner.error
    assert ("set_alone",) not in dp.calls and runner.retry is None


def test_a_woken_primary_stays_until_it_has_listened(tmp_path):
    """Woken from a stall with the peer not heard yet (its queued heartbeats not read): no
    grant; once it has listened a full timeout without hearing the peer, the grant comes."""
    runner, dp, store, clock = streaming_primary(tmp_path)

    async def tick():
        listened, epoch = runner.listening.listened(), runner.listening.check()
        await runner.tick(PeerView(alive=False), None, None, listened, epoch)
        if runner.task is not None:
            await runner.task

    async def scenario():
        await attached(runner)
        clock.now += 7.8
        await tick()
        assert runner.state is S.PRIM and ("set_alone",) not in dp.calls
        for _ in range(7):
            clock.now += 0.3
            await tick()

    asyncio.run(scenario())
    assert runner.state is S.ALONE and ("set_alone",) in dp.calls


def test_a_restarted_secondary_whose_receiver_hears_the_primary_never_takes_over(tmp_path):
    """Finding 6: heartbeats blocked (or a wall clock far off) while replication flows; the SECOND's
    agent restarts, so it never heard a heartbeat: it took over beside the serving primary. The
    receiver heard the primary's mount within the timeout: no takeover, whatever the silence."""
    import time

    runner, dp, vip, *_ = make(tmp_path / "runner", S.SECOND, primary=False, journal=FakeJournal(("g1",), True))
    dp.receiving = True
    agent, clock = agent_with(tmp_path, runner)
    for _ in range(8):                                 # the restarted agent listened a full timeout
        clock.now += 0.3
        agent.listening.check()

    async def tick():
        clock.now += 0.3
        await agent.tick()
        if runner.task is not None:
            await runner.task

    async def scenario():
        dp.receivers = [{"last_message": time.time() - 0.5, "connections": 1}]   # the primary's keepalive
        await runner.attach()
        assert runner.state is S.SECOND
        for _ in range(3):
            await tick()
            dp.receivers = [{"last_message": time.time() - 0.5, "connections": 1}]
        assert runner.state is S.SECOND and not vip.up
        dp.receivers = [{"last_message": time.time() - 30, "connections": 0, "closed_at": time.time() - 30}]
        for _ in range(2):
            await tick()                               # the link is silent too now: the peer is lost

    asyncio.run(scenario())
    assert runner.state is S.ALONE and vip.up


def agent_with(tmp_path, runner):
    """A real Agent (config files, heartbeat service not started) driving one fake runner, with a
    fake clock for its stall detection."""
    from hamirror.agent.runtime import Agent
    from hamirror.config import load_cluster, load_modules
    from tests.configfiles import write_cluster, write_module, write_secrets

    config = write_cluster(tmp_path)
    write_module(tmp_path)
    write_secrets(tmp_path)
    cluster = load_cluster(config)
    agent = Agent(cluster, load_modules(cluster))
    agent.runners = {"app": runner}
    clock = Clock()
    agent.listening = runner.listening = Listening(TIMEOUT, THRESHOLD, clock)
    return agent, clock


def one_tick(agent, runner) -> None:
    """Attach the runner, run one agent tick and the actions it started."""
    async def scenario():
        await attached(runner)
        await agent.tick()
        if runner.task is not None:
            await runner.task

    asyncio.run(scenario())


def test_a_node_claims_the_lease_on_the_peer_silence_only_once_it_has_listened(tmp_path):
    runner, *_ = make(tmp_path / "runner", S.SECOND, primary=False)
    agent, clock = agent_with(tmp_path, runner)
    agent._claim_alive = False                         # the peer not heard
    assert not agent._claims()                         # just started: not listened yet
    for _ in range(8):
        clock.now += 0.3
        agent.listening.check()
    assert agent._claims()
    clock.now += 7.8                                   # frozen
    assert not agent._claims()


def test_a_node_whose_modules_are_stopped_does_not_claim_the_lease(tmp_path):
    """A node with every module STOP can do nothing with the lease, and holding it would refuse
    its peer's takeover (a SECOND told "no" leaves for WAIT and clears its up-to-date flag). It
    claims again once a module is started, and always while one is primary."""
    runner, *_ = make(tmp_path / "runner", S.STOP, primary=False)
    agent, clock = agent_with(tmp_path, runner)
    agent._claim_alive = False                         # the peer not heard
    agent._heard = lambda: (False, None, {}, set())
    for _ in range(8):
        clock.now += 0.3
        agent.listening.check()
    assert agent.listening.listened()
    assert not agent._claims() and not agent._still_claims()
    runner.state = S.WAIT                              # `start`
    assert agent._claims() and agent._still_claims()
    runner.state, agent._claim_alive = S.PRIM, True    # the peer heard again: a primary still claims
    agent._heard = lambda: (True, None, {}, set())
    assert agent._claims() and agent._still_claims()


class _Heard:
    """The heartbeat service's answers for one tick: the peer still 'alive' (its last heartbeat
    is younger than the timeout) but silent for ``silence`` seconds."""

    newer = None          # no heartbeat refused for a newer protocol

    def __init__(self, silence: float) -> None:
        import time as wall
        # The last heartbeat at a fixed wall time: however slow the tick (a loaded machine), the
        # silence it reads and the receivers' closed_at stay as far apart as the test set them.
        self.last_heard, self.peer_heartbeat = wall.time() - silence, None

    def peer_alive(self) -> bool:
        return True

    def peer_modules(self) -> dict:
        return {}

    def silence(self) -> float:
        import time as wall
        return wall.time() - self.last_heard

    def send_now(self) -> None:
        pass


class _Witness(Witness):
    """Records whether the agent claimed the lease when asked, and refuses it."""

    renewed = True   # each verdict is an answer to this tick's request (Witness.renewed)

    def __init__(self, agent) -> None:
        self.agent, self.claims = agent, []

    async def verdict(self, now: float) -> bool:
        self.claims.append(self.agent._claims())
        return False

    def vouches(self, now: float) -> bool:
        return False

    def peer_holds(self, now: float, silence: float | None = None) -> bool:
        return False


def test_a_secondary_whose_primary_processes_are_gone_claims_the_lease_at_once(tmp_path):
    """A power loss of the primary with a witness: its replication connection closed and it has
    been silent four intervals, so the SECOND treats it as lost before the heartbeat timeout.
    It must claim the lease on that same tick: unclaimed, the witness's answer is "no", the
    SECOND left for WAIT (the witness refuses) and, never vouched, stayed there: no takeover."""
    import time as wall

    from hamirror.agent.module_runner import Observation
    from tests.test_agent_runner import history

    def claimed(where, receiver: dict) -> list[bool]:
        runner, *_ = make(where / "runner", S.SECOND, primary=False)
        agent, clock = agent_with(where, runner)
        for _ in range(8):                             # it has listened a full timeout
            clock.now += 0.3
            agent.listening.check()
        agent.heartbeat, agent.witness = _Heard(1.3), _Witness(agent)
        receiver = {k: (agent.heartbeat.last_heard if v == "last heard" else v) for k, v in receiver.items()}
        runner.obs = Observation(history(), True, (), (receiver,), True)
        asyncio.run(agent.tick())
        return agent.witness.claims

    assert claimed(tmp_path / "gone", {"connections": 0, "closed_at": "last heard"}) == [True]
    # A primary merely quiet (its connection open): still heard, not claimed against.
    assert claimed(tmp_path / "quiet", {"connections": 1, "last_message": wall.time()}) == [False]


class _HeardAgain:
    """The heartbeat service: the peer (ALONE, our generation) silent when the tick begins, and
    heard again by the time the witness's verdict comes back."""

    newer = None                 # no heartbeat refused for a newer protocol

    def __init__(self) -> None:
        from hamirror.cluster.heartbeat import ModuleInfo

        self.heard, self.peer_heartbeat = False, None
        self.info = ModuleInfo(state=S.ALONE, uptodate=True, generation="g1")

    def peer_alive(self) -> bool:
        return self.heard

    def silence(self) -> float:
        return 0.1 if self.heard else 9.0

    def peer_modules(self) -> dict:
        return {"app": self.info} if self.heard else {}

    def send_now(self) -> None:
        pass


class _LeaseLapseWait(Witness):
    """The witness: the claim against the silent peer waits for the lease to lapse (seconds, during
    which the peer wakes and asks again), then is refused: the peer holds the lease, asked just
    now (``peer_holds`` as UdpWitness: fresh answer, two intervals older than our silence)."""

    renewed = True   # each verdict is an answer to this tick's request (Witness.renewed)

    def __init__(self, heartbeat: _HeardAgain) -> None:
        self.heartbeat = heartbeat

    async def verdict(self, now: float) -> bool:
        self.heartbeat.heard = True
        return False

    def vouches(self, now: float) -> bool:
        return False

    def peer_holds(self, now: float, silence: float | None = None) -> bool:
        return silence is None or silence >= 0.6

    def peer_asks(self, now: float) -> bool:
        return True


    def token(self) -> int | None:
        return None

    def granted_after_peer(self, now: float) -> bool:
        return False


def test_a_peer_heard_again_while_the_verdict_waited_is_not_taken_for_lost(tmp_path):
    """Campaigns 1602 and 1604 (ALONE + WAIT for ever): a WAIT node whose copy the primary's
    resync had just made up to date decided on the silence read *before* the witness's verdict,
    which had waited seconds for a lease to lapse, and on the witness's fresh answer that the
    peer holds the lease: "the primary is not heard ...: marking this copy stale", though the
    primary was heard again by then. The views must see the peer as heard after the verdict."""
    runner, dp, *_ = make(tmp_path / "runner", S.WAIT, primary=False, journal=FakeJournal(("g1",), True))
    dp.receiving = True
    agent, clock = agent_with(tmp_path, runner)
    for _ in range(8):                                 # it has listened a full timeout
        clock.now += 0.3
        agent.listening.check()
    agent.heartbeat = _HeardAgain()
    agent.witness = _LeaseLapseWait(agent.heartbeat)

    one_tick(agent, runner)
    assert runner.journals.uptodate, "marked its copy stale on a silence read before the verdict"
    assert runner.state is S.SECOND and runner.peer.alive


class _Silent:
    """The heartbeat service: the peer never heard (its agent is down; its mount still streams)."""

    peer_heartbeat = None
    newer = None                 # no heartbeat refused for a newer protocol

    def peer_alive(self) -> bool:
        return False

    def silence(self) -> float | None:
        return None

    def peer_modules(self) -> dict:
        return {}

    def send_now(self) -> None:
        pass


def test_a_verdict_that_waited_does_not_hide_a_live_replication_link(tmp_path, monkeypatch):
    """The same wait, the peer's agent still down but its mount streaming to our receiver: the
    lease lapsed meanwhile and is granted. `linked` was computed from the observation made
    before the wait, whose last message from the primary was by then seconds old: the SECOND
    took over beside the primary's running mount (finding 6's rule, defeated by the wait)."""
    import time as wall

    from hamirror.agent import runtime

    runner, dp, vip, *_ = make(tmp_path / "runner", S.SECOND, primary=False, journal=FakeJournal(("g1",), True))
    dp.receiving = True
    agent, clock = agent_with(tmp_path, runner)
    for _ in range(8):
        clock.now += 0.3
        agent.listening.check()
    boot = Clock()
    monkeypatch.setattr(runtime, "boottime", boot)

    class LapseThenGrant(Witness):
        async def verdict(self, now: float) -> bool:
            boot.now += 8.0                            # waited for the old holder's lease to lapse
            dp.receivers = [{"last_message": wall.time() - 0.2, "connections": 1}]
            return True

        def vouches(self, now: float) -> bool:
            return False

        def peer_holds(self, now: float, silence: float | None = None) -> bool:
            return False

        def peer_asks(self, now: float) -> bool:
            return False


        def token(self) -> int | None:
            return None

        def granted_after_peer(self, now: float) -> bool:
            return False

    agent.heartbeat, agent.witness = _Silent(), LapseThenGrant()

    async def scenario():
        dp.receivers = [{"last_message": wall.time() - 0.2, "connections": 1}]
        await runner.attach()
        dp.receivers = [{"last_message": wall.time() - 8.2, "connections": 1}]   # as last observed
        runner.obs = runner.observe()
        await agent.tick()
        if runner.task is not None:
            await runner.task

    asyncio.run(scenario())
    assert runner.state is S.SECOND and not vip.up


class _Granted(Witness):
    """The witness grants this node the lease; ``previous`` is who held it before this tenure."""

    renewed = True   # each verdict is an answer to this tick's request (Witness.renewed)

    def __init__(self, previous: str) -> None:
        self.previous = previous

    async def verdict(self, now: float) -> bool:
        return True

    def vouches(self, now: float) -> bool:
        return self.previous == "node1"

    def granted_after_peer(self, now: float) -> bool:
        return self.previous == "node2"

    def peer_holds(self, now: float, silence: float | None = None) -> bool:
        return False

    def peer_asks(self, now: float) -> bool:
        return False


    def token(self) -> int | None:
        return None


def test_a_lease_that_came_from_the_peer_is_never_vouched_for_later(tmp_path):
    """Found by reading the rules (etcd helper): node1 WAIT, its peer held the lease after node1's
    data was last current (and may have written alone), node1 is granted the lease after it; then
    the witness restarts and remembers node1 as the last holder: it vouches for node1, whose data
    is older than the peer's. Resuming alone then would lose the peer's writes."""
    runner, *_ = make(tmp_path / "runner", S.WAIT, primary=True, journal=FakeJournal(("g1",), True))
    agent, clock = agent_with(tmp_path, runner)
    for _ in range(8):                                 # it has listened a full timeout
        clock.now += 0.3
        agent.listening.check()
    agent.heartbeat = _Silent()

    async def scenario():
        await attached(runner)
        agent.witness = _Granted(previous="node2")     # the lease came from the peer
        await agent.tick()
        assert runner.state is S.WAIT and runner.record.peer_led
        agent.witness = _Granted(previous="node1")     # the witness restarted: "node1 held it last"
        await agent.tick()
        if runner.task is not None:
            await runner.task

    asyncio.run(scenario())
    assert runner.state is S.WAIT, "resumed alone on a lease vouched after the peer's tenure"
    assert runner.store.load().peer_led                # durable: an agent restart keeps it


class _GrantedMarked(_Granted):
    """Granted after the peer (node2) held the lease, with the witness's marks of outdated copies."""

    def __init__(self, marks: dict[str, str], asked: list) -> None:
        super().__init__(previous="node2")
        self.marks, self.asked = marks, asked

    async def verdict(self, now: float) -> bool:
        self.asked.append(self.agent_marks())
        return True

    def keeps_marks(self) -> bool:
        return True

    def outdated(self, module: str) -> str | None:
        return self.marks.get(module)


def test_a_second_whose_copy_the_witness_marks_outdated_does_not_take_over(tmp_path):
    """The double fault's window: this node's peer (node2, the primary) went on alone with its
    lease and had the witness mark this copy outdated first; it was then cut from the witness and
    its lease lapsed before this SECOND's first decision (its claim waited for the lapse). Granted
    now, its own flag still up to date, this SECOND must not take over without what node2
    acknowledged alone: it leaves for WAIT, its copy marked stale. Without the mark it takes over,
    having asked the witness to mark node2's copy first."""
    for marks, expected in (({"app": "node1"}, S.WAIT), ({"app": "node2"}, S.ALONE)):
        runner, dp, *_ = make(tmp_path / f"runner-{expected.value}", S.SECOND, primary=True,
                              journal=FakeJournal(("g1",), True))
        dp.receiving = True
        agent, clock = agent_with(tmp_path / expected.value, runner)
        for _ in range(8):                             # it has listened a full timeout
            clock.now += 0.3
            agent.listening.check()
        asked: list = []
        agent.heartbeat, agent.witness = _Silent(), _GrantedMarked(marks, asked)
        agent.witness.agent_marks = agent._marks

        one_tick(agent, runner)
        assert runner.state is expected, marks
        assert runner.journals.uptodate is (expected is S.ALONE)
        assert asked[0].outdate == (frozenset() if expected is S.WAIT else frozenset({"app"}))


def test_a_primary_asks_the_witness_to_outdate_its_peer_only_when_it_may_decide(tmp_path):
    """PRIM, the peer not heard: the request asks for the peer's copy to be marked outdated (the
    decision will go ALONE), but not while a sequence runs (no decision this tick: campaign
    4004 marked the SECOND's copy for a minute while the primary's start_prim hung)."""
    runner, *_ = streaming_primary(tmp_path / "runner")
    agent, clock = agent_with(tmp_path, runner)
    for _ in range(8):
        clock.now += 0.3
        agent.listening.check()

    async def scenario():
        await attached(runner)
        idle = agent._marks()
        runner.task = asyncio.get_running_loop().create_future()      # a sequence under way
        busy = agent._marks()
        runner.task.cancel()
        return idle, busy

    idle, busy = asyncio.run(scenario())
    assert idle.outdate == frozenset({"app"}) and busy.outdate == frozenset()


class _Refused(Witness):
    """The witness refuses this node the lease."""

    async def verdict(self, now: float) -> bool:
        return False


class _Hearing(_Silent):
    """The heartbeat service: the peer heard now, running ``modules``."""

    def __init__(self, modules: set[str]) -> None:
        self.peer_heartbeat, self.modules = object(), {name: None for name in modules}

    def peer_alive(self) -> bool:
        return True

    def silence(self) -> float | None:
        return 0.1

    def peer_modules(self) -> dict:
        return self.modules


def test_the_holder_clears_the_marks_of_modules_neither_node_runs(tmp_path):
    """A module removed from both nodes kept its mark at the witness for ever: a module added again
    under that name later would find a copy marked outdated, and the marks count against the
    witness's cap. The holder asks for them to go, only while both nodes run the same modules."""
    runner, *_ = streaming_primary(tmp_path / "runner")
    agent, _ = agent_with(tmp_path, runner)
    agent.witness = _GrantedMarked({"app": "node2", "removed": "node2"}, [])
    agent.witness.marked = lambda: frozenset({"app", "removed"})
    agent._claim_alive = True
    for peer_runs, cleared in (({"app"}, {"removed"}), ({"app", "removed"}, set()), (set(), set())):
        agent.heartbeat = _Hearing(peer_runs)
        assert agent._marks().current == frozenset(cleared), peer_runs
    agent._claim_alive = False                         # the peer not heard: nothing cleared
    agent.heartbeat = _Hearing({"app"})
    assert agent._marks().current == frozenset()


def test_a_claim_made_on_the_peer_silence_is_still_needed_only_while_the_peer_stays_unheard(tmp_path):
    """What ends the verdict's wait for a silent holder's lease (``Agent._still_claims``): a SECOND
    that claimed because it did not hear its peer stops needing the lease once the peer is heard
    again (campaigns 4208/4209: its tick, and its receiver's restart, waited for the lapse); a
    primary module keeps it needed whatever it hears."""
    second, *_ = make(tmp_path / "second", S.SECOND, primary=False)
    agent, _ = agent_with(tmp_path / "a", second)
    agent.heartbeat = _Silent()
    assert agent._still_claims()
    agent.heartbeat = _Hearing({"app"})
    assert not agent._still_claims()
    primary, *_ = streaming_primary(tmp_path / "primary")
    agent, _ = agent_with(tmp_path / "b", primary)
    agent.heartbeat = _Hearing({"app"})
    assert agent._still_claims()
