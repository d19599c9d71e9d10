"""Short seeded runs of the fault campaign (``scripts/chaos.py``, issue 7) against the real lab (root).

One trial each, in a fixed order (``--plan``; the delays come from the seed): a freeze of the
primary, a kill -9 of its mount daemon and a power loss (page cache dropped); then a power-kill
of the primary during a failback resync, a kill -9 of the secondary's receiver, a loss of the
heartbeats only and a lossy link. Every acknowledged write readable,
both copies equal and sound, PRIM + up-to-date SECOND within 60 s, never the VIP and the
application on both nodes. A few minutes at most.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hamirror.lab.testing import leftovers, unavailable
from tests.conftest import REPO

pytestmark = [pytest.mark.root, pytest.mark.slow,
              pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("plan", ["freeze,kill-mount,power-loss", "resync-kill,kill-receiver,hb-only,lossy"])
def test_short_seeded_campaign(tmp_path, plan):
    root, out = str(tmp_path / "lab"), str(tmp_path / "chaos.json")
    cmd = [sys.executable, os.path.join(REPO, "scripts", "chaos.py"), "--seed", "11", "--trials", "1",
           "--plan", plan, "--time-limit", "300", "--root", root, "--json", out]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=580)
    assert leftovers(root) == [], "the campaign left its lab behind"
    assert os.path.exists(out), f"no results (exit {result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    with open(out, encoding="utf-8") as f:
        doc = json.load(f)
    faults = [e["fault"] for e in doc["events"] if not e["skipped"]]
    assert faults == plan.split(","), doc["events"]
    assert doc["crashed"] is None, doc["crashed"]
    assert doc["samples"] > 0
    assert doc["violations"] == [], "\n".join(doc["violations"]) + "\n" + result.stdout[-3000:]
    assert result.returncode == 0, result.stdout[-3000:]


# --------------------------------------------------------------------------- issue 15's pieces

# The demo module's trial is the two seeded runs above (the same client, checks and comparison).
MODULE_PLANS = {"postgresql": "kill-mount", "mariadb": "kill-app"}


@pytest.mark.timeout(900)
@pytest.mark.parametrize("module", sorted(MODULE_PLANS))
def test_one_trial_per_module(tmp_path, module):
    """One trial per application: its own client and checks, the byte comparison, the sampler."""
    root, out = str(tmp_path / "lab"), str(tmp_path / "chaos.json")
    cmd = [sys.executable, os.path.join(REPO, "scripts", "chaos.py"), "--module", module, "--seed", "15",
           "--trials", "1", "--plan", MODULE_PLANS[module], "--time-limit", "300", "--root", root, "--json", out]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=880)
    assert leftovers(root) == [], "the campaign left its lab behind"
    assert os.path.exists(out), \
        f"no results (exit {result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    with open(out, encoding="utf-8") as f:
        doc = json.load(f)
    assert doc["module"] == module and doc["crashed"] is None, doc["crashed"]
    assert [e["fault"] for e in doc["events"] if not e["skipped"]] == MODULE_PLANS[module].split(",")
    trial = doc["trials"][0]
    assert trial["acknowledged"] > 0 and trial["lost"] == 0
    assert trial["byte_identical"] is True, trial.get("byte_differences")
    assert doc["violations"] == [], "\n".join(doc["violations"]) + "\n" + result.stdout[-3000:]
