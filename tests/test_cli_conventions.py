"""CLI conventions (issue 17): one-line errors, an exit code per kind of failure, ``--json`` on
the commands that report. Real processes; the agent is a real control socket whose answers the
test chooses (no cluster needed to check how the CLI words and codes them)."""

from __future__ import annotations

import asyncio
import json
import os
import threading

import pytest

from hamirror.agent.control import ControlServer, socket_path
from hamirror.cli.config import AVAILABILITY_FIRST
from tests.configfiles import write_cluster, write_module, write_secrets
from tests.conftest import run_cli

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the control socket answers root only")


class Agent:
    """A control socket on ``run_dir`` answering with ``answers[action or cmd]`` (a dict, or None:
    never answer)."""

    def __init__(self, run_dir: str, answers: dict[str, dict | None]) -> None:
        self.answers = answers
        self.loop = asyncio.new_event_loop()
        self.server = ControlServer(socket_path(run_dir), self.handle)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def handle(self, request: dict) -> dict:
        answer = self.answers[request.get("action") or request["cmd"]]
        if answer is None:
            await asyncio.sleep(3600)
        return answer

    def __enter__(self) -> Agent:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        return self

    async def _shutdown(self) -> None:
        """End the requests left unanswered on purpose, then the server."""
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.server.close()

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def config(tmp_path) -> str:
    path = write_cluster(tmp_path)
    write_module(tmp_path)
    write_secrets(tmp_path)
    return path


def test_keygen_on_a_bad_directory_is_one_line_without_traceback(tmp_path):
    """Finding: ``keygen --keys FILE/keys`` printed a NotADirectoryError traceback."""
    (tmp_path / "afile").write_text("")
    below = run_cli("keygen", "--keys", str(tmp_path / "afile" / "keys"), "--name", "n")
    assert (below.returncode, below.stdout, below.stderr) == (
        2, "", f"hamirror: {tmp_path}/afile/keys: cannot write the key pair: Not a directory\n")
    itself = run_cli("keygen", "--keys", str(tmp_path / "afile"), "--name", "n")
    assert (itself.returncode, itself.stderr) == (
        2, f"hamirror: {tmp_path}/afile: not a directory (--keys names the keys directory)\n")


def test_events_of_an_unknown_module_names_the_known_ones(tmp_path, config):
    """Finding: ``events typo`` exited 0 with no output, as for a module with no events yet."""
    from hamirror.agent.events import EventLog
    (tmp_path / "state").mkdir()
    EventLog(str(tmp_path / "state"), "node1").add("command", "stop by root", module="gone")
    result = run_cli("events", "ap", "-c", config)
    assert (result.returncode, result.stdout, result.stderr) == (
        2, "", f"hamirror: no module 'ap' (known: app, gone; configured in {tmp_path}/modules or seen in the "
               "event timeline)\n")
    quiet = run_cli("events", "app", "-c", config)          # configured, no event yet: not an error
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
    removed = run_cli("events", "gone", "-c", config)        # removed from the configuration: its past stays
    assert removed.returncode == 0 and removed.stdout.endswith("node1 gone command: stop by root\n")
    logs = run_cli("logs", "ap", "-c", config)
    assert (logs.returncode, logs.stderr) == (2, result.stderr)


def test_exit_codes_tell_config_errors_from_a_stopped_agent(tmp_path, config):
    stopped = run_cli("status", "-c", config)
    assert stopped.returncode == 4 and "agent not running" in stopped.stderr
    broken = run_cli("status", "-c", str(tmp_path / "missing.toml"))
    assert broken.returncode == 2 and broken.stderr.startswith(f"hamirror: {tmp_path}/missing.toml: cannot read")
    assert run_cli("status", "--no-such-option").returncode == 2
    unknown = run_cli("config", "check", "-c", write_cluster(tmp_path, {"timeout = 2.0": "timeout = 0.1"}))
    assert unknown.returncode == 2


@needs_root
def test_exit_codes_of_commands_sent_to_the_agent(tmp_path, config):
    answers = {"swap": {"ok": False, "state": "PRIM", "error": "the peer is not up to date"},
               "restart": None, "status": {"ok": True, "status": {"node": "node1", "modules": []}}}
    with Agent(str(tmp_path / "run"), answers):
        refused = run_cli("swap", "app", "-c", config)
        assert (refused.returncode, refused.stderr) == (1, "hamirror: swap app: the peer is not up to date\n")
        late = run_cli("restart", "app", "-c", config, "--timeout", "0.5")
        assert (late.returncode, late.stderr) == (5, "hamirror: no answer from the agent within 0.5 s\n")
        unknown = run_cli("status", "nope", "-c", config)
        assert (unknown.returncode, unknown.stderr) == (2, "hamirror: no module 'nope' on this node\n")


@needs_root
def test_an_unknown_module_is_a_usage_error_for_every_command_sent_to_the_agent(tmp_path, config):
    """Review (issue 15): `hamirror verify UNKNOWN` exited 1, as a refusal, not 2 as a typo does."""
    nope = {"ok": False, "unknown_module": True, "error": "no module 'nope' on this node (modules: app)"}
    with Agent(str(tmp_path / "run"), {"verify": nope, "swap": nope, "maintenance": nope}):
        for argv, prefix in ((["verify", "nope"], "verify nope: "), (["swap", "nope"], "swap nope: "),
                             (["maintenance", "on", "nope"], "")):
            result = run_cli(*argv, "-c", config)
            assert (result.returncode, result.stderr) == (
                2, f"hamirror: {prefix}no module 'nope' on this node (modules: app)\n"), argv


@needs_root
def test_json_on_the_commands_sent_to_the_agent(tmp_path, config):
    """Finding: only status, events and mirror status had --json; scripts parsed 'app: PRIM'."""
    answers = {"swap": {"ok": True, "state": "SECOND", "warnings": ["w"]},
               "stop": {"ok": False, "state": "PRIM", "error": "refused: maintenance"},
               "maintenance": {"ok": True, "state": "PRIM", "maintenance": True},
               "clear": {"ok": True, "state": "PRIM", "maintenance": False}}
    with Agent(str(tmp_path / "run"), answers):
        swap = run_cli("swap", "app", "--json", "-c", config)
        assert swap.returncode == 0 and swap.stderr == "warning: w\n"
        assert json.loads(swap.stdout) == {"module": "app", "action": "swap", "ok": True, "state": "SECOND",
                                           "error": None, "warnings": ["w"]}
        stop = run_cli("stop", "app", "--json", "-c", config)
        assert (stop.returncode, stop.stderr) == (1, "hamirror: stop app: refused: maintenance\n")
        assert json.loads(stop.stdout)["error"] == "refused: maintenance"
        on = run_cli("maintenance", "on", "app", "--json", "-c", config)
        assert json.loads(on.stdout) == {"module": "app", "state": "PRIM", "maintenance": True, "cleared": False}
        clear = run_cli("clear", "app", "--json", "-c", config)
        assert json.loads(clear.stdout) == {"module": "app", "state": "PRIM", "maintenance": False, "cleared": True}


def test_config_check_json(tmp_path, config):
    good = run_cli("config", "check", "--json", "-c", config)
    assert (good.returncode, good.stderr) == (0, "")
    assert json.loads(good.stdout) == {"ok": True, "cluster": "lab", "modules": ["app"], "errors": [],
                                       "warnings": [AVAILABILITY_FIRST.format(path=config)]}
    os.chmod(tmp_path / "cluster.key", 0o644)
    bad = run_cli("config", "check", "--json", "-c", config)
    problem = f"{tmp_path}/cluster.key: cluster key is accessible by other users (mode 0644); chmod 600 it"
    assert (bad.returncode, bad.stderr) == (2, "")
    assert json.loads(bad.stdout)["errors"] == [{"file": config, "key": "cluster.cluster_key_file",
                                                 "problem": problem,
                                                 "text": f"{config}: cluster.cluster_key_file: {problem}"}]


def test_module_check_json(tmp_path, config):
    folder = tmp_path / "modules" / "app"
    os.chmod(folder / "stop_prim", 0o644)
    result = run_cli("module", "check", "app", "--json", "-c", config)
    assert result.returncode == 2
    doc = json.loads(result.stdout)
    assert (doc["ok"], doc["module"], doc["folder"]) == (False, "app", str(folder))
    assert [e["text"] for e in doc["errors"]] == [
        f"{folder}/stop_prim: script is not executable (chmod +x {folder}/stop_prim)"]


def test_help_lists_json_on_every_command_that_reports():
    for command in (["config", "check"], ["module", "check"], ["status"], ["events"], ["verify"], ["swap"],
                    ["stop"], ["maintenance"], ["clear"], ["mirror", "status"]):
        assert "--json" in run_cli(*command, "--help").stdout, command


def test_a_global_config_is_the_commands_own(tmp_path, config):
    """``hamirror -c FILE COMMAND`` (issue 17: a global -c) reads the same file as ``COMMAND -c FILE``."""
    own = run_cli("config", "check", "-c", config)
    assert own.returncode == 0, own
    first = run_cli("-c", config, "config", "check")
    assert (first.returncode, first.stdout, first.stderr) == (own.returncode, own.stdout, own.stderr)
    assert run_cli("-c", config, "config", "check", "-c", config).returncode == 0
    other = str(tmp_path / "other.toml")
    twice = run_cli("-c", other, "config", "check", "-c", config)
    assert twice.returncode == 2
    assert f"hamirror: error: -c given twice with different files: {other} and {config}" in twice.stderr
    none = run_cli("-c", config, "keygen", "--keys", str(tmp_path / "k"))
    assert none.returncode == 2 and "hamirror: error: -c: 'keygen' reads no cluster file" in none.stderr
    assert not os.path.exists(tmp_path / "k")
