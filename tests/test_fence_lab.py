"""The fence hook for real (issue 7): ``lab up --fence`` gives each node a fence script that
power-kills the other (``lab kill``). A partition between the nodes: the primary fences its peer
first (the secondary waits ``takeover_delay``) and goes on alone, so there is never a second
primary and nothing acknowledged is lost. A power-killed primary: its peer fences it (already
dead) and takes over.
"""

from __future__ import annotations

import time

import pytest

from hamirror.lab import kvclient
from hamirror.lab.chaos_faults import pids_of
from hamirror.lab.chaos_watch import Sampler
from tests.agent_lab import LAB_MARKS, agents_lab, module, wait_for

pytestmark = LAB_MARKS


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    yield from agents_lab(tmp_path_factory, "fencehook", "--fence")


def fence_log(lab, node: str) -> str:
    result = lab.exec(node, "cat", "/var/lib/hamirror/modules/demo/fence.log")
    return result.stdout


def test_a_partition_ends_with_the_primary_fencing_its_peer(lab):
    sampler = Sampler(lab.paths)
    sampler.start()
    try:
        with kvclient.Writer(lab.paths, "fp") as writer:
            time.sleep(1.5)
            assert lab.cli("partition", "node1", "node2").returncode == 0
            try:
                wait_for(lab, "node1", lambda m: m["state"] == "ALONE" and not m["busy"], 30, what="ALONE")
                assert pids_of(lab.paths, "node2") == [], "node2 still runs: it was not fenced"
            finally:
                assert lab.cli("heal").returncode == 0
            time.sleep(1)
            keys = writer.stop()
    finally:
        sampler.stop()
    assert not [s for s in sampler.findings if s.dual], "two nodes served at once"
    assert "fence: exit 0" in fence_log(lab, "node1")
    bad = kvclient.unreadable(lab.paths, keys, budget=120)
    assert len(keys) > 5 and not bad
    assert lab.cli("boot", "node2").returncode == 0
    wait_for(lab, "node2", lambda m: m["state"] == "SECOND" and m["uptodate"], 90, what="node2 back as SECOND")
    wait_for(lab, "node1", lambda m: m["state"] == "PRIM", 30, what="node1 PRIM")


def test_a_power_killed_primary_is_fenced_then_taken_over(lab):
    with kvclient.Writer(lab.paths, "fk") as writer:
        time.sleep(1.5)
        assert lab.cli("kill", "node1").returncode == 0
        wait_for(lab, "node2", lambda m: m["state"] == "ALONE" and not m["busy"], 40, what="takeover")
        time.sleep(1)
        keys = writer.stop()
    assert "fence: exit 0" in fence_log(lab, "node2")
    assert not kvclient.unreadable(lab.paths, keys, budget=120)
    assert module(lab, "node2")["state"] == "ALONE"
    assert lab.cli("boot", "node1").returncode == 0
    wait_for(lab, "node1", lambda m: m["state"] == "SECOND" and m["uptodate"], 90, what="node1 back as SECOND")
