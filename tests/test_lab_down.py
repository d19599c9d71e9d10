"""``lab down`` removes everything of its lab even after a crash, from the names alone (needs root)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from hamirror.lab import mountns, netns, process
from hamirror.lab.naming import LabPaths
from hamirror.lab.testing import lab_cli, lab_command, leftovers, temporary_lab, unavailable

pytestmark = [pytest.mark.root, pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))]


@pytest.fixture
def root(tmp_path):
    """A lab root that is torn down after the test whatever the test did to it."""
    path = str(tmp_path / "lab")
    yield path
    lab_cli(path, "down")
    assert leftovers(path) == []


def _sleeper_pid(root: str, host: str) -> int:
    out = lab_cli(root, "exec", host, "--", "sh", "-c", "setsid sleep 600 >/dev/null 2>&1 </dev/null & echo $!").stdout
    return int(out.strip())


def test_down_works_without_lab_json_and_with_part_of_the_lab_gone(root):
    assert lab_cli(root, "up", "--no-agent").returncode == 0
    paths = LabPaths(root)
    sleepers = [_sleeper_pid(root, "node2"), _sleeper_pid(root, "client")]
    os.unlink(paths.state_file)
    netns.delete(paths.netns("client"))
    mountns.release(paths, "node1")

    result = lab_cli(root, "down")
    assert result.returncode == 0, result.stderr
    assert leftovers(root) == []
    assert not any(process.is_running(pid) for pid in sleepers)
    again = lab_cli(root, "down")
    assert again.returncode == 0 and "is down" in again.stdout


@pytest.mark.parametrize("delay", [0.05, 0.2, 0.4])
def test_down_cleans_a_lab_whose_up_was_killed_midway(root, delay):
    up = subprocess.Popen(lab_command(root, "up", "--no-agent"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    up.send_signal(signal.SIGKILL)
    up.wait()
    result = lab_cli(root, "down")
    assert result.returncode == 0, result.stderr
    assert leftovers(root) == []
    assert lab_cli(root, "up", "--no-agent").returncode == 0


def test_up_refuses_a_lab_that_is_up_and_down_spares_other_labs(root, tmp_path):
    first = lab_cli(root, "up", "--no-agent")
    assert first.returncode == 0, first.stderr   # failed once in CI under load (2026-12-05): why?
    twice = lab_cli(root, "up", "--no-agent")
    assert twice.returncode == 1 and "is up at" in twice.stderr and "lab down" in twice.stderr
    with temporary_lab(str(tmp_path / "other")) as other:
        assert lab_cli(root, "down").returncode == 0
        assert leftovers(root) == []
        assert sorted(n.split("-", 1)[1] for n in netns.lab_netns(other.paths)) == ["client", "node1", "node2", "switch"]
        assert other.probe("node1", "198.18.0.2") == "reachable"
