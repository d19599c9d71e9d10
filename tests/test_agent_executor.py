"""The executor maps each action onto the data path, VIP, scripts and journal (fakes, no processes)."""

from __future__ import annotations

import pytest

from hamirror.agent.executor import ActionFailed, Executor
from hamirror.cluster import actions as a
from hamirror.cluster.states import NodeState
from tests.agent_fakes import FakeDataPath, FakeJournal, FakeScripts, FakeVip

S = NodeState


def make(failing_scripts: tuple[str, ...] = ()):
    dp, vip, scripts, journal = FakeDataPath(), FakeVip(), FakeScripts(failing_scripts), FakeJournal()
    persisted, restarts, killed = [], [], []

    def killer(dirs, spare):
        killed.append((tuple(dirs), frozenset(spare)))
        return [42]

    ex = Executor("demo", dp, vip, scripts, journal, persisted.append, lambda: restarts.append(1), killer)
    return ex, dp, vip, scripts, journal, persisted, restarts, killed


def test_takeover_sequence_maps_to_the_data_path_contract():
    ex, dp, vip, scripts, journal, persisted, _, _ = make()
    for action in (a.Persist(S.ALONE), a.RunScript("stop_second"), a.StopReceiver(), a.NewGeneration(),
                   a.MarkUpToDate(True), a.MountReplicated(peer_connected=False), a.AddVip(),
                   a.RunScript("start_prim")):
        ex.run(action, S.ALONE)
    assert persisted == [S.ALONE]
    assert dp.calls == [("stop_receivers",), ("mount", True)]     # NewGeneration: done by mount --alone
    assert vip.up and journal.uptodate
    assert scripts.runs == [("stop_second", "ALONE"), ("start_prim", "ALONE")]


def test_mirroring_switches_use_the_mount_control():
    ex, dp, *_ = make()
    ex.run(a.MountReplicated(peer_connected=True), S.PRIM)
    assert dp.calls == [("mount", False)] and dp.tenure_waits == 1   # joining its peer: its tenure first
    ex.run(a.MountReplicated(peer_connected=False), S.ALONE)
    assert dp.tenure_waits == 1                                       # alone: no session to refuse
    ex.run(a.SetMirroring(False), S.ALONE)
    assert dp.mounts[0]["state"] == "ALONE"
    with pytest.raises(ActionFailed, match="mirroring not active"):
        ex.run(a.SetMirroring(True), S.PRIM)        # the resync has not switched the mount to PRIM
    ex.run(a.StartResync(full=True), S.ALONE)
    assert ("resync", True) in dp.calls
    dp.mounts = [dict(dp.mounts[0], state="PRIM")]
    ex.run(a.SetMirroring(True), S.PRIM)


def test_stop_sequences_flush_then_unmount_and_forcestop_kills():
    ex, dp, vip, scripts, _, _, _, killed = make()
    vip.up = True
    for action in (a.RunScript("stop_prim"), a.RemoveVip(), a.Flush(), a.Unmount()):
        ex.run(action, S.STOP)
    assert dp.calls == [("flush",), ("unmount", False)] and not vip.up
    ex.run(a.KillApp(), S.STOP)
    ex.run(a.Unmount(force=True), S.STOP)
    assert scripts.kills == 1                                # the application's group, at once
    assert killed == [(("/srv/d0",), frozenset({1}))]       # then by directory; the mount's pid is spared
    assert dp.calls[-1] == ("unmount", True)


def test_a_step_down_tells_stop_prim_that_the_mounts_refuse_writes():
    """Campaign 4213: a primary refused by the witness refuses writes first, then runs stop_prim;
    MariaDB's clean shutdown could flush nothing and waited out its 60 s stop_timeout, the peer
    waiting with it. stop_prim is told (HAMIRROR_WRITES_REFUSED) only then: a hand-over's stop,
    writes still flowing, shuts down cleanly."""
    ex, dp, _, scripts, *_ = make()
    ex.run(a.MountReplicated(peer_connected=True), S.PRIM)
    ex.run(a.RunScript("stop_prim"), S.SECOND)                  # a swap's: writes flow
    ex.run(a.RefuseWrites(), S.WAIT)
    ex.run(a.RunScript("stop_prim"), S.WAIT)                    # a step-down's
    ex.run(a.RunScript("stop_second"), S.WAIT)
    assert scripts.refused_runs == ["stop_prim"] and [n for n, _ in scripts.runs].count("stop_prim") == 2


def test_failures_become_action_failed_with_the_reason():
    ex, dp, vip, *_ = make(failing_scripts=("start_prim",))
    vip.up = True
    with pytest.raises(ActionFailed, match="start_prim exit 1"):
        ex.run(a.RunScript("start_prim"), S.ALONE)
    dp.fail.add("mount")
    with pytest.raises(ActionFailed, match="mount broke"):
        ex.run(a.MountReplicated(peer_connected=False), S.ALONE)


def test_restart_counts_only_checker_restarts_and_journal_flags():
    ex, _, vip, scripts, journal, _, restarts, _ = make()
    vip.up = True
    ex.run(a.RestartApp(counted=True), S.PRIM)
    ex.run(a.RestartApp(counted=False), S.PRIM)
    assert restarts == [1]
    assert scripts.runs == [("stop_prim", "PRIM"), ("start_prim", "PRIM")] * 2
    journal.uptodate = True
    ex.run(a.ForgetHistory(), S.WAIT)
    assert journal.forgotten and not journal.uptodate


def test_start_prim_without_the_vip_is_left_to_a_new_decision():
    """Issue 15, finding 2: the VIP withdrawn after a stall made every retry of start_prim fail to
    bind it for 5+ minutes. The executor does not run start_prim without it: the runner drops the
    sequence and decides again (the application is marked stopped, so the decision adds the VIP
    and starts it together)."""
    from hamirror.agent.executor import NeedsDecision

    ex, _, vip, scripts, *_ = make()
    with pytest.raises(NeedsDecision, match="the VIP is not on this node"):
        ex.run(a.RunScript("start_prim"), S.ALONE)
    assert scripts.runs == [] and ex.app_stopped
    with pytest.raises(NeedsDecision):
        ex.run(a.RestartApp(counted=False), S.PRIM)
    assert scripts.runs == [("stop_prim", "PRIM")] and ex.app_stopped
    ex.run(a.AddVip(), S.ALONE)
    ex.run(a.RunScript("start_prim"), S.ALONE)
    assert scripts.runs[-1] == ("start_prim", "ALONE") and not ex.app_stopped
    ex.run(a.RunScript("start_second"), S.SECOND)          # only a primary's start needs it


def test_a_start_retried_after_the_vip_was_withdrawn_comes_back_with_its_vip(tmp_path):
    """Issue 15, finding 2: start_prim failed, the agent then stalled and withdrew the VIP, and every
    retry of the same sequence ran start_prim without the address it binds. Now the retry is
    dropped, and the next decision adds the VIP and starts the application together."""
    import asyncio

    from tests.agent_fakes import FakeJournal
    from tests.test_agent_runner import make as make_runner, step
    from hamirror.cluster.view import PeerView

    runner, dp, vip, scripts, journal, _, clock = make_runner(tmp_path, S.ALONE, journal=FakeJournal(("g1",), True),
                                                              failing=("start_prim",))
    dp.mounts = [{"state": "ALONE", "mounted": True, "pid": 1}]
    started_with_vip: list[bool] = []
    run = scripts.run
    scripts.run = lambda name, state, **kw: (started_with_vip.append(vip.up) if name == "start_prim" else None,
                                             run(name, state, **kw))[1]

    async def scenario():
        await runner.attach()
        await runner.task
        runner.executor.app_stopped = True                  # a repair left the application stopped
        await step(runner, PeerView(alive=False))
        assert runner.retry is not None and started_with_vip == [True]      # failed: a retry is pending
        await runner.withdraw_vip()                           # a stall
        assert not vip.up
        scripts.failing = ()
        clock.now += 10
        await step(runner, PeerView(alive=False))             # the retry: no start without the VIP
        assert started_with_vip == [True] and runner.retry is None
        await step(runner, PeerView(alive=False))             # decided again: VIP, then start_prim
        assert started_with_vip == [True, True] and vip.up and runner.error is None
        assert not runner.executor.app_stopped

    asyncio.run(scenario())
