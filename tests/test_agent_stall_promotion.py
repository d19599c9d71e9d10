"""A stall in the middle of a promotion's first actions (a freeze, a paused VM): the takeover was
decided from a view read before it, and the peer may have acted meanwhile. The runner drops the
decision while what has run is undone by deciding again (the record, a secondary's receiver
stopped and its ``stop_second``), that is up to its first commitment: a new generation, a fence,
the mount, the VIP, the application (fakes, a fake clock)."""

from __future__ import annotations

import asyncio

from hamirror.agent.stall import Listening
from hamirror.cluster import actions as a
from hamirror.cluster.states import NodeState
from hamirror.cluster.view import PeerView
from tests.agent_fakes import FakeJournal
from tests.test_agent_runner import attached, make
from tests.test_agent_stall import THRESHOLD, TIMEOUT, Clock

S = NodeState


def taking_over(tmp_path, frozen_at: type):
    """A SECOND whose primary is lost (no witness): it takes over. The agent freezes for 7.8 s
    while ``frozen_at`` runs. Returns the runner, its fakes and the actions run."""
    runner, dp, vip, scripts, journal, store, _ = make(tmp_path, S.SECOND, primary=False,
                                                       journal=FakeJournal(("g1",), True))
    dp.receiving = True
    clock = Clock()
    runner.listening = Listening(TIMEOUT, THRESHOLD, clock)
    for _ in range(8):
        clock.now += 0.3
        runner.listening.check()
    run, done = runner.executor.run, []

    def frozen_during(action, target):
        run(action, target)
        done.append(action)
        if isinstance(action, frozen_at):
            clock.now += 7.8

    async def scenario():
        await attached(runner)
        runner.executor.run = frozen_during
        listened, epoch = runner.listening.listened(), runner.listening.check()
        await runner.tick(PeerView(alive=False), journal.history, None, listened, epoch)
        assert runner.task is not None
        await runner.task

    asyncio.run(scenario())
    return runner, vip, store, done


def test_a_freeze_while_the_receiver_stops_drops_the_takeover(tmp_path):
    runner, vip, store, done = taking_over(tmp_path, a.StopReceiver)
    assert runner.state is S.SECOND and store.load().state is S.SECOND
    assert not vip.up and not any(isinstance(x, (a.NewGeneration, a.AddVip)) for x in done)
    assert runner.error and "stalled" in runner.error and runner.retry is None


def test_a_freeze_after_the_new_generation_lets_the_takeover_finish(tmp_path):
    """Past its first commitment a sequence is finished: half a takeover is worse than a late one."""
    runner, vip, store, done = taking_over(tmp_path, a.NewGeneration)
    assert runner.state is S.ALONE and store.load().state is S.ALONE and vip.up
