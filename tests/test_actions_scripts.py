"""Module scripts for real: rendered, run with bash, output logged, failures and timeouts reported,
and a timeout kills the script's whole process group."""

from __future__ import annotations

import os
import time

import psutil

from hamirror.actions.scripts import run_text


def test_output_is_logged_and_success_reported(tmp_path):
    log = tmp_path / "m" / "scripts.log"
    result = run_text("start_prim", "echo hello from $HAMIRROR_STATE\n", str(log), 5.0,
                      env=dict(os.environ, HAMIRROR_STATE="ALONE"))
    assert result.ok and result.returncode == 0 and not result.timed_out
    text = log.read_text()
    assert "start_prim" in text and "hello from ALONE" in text and "exit 0" in text


def test_failure_is_reported_with_the_log_path(tmp_path):
    log = tmp_path / "scripts.log"
    result = run_text("stop_prim", "echo oops >&2\nexit 3\n", str(log), 5.0)
    assert not result.ok and result.returncode == 3
    assert str(log) in result.detail and "oops" in log.read_text()


def test_timeout_kills_the_whole_process_group(tmp_path):
    log = tmp_path / "scripts.log"
    marker = tmp_path / "child.pid"
    script = f"sleep 300 & echo $! > {marker}\nwait\n"
    start = time.monotonic()
    result = run_text("start_prim", script, str(log), 1.0)
    assert not result.ok and result.timed_out and time.monotonic() - start < 10
    child = int(marker.read_text())
    deadline = time.monotonic() + 5
    while psutil.pid_exists(child) and psutil.Process(child).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the script's child survived the timeout"
        time.sleep(0.05)
    assert "timeout" in log.read_text()


def test_script_runner_renders_the_module_template(tmp_path):
    from hamirror.actions.scripts import ScriptRunner
    from hamirror.config import load_cluster, load_modules
    from tests.configfiles import write_cluster, write_module

    path = write_cluster(tmp_path)
    write_module(tmp_path)
    cluster = load_cluster(path)
    module = load_modules(cluster)[0]
    result = ScriptRunner(module, cluster).run("start_prim", "ALONE")
    assert result.ok
    log = os.path.join(cluster.module_state_dir("app"), "scripts.log")
    assert "app node1 ALONE 8080" in open(log).read()
