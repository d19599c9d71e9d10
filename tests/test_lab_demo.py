"""``hamirror lab demo`` as a real process (root): it passes its checks, reports its figures and
leaves nothing of its lab behind."""

from __future__ import annotations

import re
import subprocess

import pytest

from hamirror.lab.testing import lab_cli, lab_command, leftovers, unavailable

pytestmark = [pytest.mark.root, pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))]


def test_demo_runs_the_tour_loses_nothing_and_cleans_up(tmp_path):
    root = str(tmp_path / "demo")
    try:
        result = subprocess.run(lab_command(root, "demo"), capture_output=True, text=True, timeout=300)
    finally:
        left = leftovers(root)
        if left:                                    # a crash or a timeout: clean up, then fail below
            lab_cli(root, "down")
    out = result.stdout
    assert result.returncode == 0, f"{out}\n{result.stderr}"
    assert not left, left
    assert re.search(r"acknowledged (\d+), readable \1, lost 0", out), out
    assert not re.search(r"lost [1-9]", out), out
    failover = re.search(r"failover \(kill -> first write acked\)\s+(\d+\.\d+) s", out)
    assert failover and 0 < float(failover.group(1)) < 30, out
    for figure in ("failback (boot -> SECOND up to date)", "swap interruption", "keys acknowledged / lost"):
        assert figure in out, out
    assert "All checks passed" in out and "Lab removed" in out


def test_demo_refuses_a_lab_that_is_already_up_and_leaves_it(tmp_path):
    root = str(tmp_path / "busy")
    up = lab_cli(root, "up", "--no-agent")
    try:
        assert up.returncode == 0, up.stderr
        result = lab_cli(root, "demo", timeout=60)
        assert result.returncode != 0
        assert "already up" in result.stderr
        assert leftovers(root), "the demo removed a lab it did not build"
    finally:
        lab_cli(root, "down")
    assert not leftovers(root)
