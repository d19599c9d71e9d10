"""``hamirror reload`` inside a real Agent object (not started) whose runners use fakes: a bad
configuration changes nothing, modules are added and removed, a primary's VIP moves, data-path
keys wait. The two-node proof is tests/test_reload_lab.py."""

from __future__ import annotations

import asyncio
import os
import shutil

from hamirror.agent.checks import CheckerState
from hamirror.agent.executor import Executor
from hamirror.agent.module_runner import ModuleRunner
from hamirror.agent.persist import ModuleRecord, Store
from hamirror.agent.runtime import Agent
from hamirror.cluster.states import NodeState
from hamirror.config import load_cluster, load_modules
from hamirror.config.module import ModuleConfig
from tests.agent_fakes import FakeDataPath, FakeJournal, FakeScripts, FakeVip
from tests.configfiles import write_cluster, write_module, write_secrets

S = NodeState


class TaggedVip(FakeVip):
    def __init__(self, address: str | None) -> None:
        super().__init__()
        self.address = address


def fake_builder(cluster):
    def build(module: ModuleConfig) -> ModuleRunner:
        journal, dp = FakeJournal(), FakeDataPath()
        vip = TaggedVip(module.vip.address if module.vip else None)
        ex = Executor(module.name, dp, vip, FakeScripts(), journal, lambda s: None, lambda: None)
        store = Store(cluster.module_state_dir(module.name))
        return ModuleRunner(module.name, cluster.local_name, module.default_primary == cluster.local_name, store,
                            ex, dp, journal, CheckerState(module.name, []), module.restart.max_restarts,
                            module.restart.window)
    return build


def running_agent(tmp_path, state: NodeState = S.PRIM) -> Agent:
    """An Agent (never started) running module ``app`` in ``state``, with fake runners."""
    path = write_cluster(tmp_path)
    write_secrets(tmp_path)
    write_module(tmp_path)
    cluster = load_cluster(path)
    modules = load_modules(cluster)
    agent = Agent(cluster, [])
    agent.reloader.build = fake_builder(cluster)
    Store(cluster.module_state_dir("app")).save(ModuleRecord(state=state))
    runner = agent.reloader.build(modules[0])
    runner.executor.vip.up = state.is_primary
    agent.adopt(runner)
    agent.modules = modules
    return agent


def reload(agent: Agent) -> dict:
    async def run() -> dict:
        report = await agent.reloader.reload("test")
        for runner in agent.runners.values():      # what the reload started (an added module's start)
            if runner.task is not None:
                await runner.task
        return report
    return asyncio.run(run())


def test_a_bad_configuration_is_refused_whole_and_the_running_one_is_kept(tmp_path):
    agent = running_agent(tmp_path)
    runner = agent.runners["app"]
    write_module(tmp_path, "other", name="other", replace={"7410": "7420", "/srv/app": "/srv/other",
                                                           "198.18.0.100/24": "198.18.0.101/24"})
    write_module(tmp_path, replace={"replication_port = 7410": 'replication_port = "x"'})
    report = reload(agent)
    assert report["ok"] is False and report["refused"] is True
    file = os.path.join(str(tmp_path), "modules", "app", "module.toml")
    assert [(e["file"], e["key"]) for e in report["errors"]] == [(file, "module.replication_port")]
    assert agent.runners == {"app": runner} and [m.replication_port for m in agent.modules] == [7410]
    assert agent.events.recent[-1]["kind"] == "reload"
    assert "reload refused, the running configuration is kept" in agent.events.recent[-1]["text"]


def test_a_module_added_joins_in_wait_and_a_stopped_module_removed_is_dropped_with_its_state(tmp_path):
    agent = running_agent(tmp_path, S.STOP)
    state_dir = agent.cluster.module_state_dir("app")
    assert os.path.isdir(state_dir)
    os.rename(tmp_path / "modules" / "app", tmp_path / "modules" / ".app-removed")
    write_module(tmp_path, "other", name="other")
    report = reload(agent)
    assert report["ok"] is True, report
    assert (report["removed"], report["added"]) == (["app"], ["other"])
    assert list(agent.runners) == ["other"] and [m.name for m in agent.modules] == ["other"]
    assert not os.path.exists(state_dir)
    added = agent.runners["other"]
    assert added.state is S.WAIT and added.datapath.receiving     # as a start: WAIT, receiver listening
    assert added.emit.func == agent.events.add                    # wired to the timeline
    # The peer compares what runs here now: the heartbeats carry the added module's digest, not the removed one's.
    assert set(agent.heartbeat.digests.modules) == {"other"} and agent.agreement.digests is agent.heartbeat.digests


def test_a_primary_vip_change_restarts_the_application_in_place_on_the_new_vip(tmp_path):
    agent = running_agent(tmp_path, S.PRIM)
    runner = agent.runners["app"]
    old_vip, old_scripts = runner.executor.vip, runner.executor.scripts
    write_module(tmp_path, replace={"198.18.0.100/24": "198.18.0.101/24",
                                    "port = 8080\n\n[vars]": "port = 8081\n\n[vars]"})
    report = reload(agent)
    assert report["ok"] is True, report
    assert report["changed"] == {"app": ["vip.address", "checkers"]} and report["not_applied"] == []
    assert agent.runners["app"] is runner and runner.state is S.PRIM      # the same runner, data path untouched
    # The application restarted around the VIP, old scripts to stop, new ones to start; no mount touched.
    assert old_scripts.runs == [("stop_prim", "PRIM")] and old_vip.calls == ["remove"]
    new_vip, new_scripts = runner.executor.vip, runner.executor.scripts
    assert new_vip.address == "198.18.0.101/24" and new_vip.calls == ["add"]
    assert new_scripts.runs == [("start_prim", "PRIM")] and not runner.executor.app_stopped
    assert runner.datapath.calls == [] and runner.task is None and runner.transition is None
    assert agent.modules[0].vip.address == "198.18.0.101/24"


def test_data_path_keys_are_named_and_wait_while_the_module_runs(tmp_path):
    agent = running_agent(tmp_path, S.PRIM)
    runner = agent.runners["app"]
    write_module(tmp_path, replace={"replication_port = 7410": "replication_port = 7420",
                                    "default_primary = \"node1\"": "default_primary = \"node2\""})
    report = reload(agent)
    assert report["ok"] is True
    assert report["changed"] == {"app": ["module.default_primary"]}
    assert [(i["module"], i["key"], i["needs"]) for i in report["not_applied"]] == [
        ("app", "module.replication_port", "data-path restart")]
    assert "app: module.replication_port: 7410 -> 7420: needs a" in report["not_applied"][0]["text"]
    assert agent.runners["app"] is runner and runner.default_primary is False
    assert agent.modules[0].replication_port == 7410                  # as the mount runs
    assert reload(agent)["not_applied"] == report["not_applied"]      # still said at the next reload


def test_data_path_keys_apply_to_a_module_stopped_here(tmp_path):
    agent = running_agent(tmp_path, S.STOP)
    runner = agent.runners["app"]
    write_module(tmp_path, replace={"replication_port = 7410": "replication_port = 7420"})
    report = reload(agent)
    assert report["ok"] is True and report["not_applied"] == []
    assert report["changed"] == {"app": ["module.replication_port"]} and report["added"] == []
    assert agent.runners["app"] is not runner and agent.runners["app"].state is S.STOP
    assert agent.modules[0].replication_port == 7420


def test_cluster_file_keys_wait_for_an_agent_restart(tmp_path):
    agent = running_agent(tmp_path, S.PRIM)
    write_cluster(tmp_path, {"timeout = 2.0": "timeout = 3.0"})
    report = reload(agent)
    assert report["ok"] is True
    assert [(i["module"], i["key"], i["needs"]) for i in report["not_applied"]] == [
        (None, "heartbeat.timeout", "agent restart")]


def test_a_running_module_whose_folder_is_gone_is_not_removed_and_the_report_says_how(tmp_path):
    agent = running_agent(tmp_path, S.PRIM)
    runner = agent.runners["app"]
    shutil.rmtree(tmp_path / "modules" / "app")
    report = reload(agent)
    assert report["ok"] is False and report["refused"] is False
    [failed] = report["failed"]
    assert failed["module"] == "app" and "is gone, and its stop_prim and stop_second with it: put the folder " \
        "back and use `hamirror module remove app`, or stop the module first (`hamirror forcestop app` needs " \
        "no script), then reload" in failed["error"]
    assert agent.runners == {"app": runner} and runner.state is S.PRIM and runner.executor.scripts.runs == []
    assert [m.name for m in agent.modules] == ["app"]       # still running: the next reload tries again


def test_a_primary_vip_change_whose_stop_fails_keeps_the_old_vip_and_the_next_decision_restarts_the_app(tmp_path):
    agent = running_agent(tmp_path, S.PRIM)
    runner = agent.runners["app"]
    old_vip, old_scripts = runner.executor.vip, runner.executor.scripts
    old_scripts.failing = ("stop_prim",)
    write_module(tmp_path, replace={"198.18.0.100/24": "198.18.0.101/24"})
    report = reload(agent)
    assert report["ok"] is False and report["changed"] == {"app": []}
    assert report["failed"] == [{"module": "app", "error": "VIP not changed: stop_prim exit 1; the module keeps "
                                                           "its old VIP"}]
    assert runner.executor.vip is old_vip and runner.executor.scripts is old_scripts and old_vip.calls == []
    assert runner.executor.app_stopped and agent.modules[0].vip.address == "198.18.0.100/24"


def test_the_commands_exit_codes_without_an_agent(tmp_path, capsys):
    from hamirror.cli.main import main
    path = write_cluster(tmp_path)
    write_module(tmp_path)
    assert main(["reload", "-c", path]) == 4                         # no agent to ask
    assert "agent not running" in capsys.readouterr().err
    assert main(["module", "remove", "nope", "-c", path]) == 2       # no such module
    assert main(["module", "remove", "app", "-c", path, "--json"]) == 4
    err = capsys.readouterr().err
    assert "moved to" in err and "the module is no longer configured here" in err
    [aside] = os.listdir(tmp_path / "modules" / ".removed")
    assert aside.startswith("app-") and not (tmp_path / "modules" / "app").exists()


def test_the_report_is_printed_with_what_waits_and_the_exit_code_says_refused_or_failed(capsys):
    from hamirror.cli.reload import exit_code, print_report
    done = {"ok": True, "refused": False, "errors": [], "added": ["b"], "removed": [],
            "changed": {"a": ["vip.address"]},
            "not_applied": [{"text": "a: module.replication_port: 7410 -> 7420: needs a data-path restart"}],
            "failed": []}
    print_report(done)
    out, err = capsys.readouterr()
    assert out == "reloaded: added: b; changed: a (vip.address)\n"
    assert err == "not applied: a: module.replication_port: 7410 -> 7420: needs a data-path restart\n"
    assert exit_code(done) == 0
    assert exit_code({**done, "ok": False, "failed": [{"module": "a", "error": "x"}]}) == 1
    assert exit_code({"ok": False, "refused": True}) == 2


def test_module_remove_puts_the_folder_back_when_the_agent_could_not_stop_the_module(tmp_path, capsys):
    """What runs and what is configured stay the same: the operator can run `module remove` again."""
    import threading

    from hamirror.agent.control import ControlServer, socket_path
    from hamirror.cli.main import main
    path = write_cluster(tmp_path)
    write_module(tmp_path)
    asked: list[dict] = []

    async def handler(request: dict) -> dict:
        asked.append(request)
        return {"ok": False, "refused": False, "errors": [], "added": [], "removed": [], "changed": {},
                "not_applied": [], "failed": [{"module": "app", "error": "not removed: stop failed: stop_prim exit 1"}]}

    loop = asyncio.new_event_loop()
    server = ControlServer(socket_path(load_cluster(path).run_dir), handler)
    loop.run_until_complete(server.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        assert main(["module", "remove", "app", "-c", path]) == 1
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
    [request] = asked
    assert request["cmd"] == "reload" and list(request["moved"]) == ["app"]
    assert "/modules/.removed/app-" in request["moved"]["app"]
    assert (tmp_path / "modules" / "app" / "module.toml").exists()
    out, err = capsys.readouterr()
    assert "failed: app: not removed: stop failed: stop_prim exit 1" in err and "app: folder left in place" in out


def test_a_module_added_on_a_node_in_standby_is_in_standby_too(tmp_path):
    agent = running_agent(tmp_path, S.STOP)
    agent.standby = True
    write_module(tmp_path, "other", name="other", replace={"7410": "7420", "/srv/app": "/srv/other",
                                                           "198.18.0.100/24": "198.18.0.101/24"})
    assert reload(agent)["added"] == ["other"]
    assert agent.runners["other"].standby is True
