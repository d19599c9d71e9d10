"""The notify hook (issue 17, alerts): an operator's script per event, in order, never blocking the
agent, never killing it; its configuration checked like the rest."""

from __future__ import annotations

import json
import os
import time

from hamirror.agent.events import EventLog
from hamirror.agent.notify import QUEUE, Notifier
from hamirror.config.loader import check
from tests.configfiles import write_cluster, write_module


def script(tmp_path, body: str) -> str:
    path = tmp_path / "notify"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_each_event_reaches_the_script_in_order_with_its_fields(tmp_path):
    out = tmp_path / "out"
    hook = Notifier(script(tmp_path, f'echo "$HAMIRROR_SEQ $HAMIRROR_EVENT $HAMIRROR_MODULE $HAMIRROR_FROM '
                                     f'$HAMIRROR_TO|$(cat)" >> {out}\n'), base_env={})
    log = EventLog(str(tmp_path / "state"), "node1")
    log.listeners.append(hook)
    log.add("state", "SECOND -> ALONE (automatic)", module="db", **{"from": "SECOND", "to": "ALONE"})
    log.add("takeover", "peer lost: taking over", module="db")
    hook.close()
    lines = out.read_text().splitlines()
    assert [line.split("|")[0] for line in lines] == ["1 state db SECOND ALONE", "2 takeover db  "]
    first = json.loads(lines[0].split("|", 1)[1])
    assert (first["kind"], first["text"], first["node"]) == ("state", "SECOND -> ALONE (automatic)", "node1")
    assert (hook.sent, hook.failed, hook.dropped) == (2, 0, 0)


def test_only_the_kinds_asked_for_are_notified(tmp_path):
    out = tmp_path / "out"
    hook = Notifier(script(tmp_path, f'echo "$HAMIRROR_EVENT" >> {out}\n'), kinds=["takeover"], base_env={})
    for kind in ("state", "takeover", "resync-end"):
        hook({"kind": kind, "seq": 1})
    hook.close()
    assert out.read_text() == "takeover\n"


def test_a_slow_script_never_holds_the_agent_and_is_killed_and_counted(tmp_path):
    hook = Notifier(script(tmp_path, "sleep 30\n"), timeout=0.3, base_env={})
    began = time.monotonic()
    for seq in range(QUEUE + 5):                      # one runs, QUEUE wait, the rest are dropped
        hook({"kind": "state", "seq": seq})
    assert time.monotonic() - began < 1.0             # queued, not run, on the caller's thread
    wait_for(lambda: hook.failed >= 1)
    hook.close(timeout=0.5)                           # the backlog is dropped, not run for minutes
    assert not hook._thread.is_alive()
    assert hook.failed + hook.dropped + hook.sent == QUEUE + 5 - hook.queue.qsize() and hook.dropped >= 5


def test_a_failing_script_is_counted(tmp_path):
    hook = Notifier(script(tmp_path, "echo broken >&2; exit 3\n"), base_env={})
    hook({"kind": "state", "seq": 1})
    hook.close()
    assert (hook.sent, hook.failed) == (0, 1)


def test_an_exception_in_a_listener_does_not_stop_the_event_log(tmp_path):
    log = EventLog(str(tmp_path / "state"), "node1")
    log.listeners.append(lambda event: 1 / 0)
    event = log.add("agent", "agent started")
    assert log.read()[-1] == event and os.path.exists(log.path)


def test_config_check_names_a_bad_notify_section(tmp_path):
    write_module(tmp_path)
    (tmp_path / "keys").mkdir()
    config = write_cluster(tmp_path, {"[heartbeat]": '[notify]\nscript = "missing-hook"\nkinds = ["Bad Kind"]\n'
                                                     'timeout = 0\n\n[heartbeat]'})
    problems = [str(e) for e in check(config)]
    assert f"{config}: notify.script: {tmp_path}/missing-hook is not an executable file" in problems
    assert any(p.startswith(f"{config}: notify.kinds[0]:") for p in problems), problems
    assert any(p.startswith(f"{config}: notify.timeout:") for p in problems), problems


def test_the_agent_gives_its_events_to_the_configured_hook_and_reports_it(tmp_path):
    from hamirror.agent.runtime import Agent
    from hamirror.config import load_cluster, load_modules
    from tests.configfiles import write_secrets

    out = tmp_path / "out"
    hook = script(tmp_path, f'echo "$HAMIRROR_EVENT $HAMIRROR_TEXT" >> {out}\n')
    config = write_cluster(tmp_path, {"[heartbeat]": f'[notify]\nscript = "{hook}"\n\n[heartbeat]'})
    write_module(tmp_path)
    write_secrets(tmp_path)
    cluster = load_cluster(config)
    agent = Agent(cluster, load_modules(cluster))
    agent.events.add("agent", "agent started")
    agent.notifier.close()
    assert out.read_text() == "agent agent started\n"
    assert agent.status()["notify"] == {"script": hook, "sent": 1, "failed": 0, "dropped": 0}
