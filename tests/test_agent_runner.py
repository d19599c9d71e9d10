"""The module runner: view building, decisions carried out, persistence, commands, re-attach,
retries (fakes for the data path, scripts, VIP and journal; no processes)."""

from __future__ import annotations

import asyncio
import threading
import types

from hamirror.agent.checks import CheckerState
from hamirror.agent.executor import Executor
from hamirror.agent.http import health
from hamirror.agent.module_runner import ModuleRunner
from hamirror.agent.persist import ModuleRecord, Store
from hamirror.agent.runtime import Agent
from hamirror.agent.status import module_status
from hamirror.cluster.states import NodeState
from hamirror.cluster.view import Command, PeerView, SwapPhase
from tests.agent_fakes import FakeDataPath, FakeJournal, FakeScripts, FakeVip, history

S = NodeState


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(tmp_path, state=None, primary=True, journal=None, failing=()):
    store = Store(str(tmp_path / "demo"))
    if state is not None:
        store.save(ModuleRecord(state=state))
    journal = journal or FakeJournal()
    dp, vip, scripts = FakeDataPath(journal=journal), FakeVip(), FakeScripts(failing)
    ex = Executor("demo", dp, vip, scripts, journal, lambda s: None, lambda: None)
    clock = Clock()
    runner = ModuleRunner("demo", "node1" if primary else "node2", primary, store, ex, dp, journal,
                          CheckerState("demo", [], clock), 3, 300.0, clock=clock)
    return runner, dp, vip, scripts, journal, store, clock


async def attached(runner) -> None:
    """attach(), then the task it may start (a re-attached primary takes its VIP lease back)."""
    await runner.attach()
    if runner.task is not None:
        await runner.task


async def step(runner, peer=PeerView(), peer_history=None, ready=True):
    await runner.tick(peer, peer_history, None, ready)
    if runner.task is not None:
        await runner.task


def peer(state, uptodate=False, **kw):
    return PeerView(alive=True, state=state, uptodate=uptodate, **kw)


def health_of(runner) -> tuple[int, bytes]:
    """What ``/health/demo`` answers from this runner's status entry."""
    answer = health({"modules": [module_status(runner)]}, "demo")
    return answer.status.value, answer.body


def test_cold_start_promotes_the_default_primary_then_resyncs_and_mirrors(tmp_path):
    runner, dp, vip, scripts, journal, store, clock = make(tmp_path)

    async def scenario():
        await runner.attach()                     # never seen: WAIT, receiver started
        await runner.task
        assert runner.state is S.WAIT and dp.receiving
        await step(runner, peer(S.WAIT), history())
        assert runner.state is S.ALONE and store.load().state is S.ALONE
        assert vip.up and journal.uptodate and not dp.receiving and dp.mounts[0]["state"] == "ALONE"
        assert ("start_prim", "ALONE") in scripts.runs
        await step(runner, peer(S.WAIT), history())           # peer has no history: full resync
        assert ("resync", True) in dp.calls
        await step(runner, peer(S.WAIT), history())
        assert runner.resync_status().value == "running"
        dp.mounts = [dict(dp.mounts[0], state="PRIM")]           # the mount finished the resync
        await step(runner, peer(S.WAIT), journal.history)        # peer still WAIT: no flapping
        assert runner.state is S.ALONE
        await step(runner, peer(S.SECOND, True), journal.history)
        assert runner.state is S.PRIM and store.load().state is S.PRIM

    asyncio.run(scenario())


def test_a_peer_stale_again_after_the_resync_is_resynced_once_the_end_has_settled(tmp_path):
    """ALONE, the resync done (the mount streams), the peer WAIT, stale, on our generation: it
    marked its copy stale after the end. Right after the end nothing moves (its heartbeat may
    predate the end); after ``RESYNC_GRACE`` the mount goes ALONE again and a new pass starts; a
    peer stale again after it gets the next one ``RESYNC_BACKOFF`` after the last was asked for."""
    runner, dp, vip, scripts, journal, store, clock = make(tmp_path, S.ALONE, journal=FakeJournal(("g1",), True))
    dp.mounts = [{"state": "PRIM", "mounted": True, "pid": 1}]

    async def scenario():
        await attached(runner)
        assert runner.state is S.ALONE and runner.resync_status().value == "done"
        dp.calls.clear()
        await step(runner, peer(S.WAIT), journal.history)
        assert dp.calls == []
        clock.now += 3.0
        await step(runner, peer(S.WAIT), journal.history)
        assert dp.calls == [("set_alone",), ("resync", False)]
        assert runner.state is S.ALONE and runner.resync_status().value == "running"
        dp.mounts = [dict(dp.mounts[0], state="PRIM")]           # done; the peer stale again
        dp.calls.clear()
        clock.now += 3.0
        await step(runner, peer(S.WAIT), journal.history)
        assert dp.calls == []                                   # no more often than a failed one
        clock.now += 7.0
        await step(runner, peer(S.WAIT), journal.history)
        assert dp.calls == [("set_alone",), ("resync", False)]

    asyncio.run(scenario())


def test_up_to_date_second_takes_over_when_the_peer_is_lost(tmp_path):
    runner, dp, vip, scripts, journal, store, _ = make(tmp_path, S.SECOND, primary=False,
                                                       journal=FakeJournal(("g1",), uptodate=True))
    dp.receiving = True

    async def scenario():
        await runner.attach()
        assert runner.state is S.SECOND and dp.calls == []      # re-attached, nothing restarted
        await step(runner, PeerView(alive=False))
        assert runner.state is S.ALONE and vip.up
        assert dp.calls == [("stop_receivers",), ("mount", True)]
        assert journal.history.current.id != "g1"               # a new generation (by the mount)
        assert runner.advertised().generation.startswith(journal.history.current.id + ",g1")

    asyncio.run(scenario())


def test_a_takeover_under_way_already_says_primary_to_the_peer(tmp_path):
    """Campaign 1801 t13: node2 took over (VIP up, start_prim running for 6.6 s) while its
    heartbeats still said SECOND; node1, the old primary waking from a freeze, saw a SECOND peer
    and a mount still streaming, put its VIP back, and both served for 6.7 s. A promotion says
    its target from its first action on: the peer steps down at once."""
    runner, dp, vip, scripts, journal, store, _ = make(tmp_path, S.SECOND, primary=False,
                                                       journal=FakeJournal(("g1",), uptodate=True))
    dp.receiving = True
    said = []
    run = runner.executor.run

    def spying(action, target):
        said.append(runner.advertised().state)
        return run(action, target)

    runner.executor.run = spying

    async def scenario():
        await runner.attach()
        await step(runner, PeerView(alive=False))
        assert runner.state is S.ALONE and said and set(said) == {S.ALONE}, said

    asyncio.run(scenario())


def test_no_decision_before_the_peer_is_heard_or_the_timeout_passed(tmp_path):
    runner, dp, vip, *_ = make(tmp_path, S.SECOND, primary=False, journal=FakeJournal(("g1",), uptodate=True))
    dp.receiving = True

    async def scenario():
        await runner.attach()
        await step(runner, PeerView(alive=False), ready=False)
        assert runner.state is S.SECOND and not vip.up

    asyncio.run(scenario())


def test_reattach_adopts_a_live_mount_and_cleans_up_a_dead_one(tmp_path):
    runner, dp, *_ = make(tmp_path / "a", S.PRIM, journal=FakeJournal(("g1",), uptodate=True))
    dp.mounts = [{"state": "PRIM", "mounted": True, "pid": 7}]

    async def live():
        await runner.attach()
        assert runner.state is S.PRIM and dp.calls == []
    asyncio.run(live())

    runner, dp, vip, scripts, _, store, _ = make(tmp_path / "b", S.ALONE, journal=FakeJournal(("g1",), True))

    asyncio.run(cleaned_up_then_waits(runner, dp, vip, scripts, store))


async def cleaned_up_then_waits(runner, dp, vip, scripts, store) -> None:
    """attach() of a former primary: the application stopped, no VIP, unmounted, then WAIT."""
    await runner.attach()
    await runner.task
    assert runner.state is S.WAIT and store.load().state is S.WAIT
    assert scripts.runs == [("stop_prim", "WAIT")] and vip.calls == ["remove"]
    assert dp.calls == [("unmount", True), ("start_receivers",)]


def test_operator_commands_answer_with_the_outcome(tmp_path):
    runner, dp, vip, scripts, journal, store, _ = make(tmp_path, S.PRIM, journal=FakeJournal(("g1",), True))
    dp.mounts = [{"state": "PRIM", "mounted": True, "pid": 7}]

    async def scenario():
        await attached(runner)
        refused = runner.submit(Command.SWAP)
        await step(runner, peer(S.SECOND, False), history("g1"))     # the peer is not up to date
        outcome = refused.result()
        assert not outcome.ok and outcome.state == "PRIM" and "`swap` refused" in outcome.warnings[0]
        stop = runner.submit(Command.STOP)
        await step(runner, peer(S.SECOND, True), history("g1"))
        outcome = stop.result()
        assert outcome.ok and outcome.state == "STOP" and store.load().state is S.STOP
        assert [c[0] for c in dp.calls] == ["flush", "unmount"] and ("stop_prim", "STOP") in scripts.runs
        assert dp.watching     # stopped and unmounted: changes behind our back are recorded

    asyncio.run(scenario())


def test_a_failed_action_is_retried_from_where_it_stopped(tmp_path):
    runner, dp, vip, scripts, journal, store, clock = make(tmp_path, S.SECOND, primary=False,
                                                           journal=FakeJournal(("g1",), True), failing=("start_prim",))
    dp.receiving = True

    async def scenario():
        await runner.attach()
        await step(runner, PeerView(alive=False))
        assert runner.state is S.ALONE and store.load().state is S.ALONE and runner.error
        assert health_of(runner) == (503, b"ALONE (not serving)\n")      # start_prim failed: nothing runs
        mounts = len([c for c in dp.calls if c[0] == "mount"])
        scripts.failing = ()
        await step(runner, PeerView(alive=False))              # too early: nothing
        assert scripts.runs.count(("start_prim", "ALONE")) == 1
        clock.now += 10
        await step(runner, PeerView(alive=False))
        assert scripts.runs.count(("start_prim", "ALONE")) == 2 and runner.error is None
        assert health_of(runner) == (200, b"ALONE\n")
        assert len([c for c in dp.calls if c[0] == "mount"]) == mounts    # only from the failed step

    asyncio.run(scenario())


def test_health_says_not_serving_from_the_moment_a_swap_stops_the_application(tmp_path):
    """Finding: /health said 200 PRIM for 3.5 s after a swap had stopped the application."""
    runner, dp, vip, scripts, *_ = make(tmp_path, S.PRIM, journal=FakeJournal(("g1",), True))
    dp.mounts = [{"state": "PRIM", "mounted": True, "pid": 7}]
    stopped, release = threading.Event(), threading.Event()
    run_script = scripts.run

    def gated(name: str, state: str, **kw):
        result = run_script(name, state, **kw)
        if name == "stop_prim":                  # the application is down; the swap goes on
            stopped.set()
            release.wait(10)
        return result

    scripts.run = gated

    async def scenario():
        await attached(runner)
        before = health_of(runner)
        runner.submit(Command.SWAP)
        await runner.tick(peer(S.SECOND, True), history("g1"), None, True)
        assert await asyncio.to_thread(stopped.wait, 10)
        during, doc = health_of(runner), module_status(runner)
        release.set()
        await runner.task
        return before, during, doc, health_of(runner)

    before, during, doc, after = asyncio.run(scenario())
    assert before == (200, b"PRIM\n")
    assert during == (503, b"PRIM -> SECOND\n")
    assert (doc["state"], doc["target"], doc["serving"], doc["busy"]) == ("PRIM", "SECOND", False, True)
    assert after == (503, b"SECOND\n") and runner.transition is None



def test_a_fenced_primary_waits_for_its_second_then_goes_alone(tmp_path):
    """The mount lost the peer: no grant while an up-to-date SECOND is heard; the heartbeat says
    fenced; once the peer reports its copy stale, ALONE (a new generation)."""
    runner, dp, vip, scripts, journal, store, _ = make(tmp_path, S.PRIM, journal=FakeJournal(("g1",), uptodate=True))
    dp.mounts = [{"state": "FENCED", "mounted": True, "pid": 1, "fenced_since": 1.0}]

    async def scenario():
        await attached(runner)
        assert runner.state is S.PRIM
        await step(runner, peer(S.SECOND, True), journal.history)
        assert runner.state is S.PRIM and "set_alone" not in [c[0] for c in dp.calls]
        assert runner.advertised().fenced is True
        assert module_status(runner)["mirror"] == "fenced"
        await step(runner, peer(S.WAIT, False), journal.history)
        assert runner.state is S.ALONE and ("set_alone",) in dp.calls
        assert runner.advertised().fenced is False

    asyncio.run(scenario())


def test_a_primary_reannounces_its_vip_when_the_peer_comes_back_or_steps_down(tmp_path):
    runner, dp, vip, scripts, journal, store, _ = make(tmp_path, S.PRIM, journal=FakeJournal(("g1",), uptodate=True))
    dp.mounts = [{"state": "PRIM", "mounted": True, "pid": 1}]

    async def scenario():
        await attached(runner)
        assert vip.calls == ["add"]                              # the restarted agent takes its lease
        await step(runner, peer(S.SECOND, True), journal.history)   # first heard: announced
        assert vip.calls == ["add", "add"]
        await step(runner, peer(S.SECOND, True), journal.history)
        assert vip.calls == ["add", "add"]                       # nothing changed: no announce
        runner.peer = PeerView(alive=False)                        # the peer was not heard...
        await step(runner, peer(S.SECOND, True), journal.history)  # ...and is back
        assert vip.calls == ["add", "add", "add"]

    asyncio.run(scenario())


def test_a_dead_mount_is_remounted_and_the_application_started_once_writable(tmp_path):
    runner, dp, vip, scripts, journal, store, _ = make(tmp_path, S.PRIM, journal=FakeJournal(("g1",), uptodate=True))
    dp.mounts = [{"state": "PRIM", "mounted": True, "pid": 1}]

    async def scenario():
        await attached(runner)
        dp.mounts = [None]                                        # the mount daemon died
        await step(runner, peer(S.SECOND, True), journal.history)
        assert ("unmount", True) in dp.calls and ("mount", False) in dp.calls
        assert ("stop_prim", "PRIM") in scripts.runs and ("start_prim", "PRIM") not in scripts.runs
        assert runner.restarts_in_window() == 1
        dp.mounts = [{"state": "ALONE", "mounted": True, "pid": 2}]   # granted meanwhile
        await step(runner, peer(S.WAIT, False), journal.history)
        await step(runner, peer(S.WAIT, False), journal.history)
        assert ("start_prim", "ALONE") in scripts.runs or ("start_prim", "PRIM") in scripts.runs

    asyncio.run(scenario())


def test_after_a_stall_the_vip_returns_only_when_the_data_path_proves_this_node_primary(tmp_path):
    """A woken primary whose mount is fenced may be facing a peer that is taking over (and still
    says SECOND): the VIP stays withdrawn until the mount streams again or is granted ALONE."""
    runner, dp, vip, scripts, journal, store, _ = make(tmp_path, S.PRIM, journal=FakeJournal(("g1",), uptodate=True))
    dp.mounts = [{"state": "FENCED", "mounted": True, "pid": 1}]

    async def scenario():
        await attached(runner)
        runner.peer = peer(S.SECOND, True)
        await runner.withdraw_vip()
        assert runner.vip_withdrawn and vip.calls == ["remove"]
        await step(runner, peer(S.SECOND, True), journal.history)
        assert vip.calls == ["remove"]                          # fenced: proves nothing
        dp.mounts = [{"state": "PRIM", "mounted": True, "pid": 1}]
        await step(runner, peer(S.SECOND, True), journal.history)
        assert vip.calls == ["remove", "add"] and not runner.vip_withdrawn

    asyncio.run(scenario())


def test_after_a_stall_a_streaming_mount_proves_nothing_until_the_peer_is_heard_as_second(tmp_path):
    """Campaign 1801 t13: the mount was frozen with the agent, so right after the wake it still
    says it streams, though the peer took over meanwhile (its receiver stopped). Not heard yet:
    the VIP stays withdrawn; heard as SECOND (a taker says ALONE at once): it comes back."""
    runner, dp, vip, scripts, journal, store, _ = make(tmp_path, S.PRIM, journal=FakeJournal(("g1",), uptodate=True))
    dp.mounts = [{"state": "PRIM", "mounted": True, "pid": 1}]

    async def scenario():
        await attached(runner)
        vip.calls.clear()
        runner.peer = peer(S.SECOND, True)
        await runner.withdraw_vip()
        await step(runner, PeerView(alive=False), journal.history, ready=False)   # deaf after the stall
        assert vip.calls == ["remove"] and runner.state is S.PRIM
        await step(runner, peer(S.SECOND, True), journal.history)       # (the peer is back: announced too)
        assert vip.calls[:2] == ["remove", "add"] and vip.up and not runner.vip_withdrawn

    asyncio.run(scenario())


def test_a_dead_primary_is_told_from_a_silent_one_by_its_closed_connection(tmp_path):
    """peer_gone: the receiver saw the primary's connection close about when the heartbeats
    stopped, and four intervals of silence passed. A connection closed long before the last
    heartbeat (a mount restarted), a connection still open, or a short silence: not gone."""
    import time as clock

    from hamirror.agent.module_runner import Observation
    from hamirror.agent.runtime import peer_gone

    runner, *_ = make(tmp_path, S.SECOND, primary=False)

    def observe(**receiver):
        runner.obs = Observation(history(), True, (), (dict(receiver),), True)

    now = clock.time()
    observe(connections=0, closed_at=now - 1.3)
    assert peer_gone(runner, 1.3, 0.3)
    observe(connections=0, closed_at=now - 1.0)
    assert not peer_gone(runner, 1.0, 0.3)                  # not four intervals of silence yet
    observe(connections=1, closed_at=now - 1.3)
    assert not peer_gone(runner, 1.3, 0.3)                  # another connection is still open
    observe(connections=0, closed_at=now - 30.0)
    assert not peer_gone(runner, 1.3, 0.3)                  # closed long before it fell silent
    observe(connections=0, closed_at=None)
    assert not peer_gone(runner, 1.3, 0.3)


def test_a_hand_over_cut_short_after_its_persist_is_finished_at_restart(tmp_path):
    """The agent died in a swap between Persist(SECOND) and the unmount: the restarted agent must
    not receive into a directory still mounted, nor leave the application or the VIP up."""
    runner, dp, vip, scripts, _, store, _ = make(tmp_path, S.SECOND, journal=FakeJournal(("g1",), True))
    dp.mounts = [{"state": "PRIM", "mounted": True, "pid": 7}]
    asyncio.run(cleaned_up_then_waits(runner, dp, vip, scripts, store))


def test_a_mount_that_dies_under_a_failed_swap_is_remounted_not_retried_over(tmp_path):
    """kill -9 of the new primary's mount right after it mounted, in a swap: start_prim fails on the
    dead mount. Retrying start_prim would fail for ever; the runner decides again, the mount is
    repaired, then the application and the VIP come back."""
    runner, dp, vip, scripts, journal, store, clock = make(tmp_path, S.SECOND, primary=False,
                                                           journal=FakeJournal(("g1",), True), failing=("start_prim",))
    dp.receiving = True
    handing_over = peer(S.SECOND, True, swap=SwapPhase.HANDOVER)

    async def scenario():
        await runner.attach()
        await step(runner, handing_over, journal.history)
        assert runner.state is S.PRIM and runner.error and ("mount", False) in dp.calls
        dp.mounts = [None]                                    # the mount daemon died: start_prim failed
        mounts = dp.calls.count(("mount", False))
        scripts.failing = ()
        clock.now += 10
        await step(runner, peer(S.SECOND, True), journal.history)
        assert dp.calls.count(("mount", False)) == mounts + 1 and ("unmount", True) in dp.calls
        assert scripts.runs.count(("start_prim", "PRIM")) == 1   # not again over the dead mount
        vip.up = False
        await step(runner, peer(S.SECOND, True), journal.history)
        assert scripts.runs[-1] == ("start_prim", "PRIM") and vip.up and runner.error is None

    asyncio.run(scenario())


def test_a_swap_whose_old_primary_is_lost_before_the_new_mount_connects_ends_in_a_takeover(tmp_path):
    """The old primary lost power after its hand-over: the connected mount is never made; once the
    peer is lost the runner decides again and this node remounts ALONE, with its VIP and app."""
    runner, dp, vip, scripts, journal, store, clock = make(tmp_path, S.SECOND, primary=False,
                                                           journal=FakeJournal(("g1",), True))
    dp.receiving = True

    async def scenario():
        await runner.attach()
        dp.fail = {"mount"}                                   # no receiver answers the mount's hello
        await step(runner, peer(S.SECOND, True, swap=SwapPhase.HANDOVER), journal.history)
        assert runner.state is S.PRIM and runner.error and dp.calls[-1] == ("mount", False)
        dp.fail = set()
        clock.now += 10
        await step(runner, PeerView(alive=False))
        assert runner.state is S.ALONE and store.load().state is S.ALONE and dp.calls[-1] == ("mount", True)
        await step(runner, PeerView(alive=False))
        assert scripts.runs[-1] == ("start_prim", "ALONE") and vip.up and runner.error is None

    asyncio.run(scenario())


def test_a_start_blocked_by_a_fenced_mount_is_not_retried_over_the_verdict(tmp_path):
    """The old primary lost power while the new one's start_prim ran over its connected mount:
    the mount is FENCED, start_prim failed on it. The runner decides again (the verdict: ALONE),
    then the application starts with its VIP, instead of retrying start_prim before any verdict."""
    runner, dp, vip, scripts, journal, store, clock = make(tmp_path, S.SECOND, primary=False,
                                                           journal=FakeJournal(("g1",), True), failing=("start_prim",))
    dp.receiving = True

    async def scenario():
        await runner.attach()
        await step(runner, peer(S.SECOND, True, swap=SwapPhase.HANDOVER), journal.history)
        assert runner.state is S.PRIM and runner.error
        dp.mounts = [{"state": "FENCED", "mounted": True, "pid": 1}]   # the peer stopped acknowledging
        scripts.failing = ()
        clock.now += 10
        await step(runner, PeerView(alive=False))
        assert runner.state is S.ALONE and ("set_alone",) in [c[:1] for c in dp.calls]
        assert scripts.runs.count(("start_prim", "PRIM")) == 1               # not retried before the verdict
        vip.up = False
        await step(runner, PeerView(alive=False))
        assert scripts.runs[-1] == ("start_prim", "ALONE") and vip.up and runner.error is None

    asyncio.run(scenario())


def test_a_swap_whose_stop_prim_fails_keeps_saying_primary_until_the_retry_stopped_it(tmp_path):
    """Finding 8: the failed hand-over advertised SECOND (and handover) while the application and
    the VIP were up; the peer promoted beside them. The state, the swap phase and the record stay
    PRIM until the safety prefix (stop_prim, VIP removed, flush, unmount) is done."""
    runner, dp, vip, scripts, journal, store, clock = make(tmp_path, S.PRIM, journal=FakeJournal(("g1",), True),
                                                           failing=("stop_prim",))
    dp.mounts = [{"state": "PRIM", "mounted": True, "pid": 7}]

    async def scenario():
        await attached(runner)
        asked = runner.submit(Command.SWAP)
        await step(runner, peer(S.SECOND, True), history("g1"))
        outcome = asked.result()
        assert not outcome.ok and outcome.state == "PRIM" and "stop_prim" in outcome.error
        info = runner.advertised()
        assert (info.state, info.swap) == (S.PRIM, SwapPhase.NONE) and store.load().state is S.PRIM
        assert vip.up and dp.mounts[0] is not None
        scripts.failing = ()
        clock.now += 10
        await step(runner, peer(S.SECOND, True), history("g1"))      # the retry, from stop_prim
        info = runner.advertised()
        assert (info.state, info.swap) == (S.SECOND, SwapPhase.HANDOVER) and store.load().state is S.SECOND
        assert not vip.up and dp.mounts[0] is None and runner.error is None

    asyncio.run(scenario())


def test_a_record_that_cannot_be_restored_on_a_failing_disk_keeps_the_retry(tmp_path):
    """Review (issue 15): a failed stop_prim puts the record back to PRIM; on a failing disk that
    write raised out of the task, the retry was lost and the record said SECOND beside a running
    application. Now the failure is reported and the retry (which persists again) is kept."""
    runner, dp, vip, scripts, journal, store, clock = make(tmp_path, S.PRIM, journal=FakeJournal(("g1",), True),
                                                           failing=("stop_prim",))
    dp.mounts = [{"state": "PRIM", "mounted": True, "pid": 7}]
    persist, failing_disk = runner.persist, [False]

    def persist_on_a_failing_disk(state):
        if failing_disk[0] and state is S.PRIM:
            raise OSError(5, "Input/output error")
        persist(state)

    runner.persist = persist_on_a_failing_disk
    events = []
    runner.emit = lambda kind, text, **fields: events.append((kind, text))

    async def scenario():
        await attached(runner)
        failing_disk[0] = True
        asked = runner.submit(Command.SWAP)
        await step(runner, peer(S.SECOND, True), history("g1"))
        assert not asked.result().ok and runner.retry is not None and runner.state is S.PRIM
        assert ("action-failed", "the state record could not be put back to PRIM: [Errno 5] Input/output error"
                ) in events
        failing_disk[0], scripts.failing = False, ()
        clock.now += 10
        await step(runner, peer(S.SECOND, True), history("g1"))      # the retry persists SECOND again
        assert runner.advertised().state is S.SECOND and store.load().state is S.SECOND and not vip.up

    asyncio.run(scenario())


def test_the_state_advertised_after_a_failure_waits_for_the_safety_prefix():
    from hamirror.cluster import actions as a
    from hamirror.cluster.steps import state_after
    down = (a.Persist(S.WAIT), a.RefuseWrites(), a.RemoveVip(), a.RunScript("stop_prim"), a.Unmount(force=True),
            a.StartReceiver())
    assert [state_after(S.ALONE, S.WAIT, down, done) for done in range(7)] == [S.ALONE] * 5 + [S.WAIT] * 2
    takeover = (a.Persist(S.ALONE), a.StopReceiver(), a.MountReplicated(False), a.RunScript("start_prim"))
    assert {state_after(S.SECOND, S.ALONE, takeover, done) for done in range(5)} == {S.ALONE}


def test_a_command_submitted_while_an_automatic_sequence_runs_is_answered_by_its_own_decision(tmp_path):
    """CI, test_verify_lab (`stop --all`): the peer stopped, this primary's own PRIM -> ALONE was
    under way when the local `stop` arrived, and that sequence's end answered the operator with
    "ok, ALONE"; the stop itself ran only afterwards."""
    runner, dp, vip, scripts, journal, store, _ = make(tmp_path, S.PRIM, journal=FakeJournal(("g1",), uptodate=True))
    dp.mounts = [{"state": "FENCED", "mounted": True, "pid": 1, "fenced_since": 1.0}]

    async def scenario():
        await attached(runner)
        await runner.tick(peer(S.STOP, True), journal.history, None, True)   # automatic: PRIM -> ALONE
        assert runner.task is not None
        stop = runner.submit(Command.STOP)
        await runner.task
        assert runner.state is S.ALONE and not stop.done()                   # not this sequence's answer
        await step(runner, peer(S.STOP, True), journal.history)
        outcome = stop.result()
        assert outcome.ok and outcome.state == "STOP" and store.load().state is S.STOP

    asyncio.run(scenario())



def test_a_promotion_claims_the_quorum_lease_from_its_first_action(tmp_path):
    """Campaigns 4306-4307 (etcd): the agent claimed the lease only once a module's state was
    primary, which a promotion sets when its last action ends; a swap's hand-over mounted before
    it held a tenure, with a fencing token the old primary's receiver refused, and waited 5 s for
    the retry. The claim follows what the heartbeats say (primary from the first action)."""
    runner, dp, *_ = make(tmp_path, S.SECOND, primary=False, journal=FakeJournal(("g1",), uptodate=True))
    dp.receiving = True
    agent = types.SimpleNamespace(runners={"demo": runner})
    seen = []
    run = runner.executor.run

    def spying(action, target):
        seen.append((runner.state, Agent._any_primary(agent)))
        return run(action, target)

    runner.executor.run = spying

    async def scenario():
        await runner.attach()
        assert not Agent._any_primary(agent)                          # SECOND: no claim
        await step(runner, PeerView(alive=False))
        assert runner.state is S.ALONE and Agent._any_primary(agent)

    asyncio.run(scenario())
    assert seen and {state for state, _ in seen} == {S.SECOND}       # the state moves at the end ...
    assert all(claims for _, claims in seen)                          # ... the claim from the start
