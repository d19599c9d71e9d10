"""Maintenance and flap damping in the agent (issue 9): persisted, fed to the decision, counted,
cleared, shown in status (fakes for the data path; no processes)."""

from __future__ import annotations

import asyncio
import os

from hamirror.agent.checks import CheckerState
from hamirror.agent.executor import Executor
from hamirror.agent.module_runner import ModuleRunner
from hamirror.agent.persist import ModuleRecord, Store
from hamirror.agent.status import module_status, render_table
from hamirror.cluster.actions import RestartApp
from hamirror.cluster.states import NodeState
from hamirror.cluster.view import Command, PeerView
from tests.agent_fakes import FakeDataPath, FakeJournal, FakeScripts, FakeVip
from tests.test_agent_runner import Clock, peer, step

S = NodeState


def make(tmp_path, state=S.SECOND, failover_max=0, record=None):
    """A SECOND (up to date, receiving) that records the events it emits."""
    store = Store(str(tmp_path / "demo"))
    store.save(record or ModuleRecord(state=state))
    journal = FakeJournal(("g1",), uptodate=True)
    dp, vip, scripts = FakeDataPath(journal=journal), FakeVip(), FakeScripts()
    dp.receiving = True
    ex = Executor("demo", dp, vip, scripts, journal, lambda s: None, lambda: None)
    clock = Clock()
    runner = ModuleRunner("demo", "node2", False, store, ex, dp, journal, CheckerState("demo", [], clock), 3,
                          300.0, clock=clock, wall=clock, failover_max=failover_max, failover_window=600.0)
    events: list[tuple] = []
    runner.emit = lambda kind, text, **fields: events.append((kind, text, fields))
    return runner, dp, vip, store, clock, events


def test_maintenance_survives_a_restart_and_holds_the_takeover(tmp_path):
    runner, dp, vip, store, _, events = make(tmp_path)

    async def scenario():
        await runner.attach()
        runner.set_maintenance(True)
        assert store.load().maintenance
        again, dp2, vip2, *_ = make(tmp_path, record=store.load())     # the agent restarted
        assert again.maintenance and module_status(again)["maintenance"] is True
        table = render_table({"node": "node2", "modules": [module_status(again)], "peer": {}}).splitlines()
        assert table[2].startswith("demo    SECOND [maintenance]  -")
        assert table[3] == ("demo: MAINTENANCE: checkers and automatic failover suspended, the application is "
                            "left alone ('hamirror maintenance off demo' to resume)")
        await again.attach()
        await step(again, PeerView(alive=False))
        assert again.state is S.SECOND and not vip2.up and dp2.calls == []
        assert again.warnings == ("maintenance (`hamirror maintenance off demo` to resume): held back: "
                                  "peer lost: taking over",)
        again.set_maintenance(False)
        await step(again, PeerView(alive=False))
        assert again.state is S.ALONE and vip2.up

    asyncio.run(scenario())


def test_maintenance_is_for_the_cluster_the_newest_setting_wins(tmp_path):
    """Typed on one node, maintenance reaches the other through the heartbeats (so the SECOND does
    not take over from a primary the operator is working on); a later setting on either node wins."""
    here, _, _, store, _, events = make(tmp_path / "here")
    there, *_ = make(tmp_path / "there", state=S.PRIM)
    there.set_maintenance(True)                                    # the operator, on the primary
    sent = there.advertised()
    assert (sent.maintenance, sent.maintenance_version) == (True, 1)
    here.follow_peer_maintenance(sent.maintenance, sent.maintenance_version, "node1")
    assert here.maintenance and store.load().maintenance_version == 1
    assert events[-1] == ("maintenance", "maintenance on (set on node1)", {"on": True})
    here.follow_peer_maintenance(True, 1, "node1")                 # the next heartbeats: nothing new
    assert len(events) == 1
    here.set_maintenance(False)                                    # then off, on this node
    assert here.advertised().maintenance_version == 2
    there.follow_peer_maintenance(False, 2, "node2")
    assert not there.maintenance
    here.follow_peer_maintenance(True, 1, "node1")                 # a stale heartbeat changes nothing
    assert not here.maintenance


def test_a_held_decision_is_recorded_once(tmp_path):
    runner, *_, events = make(tmp_path)
    runner.set_maintenance(True)

    async def scenario():
        await runner.attach()
        for _ in range(3):
            await step(runner, PeerView(alive=False))

    asyncio.run(scenario())
    assert [kind for kind, *_ in events] == ["attach", "held"]


def test_failovers_are_counted_and_damped_until_cleared(tmp_path):
    runner, dp, vip, store, clock, events = make(tmp_path, failover_max=1)

    async def scenario():
        await runner.attach()
        await step(runner, PeerView(alive=False))                      # takeover 1: counted, limit reached
        assert runner.state is S.ALONE and store.load().failovers == (clock.now,) and store.load().damped
        assert [e[0] for e in events if e[0] in ("takeover", "damped", "state")] == ["takeover", "damped", "state"]
        assert events[-1] == ("state", "SECOND -> ALONE (automatic)", {"why": "automatic", "from": "SECOND",
                                                                        "to": "ALONE"})
        doc = module_status(runner)
        assert doc["failovers"] == {"recent": 1, "max": 1, "window": 600.0, "damped": True}
        assert "demo: FAILOVER DAMPED: 1 failover(s) within 600 s (limit 1): failovers held back " \
               "('hamirror clear demo' to allow them again)" in render_table(
                   {"node": "node2", "modules": [doc], "peer": {}})
        clock.now += 3600                                             # the window passed: still latched
        await step(runner, peer(S.ALONE, True))                       # both primary: data safety steps down
        assert runner.state is S.WAIT
        runner.clear()
        assert store.load().failovers == () and not store.load().damped

    asyncio.run(scenario())


def test_maintenance_off_clears_damping_and_commands_run_in_maintenance(tmp_path):
    runner, dp, vip, store, _, _ = make(tmp_path, record=ModuleRecord(state=S.SECOND, damped=True,
                                                                        failovers=(1.0,), maintenance=True))

    async def scenario():
        await runner.attach()
        future = runner.submit(Command.STOP)
        await step(runner, peer(S.PRIM, True))
        assert runner.state is S.STOP and (await future).ok
        runner.set_maintenance(False)
        assert store.load() == ModuleRecord(state=S.STOP, updated=store.load().updated, maintenance_version=1)

    asyncio.run(scenario())


def test_a_checker_failure_is_not_acted_on_in_maintenance(tmp_path):
    runner, dp, vip, store, _, _ = make(tmp_path, state=S.PRIM)
    dp.mounts = [{"state": "PRIM", "mounted": True, "pid": 7}]

    async def scenario():
        await runner.attach()
        runner.checkers.failure = "tcp: refused"
        runner.set_maintenance(True)
        assert runner.checkers.ok                     # forgotten when maintenance began
        runner.checkers.failure = "tcp: refused"      # seen again later: still not acted on
        await step(runner, peer(S.SECOND, True))
        assert runner.state is S.PRIM and runner.executor.scripts.runs == [] and runner.warnings == ()

    asyncio.run(scenario())


def test_operator_settings_through_the_agent_are_recorded_with_the_caller(tmp_path):
    """``hamirror maintenance on|off`` and ``clear`` answer at once; the timeline says who ran them."""
    from hamirror.agent import control
    from hamirror.agent.runtime import Agent
    from hamirror.config import load_cluster, load_modules
    from tests.configfiles import write_cluster, write_module, write_secrets

    config = write_cluster(tmp_path)
    write_module(tmp_path, replace={"[vars]": "[failover]\nmax = 2\nwindow = 60\n\n[vars]"})
    write_secrets(tmp_path)
    cluster = load_cluster(config)
    [module] = load_modules(cluster)
    assert (module.failover.max, module.failover.window) == (2, 60.0)
    agent = Agent(cluster, [module])

    async def scenario():
        control._CALLER.set((os.getpid(), os.geteuid()))       # as the control server does per connection
        on = await agent.handle({"cmd": "maintenance", "module": "app", "on": True})
        assert on == {"ok": True, "state": "WAIT", "warnings": [], "error": None, "maintenance": True}
        assert agent.status()["modules"][0]["maintenance"] is True
        off = await agent.handle({"cmd": "clear", "module": "app"})
        assert off["ok"] and off["maintenance"] is True
        nope = await agent.handle({"cmd": "maintenance", "module": "nope", "on": True})
        assert (nope["error"], nope["unknown_module"]) == ("no module 'nope' on this node (modules: app)", True)

    asyncio.run(scenario())
    commands = [e for e in agent.events.read("app") if e["kind"].startswith("command")]
    assert [(e["kind"], e["command"]) for e in commands] == [
        ("command", "maintenance on"), ("command-result", "maintenance on"), ("command", "clear"),
        ("command-result", "clear")]
    assert commands[0]["caller"]["pid"] == os.getpid() and commands[0]["text"].startswith("maintenance on by ")
    assert commands[1]["text"] == "maintenance on: done, now WAIT"


def test_a_restart_clears_the_repairs_pending_start(tmp_path):
    runner, dp, vip, store, _, _ = make(tmp_path, state=S.PRIM)
    runner.executor.app_stopped = True
    vip.up = True                 # a primary's VIP (without it, the start is left to a new decision)
    runner.executor.run(RestartApp(counted=False), S.PRIM)
    assert not runner.executor.app_stopped


def test_cli_maintenance_and_clear_need_the_agent(tmp_path):
    from tests.conftest import run_cli
    from tests.configfiles import write_cluster, write_module

    config = write_cluster(tmp_path)
    write_module(tmp_path)
    for args in (["maintenance", "on", "app"], ["clear", "app"]):
        result = run_cli(*args, "-c", config)
        assert result.returncode == 4 and result.stderr.startswith("hamirror: agent not running (no control socket at")
    bad = run_cli("maintenance", "maybe", "app", "-c", config)
    assert bad.returncode == 2 and "invalid choice: 'maybe' (choose from 'on', 'off')" in bad.stderr


def test_a_retry_failing_the_same_way_is_recorded_once(tmp_path):
    runner, dp, vip, store, clock, events = make(tmp_path)
    runner.executor.scripts.failing = ("start_prim",)

    async def scenario():
        await runner.attach()
        for _ in range(3):
            await step(runner, PeerView(alive=False))
            clock.now += 10                                   # past the retry pause
        runner.executor.scripts.failing = ()
        await step(runner, PeerView(alive=False))

    asyncio.run(scenario())
    failed = [text for kind, text, _ in events if kind == "action-failed"]
    assert failed == ["RunScript(start_prim) failed: start_prim exit 1"]
    assert runner.executor.scripts.runs.count(("start_prim", "ALONE")) == 4 and runner.error is None


def test_the_web_console_shows_maintenance_and_damping():
    from hamirror.agent.console import render
    module = {"name": "demo", "state": "PRIM", "peer_state": "SECOND", "uptodate": True, "mirror": "streaming",
              "maintenance": True, "failovers": {"recent": 3, "max": 3, "window": 600.0, "damped": True}}
    doc = {"node": "node1", "status": {"node": "node1", "cluster": "lab", "peer": {"name": "node2", "alive": True},
                                       "modules": [module]}, "modules": {}, "events": []}
    page = render.view(doc, "node2", None, "connection refused", 1.0)
    assert "ON: checkers and automatic failover suspended" in page
    assert "<strong class=\"bad\">DAMPED</strong>, failovers held back until <code>hamirror clear demo</code>" in page
