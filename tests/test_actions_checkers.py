"""Checkers for real on this machine: processes, TCP on loopback, interfaces, scripts."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys

from hamirror.actions.checkers import InterfaceChecker, ProcessChecker, ScriptChecker, TcpChecker
from hamirror.agent.checks import CheckerState


def test_tcp_checker_on_loopback():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert TcpChecker("t", "127.0.0.1", port, timeout=1.0).check() is None
    assert "cannot connect" in TcpChecker("t", "127.0.0.1", port, timeout=1.0).check()


def test_process_checker_finds_a_process_by_command_line():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)  # hm-checker-marker"])
    try:
        assert ProcessChecker("p", cmdline_contains="hm-checker-marker").check() is None
    finally:
        proc.kill()
        proc.wait()
    assert "no process" in ProcessChecker("p", cmdline_contains="hm-checker-marker").check()
    assert ProcessChecker("p", process="no-such-process-name").check() is not None


def test_interface_checker():
    assert InterfaceChecker("i", "lo").check() is None
    assert "does not exist" in InterfaceChecker("i", "nope0").check()


def test_script_checker_exit_status_and_timeout(tmp_path):
    good, bad, slow = tmp_path / "good", tmp_path / "bad", tmp_path / "slow"
    for path, body in ((good, "exit 0"), (bad, "exit 2"), (slow, "sleep 30")):
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
    assert ScriptChecker("s", str(good)).check() is None
    assert "exited 2" in ScriptChecker("s", str(bad)).check()
    assert "did not answer" in ScriptChecker("s", str(slow), timeout=0.5).check()


def test_checker_state_records_the_first_failure_and_resets():
    now = [0.0]
    state = CheckerState("m", [InterfaceChecker("i", "nope0", interval=1.0)], clock=lambda: now[0])
    asyncio.run(state.run_due())
    assert state.ok                      # not due yet: one interval of grace after a (re)start
    now[0] = 1.0
    asyncio.run(state.run_due())
    assert not state.ok and "nope0" in state.failure
    state.reset()
    assert state.ok
