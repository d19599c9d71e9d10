"""Maintenance and the event timeline in the lab (root): maintenance typed on the primary reaches the
SECOND; a SECOND in maintenance does not take
over its power-killed primary, says why, and takes over once maintenance is off; the timeline
records the operator's commands and what was held back; ``hamirror logs`` shows the scripts."""

from __future__ import annotations

import json
import sys
import time

import pytest

from hamirror.lab.shell import LabError
from tests.agent_lab import LAB_MARKS, agents_lab, get, module, wait_for

pytestmark = LAB_MARKS


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    yield from agents_lab(tmp_path_factory, "maintlab")


def hamirror(lab, node: str, *args: str):
    return lab.exec(node, sys.executable, "-m", "hamirror", *args, timeout=60)


def health(lab) -> int | None:
    """The service's answer through the VIP; None when no node holds the VIP (no route)."""
    try:
        return get(lab, "/health")[0]
    except LabError:
        return None


def test_a_second_in_maintenance_does_not_take_over_until_maintenance_ends(lab):
    # Typed on the primary, the setting reaches the SECOND through the heartbeats.
    on = hamirror(lab, "node1", "maintenance", "on", "demo")
    assert on.returncode == 0 and on.stdout == "demo: PRIM, maintenance on\n", on.stderr
    wait_for(lab, "node2", lambda m: m["maintenance"] is True, what="maintenance adopted from node1")
    assert lab.cli("kill", "node1").returncode == 0
    held = wait_for(lab, "node2", lambda m: any("held back: peer lost: taking over" in w for w in m["warnings"]),
                    what="the takeover held back")
    time.sleep(3)                                            # past the heartbeat timeout, and more
    assert module(lab, "node2")["state"] == "SECOND" and held["peer_state"] is None
    assert health(lab) is None                               # nobody holds the VIP: the operator's choice

    off = hamirror(lab, "node2", "maintenance", "off", "demo")
    assert off.returncode == 0, off.stderr
    wait_for(lab, "node2", lambda m: m["state"] == "ALONE" and not m["busy"], what="ALONE after maintenance off")
    assert health(lab) == 200

    timeline = hamirror(lab, "node2", "events", "demo", "--json", "-n", "0")
    assert timeline.returncode == 0, timeline.stderr
    events = [json.loads(line) for line in timeline.stdout.splitlines()]
    kinds = [e["kind"] for e in events]
    for kind in ("maintenance", "command", "held", "takeover", "state"):
        assert kind in kinds, kinds
    assert kinds.index("maintenance") < kinds.index("held") < kinds.index("takeover")
    assert next(e for e in events if e["kind"] == "maintenance")["text"] == "maintenance on (set on node1)"
    command = next(e for e in events if e["kind"] == "command" and e["command"] == "maintenance off")
    assert command["caller"]["uid"] == 0 and command["caller"]["pid"] > 0
    logs = hamirror(lab, "node2", "logs", "demo")
    assert logs.returncode == 0 and "scripts.log <==" in logs.stdout and "start_prim" in logs.stdout, logs.stdout
