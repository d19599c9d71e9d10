"""``hamirror config check`` as a real process."""

from __future__ import annotations

import os

from hamirror.cli.config import AVAILABILITY_FIRST
from tests.conftest import run_cli
from tests.configfiles import write_cluster, write_module, write_secrets


def test_check_ok_names_the_cluster_and_modules(tmp_path):
    path = write_cluster(tmp_path)
    write_module(tmp_path)
    write_module(tmp_path, "web", name="web", replace={"7410": "7411", "/srv/app": "/srv/web",
                                                       "198.18.0.100/24": "198.18.0.101/24"})
    write_secrets(tmp_path)
    result = run_cli("config", "check", "-c", path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "OK: cluster lab, 2 module(s): app, web\n",
                                                                 AVAILABILITY_FIRST.format(path=path) + "\n")


def test_check_warns_of_availability_first_only_without_witness_and_fence(tmp_path):
    path = write_cluster(tmp_path, {"timeout = 2.0\n": 'timeout = 2.0\n\n[quorum]\nwitness = "198.18.0.254:7402"\n'})
    write_secrets(tmp_path)
    result = run_cli("config", "check", "-c", path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "OK: cluster lab, 0 module(s)\n", "")


def test_check_without_modules(tmp_path):
    write_secrets(tmp_path)
    result = run_cli("config", "check", "-c", write_cluster(tmp_path))
    assert (result.returncode, result.stdout) == (0, "OK: cluster lab, 0 module(s)\n")


def test_check_prints_every_error_on_stderr_and_fails(tmp_path):
    path = write_cluster(tmp_path, {"timeout = 2.0": "timeout = 0.2"})
    write_module(tmp_path, replace={'interface = "eth0"': 'interface = ""'},
                 scripts={"stop_prim": None})
    write_secrets(tmp_path)
    result = run_cli("config", "check", "-c", path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{path}: heartbeat.timeout: must be a number greater than heartbeat.interval (0.3)",
        f"{tmp_path}/modules/app/module.toml: vip.interface: must not be empty",
        f"{tmp_path}/modules/app/stop_prim: script is missing",
    ]


def test_check_finds_the_file_through_the_environment(tmp_path):
    path = write_cluster(tmp_path, {'name = "lab"': 'name = "envlab"'})
    write_secrets(tmp_path)
    result = run_cli("config", "check", env={**os.environ, "HAMIRROR_CONFIG": path})
    assert (result.returncode, result.stdout) == (0, "OK: cluster envlab, 0 module(s)\n")


def test_check_help():
    result = run_cli("config", "check", "--help")
    assert result.returncode == 0
    assert "-c CONFIG, --config CONFIG" in result.stdout
