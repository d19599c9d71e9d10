"""The cost script runs, reports every case and leaves no scratch journal behind."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

# A benchmark script, timed: alone, after the parallel step (scripts/test.sh).
pytestmark = pytest.mark.serial


def test_bench_reports_every_case(tmp_path):
    out = subprocess.run([sys.executable, "-m", "hamirror.journal.bench", "--dir", str(tmp_path),
                          "--calls", "16"], capture_output=True, text=True, cwd=REPO, timeout=120,
                         check=True).stdout
    print(out)                      # the figures, visible with pytest -s
    lines = out.splitlines()
    assert [line.split("  ")[0] for line in lines] == [
        "record_paths new path", "record_paths known path", "record_range new block",
        "record_range known block", "set_state", "record_paths new path, 8 threads"]
    assert all(float(line.split()[-2]) > 0 for line in lines)
    assert os.listdir(tmp_path) == []
