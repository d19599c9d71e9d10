"""Many modules on one node (issue 18, 50 modules on a pair): every module is observed and acts at
the same time, none waits for the others' actions (fakes for the data path; real threads)."""

from __future__ import annotations

import asyncio
import threading

from hamirror.agent import runtime
from hamirror.cluster.states import NodeState
from tests.test_agent_runner import make
from tests.test_agent_stall import _Granted, _Silent, agent_with

S = NodeState
MODULES = 40          # more than Python's default worker threads on any machine (32 at most)


def test_every_module_is_observed_and_acts_at_once(tmp_path):
    """50 modules taken over at once took 22 s on two cores: the agent observed one module after
    the other, each observation waiting for a worker thread behind the earlier modules' actions
    (Python's default pool: cores + 4), so the last module decided 15 s after the first. Here
    every observation and every action of MODULES modules must be under way together: each waits
    at a barrier for all the others (one that cannot be reached breaks, and the step fails)."""
    runners = {}
    observing, acting = threading.Barrier(MODULES, timeout=5), threading.Barrier(MODULES, timeout=5)
    for i in range(MODULES):
        runner, dp, *_ = make(tmp_path / f"m{i}", S.WAIT, primary=False)
        runner.obs = runner.observe()
        statuses, start = dp.mount_statuses, dp.start_receivers

        def observed(statuses=statuses):
            observing.wait()
            return statuses()

        def started(wait: bool = True, start=start):
            acting.wait()
            start(wait)

        dp.mount_statuses, dp.start_receivers = observed, started
        runners[f"m{i}"] = runner
    agent, _ = agent_with(tmp_path, next(iter(runners.values())))
    agent.runners = runners
    agent.heartbeat, agent.witness = _Silent(), _Granted(previous="nobody")   # the quorum plays no part here

    async def scenario():
        agent.use_workers()
        await agent.tick()
        await asyncio.gather(*(r.task for r in runners.values() if r.task is not None))

    asyncio.run(scenario())
    assert not observing.broken and not acting.broken
    assert all(r.datapath.receiving and r.error is None for r in runners.values())


def test_vip_leases_are_renewed_while_a_long_tick_runs_and_not_after_a_stall(tmp_path, monkeypatch):
    """A 50-module start on two cores: a tick lasted longer than the VIPs' kernel lease, renewed
    only between ticks, so 40 to 77 of 100 leases lapsed and each one's start_prim failed. The
    renewal runs on its own every interval; after a stall it waits for the main loop, which
    withdraws the VIPs first (a frozen node keeps no address it may have lost)."""
    runner, dp, *_ = make(tmp_path / "m", S.WAIT, primary=False)
    runner.obs = runner.observe()
    agent, clock = agent_with(tmp_path, runner)
    agent.heartbeat, agent.witness = _Silent(), _Granted(previous="nobody")   # the quorum plays no part here
    renewed, release = [], threading.Event()
    monkeypatch.setattr(runtime, "renew_leases", lambda executors: renewed.append(clock.now) or [True] * len(executors))
    statuses = dp.mount_statuses

    def slow_observation():
        release.wait(10)
        return statuses()

    dp.mount_statuses = slow_observation

    async def scenario():
        agent.use_workers()
        agent._vips_epoch = agent.listening.check()
        keeper = asyncio.create_task(agent.keep_vips())
        tick = asyncio.create_task(agent.tick())
        while len(renewed) < 3:                        # the tick has not ended: its observation waits
            await asyncio.sleep(0.05)
        assert not tick.done()
        clock.now += 5.0                               # a stall: not renewed until the VIPs are withdrawn
        agent.listening.check()
        count = len(renewed)
        await asyncio.sleep(4 * agent.cluster.heartbeat.interval)
        assert len(renewed) == count
        agent._vips_epoch = agent.listening.stalls     # what the main loop does once it withdrew them
        while len(renewed) == count:
            await asyncio.sleep(0.05)
        release.set()
        await tick
        keeper.cancel()

    asyncio.run(asyncio.wait_for(scenario(), 30))


class _Primary:
    """The heartbeat service: the peer heard, ALONE; what it advertised changes when ``resynced``
    (its heartbeat with its new generation came in before it resynced us)."""

    newer = None
    peer_heartbeat = None

    def __init__(self) -> None:
        from hamirror.cluster.heartbeat import ModuleInfo

        self.before = {"app": ModuleInfo(state=S.ALONE, uptodate=True, generation="-")}
        self.after = {"app": ModuleInfo(state=S.ALONE, uptodate=True, generation="g1")}
        self.resynced = False

    def peer_alive(self) -> bool:
        return True

    def silence(self) -> float:
        return 0.1

    def peer_modules(self) -> dict:
        return self.after if self.resynced else self.before

    def send_now(self) -> None:
        pass


def test_a_copy_resynced_during_the_tick_is_judged_against_the_peer_as_heard_after(tmp_path):
    """A WAIT node's copy, resynced by its ALONE peer while the tick observed 50 modules: the
    peer's generation (sent before the resync) was read at the tick's start, before it had one;
    beside the copy now up to date with that generation, the relation was UNKNOWN and the copy
    marked stale again (the peer resynced it once more, 10 s later)."""
    from tests.agent_fakes import FakeJournal

    journal = FakeJournal((), False)
    runner, dp, *_ = make(tmp_path / "m", S.WAIT, primary=False, journal=journal)
    dp.receiving = True
    runner.obs = runner.observe()
    agent, _ = agent_with(tmp_path, runner)
    heard = _Primary()
    agent.heartbeat, agent.witness = heard, _Granted(previous="nobody")
    read = journal.read

    def resync_ends():                                 # the resync ends while the tick observes
        if not heard.resynced:
            journal.history, journal.uptodate, heard.resynced = FakeJournal(("g1",)).history, True, True
        return read()

    journal.read = resync_ends

    async def scenario():
        await agent.tick()
        if runner.task is not None:
            await runner.task

    asyncio.run(scenario())
    assert journal.uptodate and runner.state is S.SECOND
