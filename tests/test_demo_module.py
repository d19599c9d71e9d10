"""The demo module folder: valid per the schema, and its scripts really start and stop the service."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from hamirror.config import load_cluster, load_modules, render_script
from tests.conftest import REPO, run_cli
from tests.configfiles import CLUSTER, edit, write_cluster, write_secrets
from tests.mirror_fixtures import wait_for
from tests.test_demo_kvserver import free_port, http_request

DEMO = os.path.join(REPO, "modules", "demo")


def test_demo_module_passes_config_check(tmp_path):
    path = write_cluster(tmp_path)
    shutil.copytree(DEMO, tmp_path / "modules" / "demo")
    write_secrets(tmp_path)
    result = run_cli("config", "check", "-c", path)
    assert (result.returncode, result.stdout) == (0, "OK: cluster lab, 1 module(s): demo\n")
    module = load_modules(load_cluster(path))[0]
    assert (module.default_primary, module.vip.address, module.vip.interface) == ("node1", "198.18.0.100/24", "eth0")
    assert [d.path for d in module.directories] == ["/srv/hamirror-demo"]
    assert [(c.type, c.port) for c in module.checkers] == [("tcp", 8080)]


@pytest.fixture
def loopback_demo(tmp_path):
    """The demo module moved to loopback: nodes 127.0.0.1/.2, VIP 127.0.0.100/8, data and port of its own."""
    data = tmp_path / "data"
    data.mkdir()
    port = free_port()
    path = write_cluster(tmp_path, text=edit(CLUSTER, {"198.18.0.1": "127.0.0.1", "198.18.0.2": "127.0.0.2"}))
    folder = tmp_path / "modules" / "demo"
    shutil.copytree(DEMO, folder)
    toml = folder / "module.toml"
    toml.write_text(edit(toml.read_text(), {"198.18.0.100/24": "127.0.0.100/8", "/srv/hamirror-demo": str(data),
                                            "port = 8080\nstop_timeout": f"port = {port}\nstop_timeout"}))
    cluster = load_cluster(path)
    module = load_modules(cluster)[0]
    yield cluster, module, port
    run_script(cluster, module, "stop_prim", "STOP")


def run_script(cluster, module, script: str, state: str) -> subprocess.CompletedProcess:
    text = render_script(module, cluster, script, state)
    return subprocess.run(["bash", "-c", text, script], capture_output=True, text=True, timeout=60)


def running(pid: int) -> bool:
    """Alive and not a zombie (this machine's init may be slow to reap orphans)."""
    try:
        with open(f"/proc/{pid}/stat") as stream:
            return stream.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def http(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    return http_request("127.0.0.100", port, method, path, body)


def test_start_prim_and_stop_prim_run_the_service_on_the_vip(loopback_demo):
    cluster, module, port = loopback_demo
    pidfile = os.path.join(cluster.module_run_dir("demo"), "kvserver.pid")
    started = run_script(cluster, module, "start_prim", "PRIM")
    assert started.returncode == 0, started.stdout + started.stderr
    assert "demo start_prim: running (pid" in started.stdout
    pid = int(open(pidfile).read())
    assert http(port, "PUT", "/kv/hello", b"world") == (200, b"ok\n")
    assert os.path.exists(os.path.join(module.directories[0].path, "kv.sqlite3"))

    again = run_script(cluster, module, "start_prim", "PRIM")
    assert again.returncode == 0 and f"already running (pid {pid})" in again.stdout

    stopped = run_script(cluster, module, "stop_prim", "STOP")
    assert stopped.returncode == 0 and f"stopped (pid {pid})" in stopped.stdout
    assert not os.path.exists(pidfile)
    assert not running(pid)
    assert "not running" in run_script(cluster, module, "stop_prim", "STOP").stdout

    assert run_script(cluster, module, "start_prim", "PRIM").returncode == 0
    assert http(port, "GET", "/kv/hello") == (200, b"world")


def test_stop_prim_kills_a_server_that_ignores_term(loopback_demo, tmp_path):
    cluster, module, _ = loopback_demo
    toml = os.path.join(module.folder, "module.toml")
    with open(toml) as stream:
        text = stream.read()
    with open(toml, "w") as stream:
        stream.write(text.replace("stop_timeout = 10", "stop_timeout = 1"))
    module = load_modules(cluster)[0]
    run_dir = cluster.module_run_dir("demo")
    os.makedirs(run_dir, exist_ok=True)
    # A stand-in named kvserver.py that ignores SIGTERM, as a hung server would.
    # It says when SIGTERM is ignored: a fixed pause was too short on a loaded machine (-15).
    stubborn = tmp_path / "kvserver.py"
    ready = tmp_path / "ignoring-term"
    stubborn.write_text("import pathlib, signal, sys, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                        "pathlib.Path(sys.argv[1]).touch()\ntime.sleep(60)\n")
    process = subprocess.Popen(["python3", str(stubborn), str(ready)])
    with open(os.path.join(run_dir, "kvserver.pid"), "w") as stream:
        stream.write(f"{process.pid}\n")
    wait_for(ready.exists, 30, what="the stand-in to ignore SIGTERM")
    began = time.monotonic()
    result = run_script(cluster, module, "stop_prim", "STOP")
    # The script polls until the process is gone; reap it meanwhile so it does not linger as a zombie.
    assert process.wait(timeout=10) == -9
    assert result.returncode == 0
    assert "still running after 1s: KILL" in result.stdout
    assert time.monotonic() - began < 10


def test_second_scripts_only_log(loopback_demo):
    cluster, module, _ = loopback_demo
    for script in ("start_second", "stop_second"):
        result = run_script(cluster, module, script, "SECOND")
        assert result.returncode == 0
        assert result.stdout.endswith(f"demo {script}: nothing to do (peer node2 serves the VIP)\n")
