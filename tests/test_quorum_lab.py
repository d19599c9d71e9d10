"""The witness in the lab (root): a partition between the nodes leaves node1 primary; node1 cut from
both node2 and the witness steps down and node2 takes over. Never two primaries at any poll.

One lab for the module, with ``--witness``; the tests run in file order.
"""

from __future__ import annotations

import os
import time

import pytest

from hamirror.lab import kvclient
from hamirror.lab.testing import temporary_lab, unavailable
from tests.agent_lab import get, status, tail

pytestmark = [pytest.mark.root, pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))]
PRIMARY = ("PRIM", "ALONE")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("quorumlab")
    with temporary_lab(str(root / "lab"), "--witness", agents=True) as lab:
        yield lab


def both(lab) -> tuple[dict | None, dict | None]:
    """(node1, node2) status documents, read one after the other."""
    return status(lab, "node1"), status(lab, "node2")


def demo(doc: dict | None) -> dict | None:
    return next((m for m in doc["modules"] if m["name"] == "demo"), None) if doc else None


def serving(m: dict) -> bool:
    """Primary and serving: not already on its way down (writes refused, VIP removed first)."""
    return m["state"] in PRIMARY and m["serving"]


def watch(lab, until, timeout: float, what: str) -> tuple[dict, dict]:
    """Poll both nodes until ``until(node1, node2)``; at every poll, at most one primary."""
    deadline = time.monotonic() + timeout
    last = (None, None)
    while time.monotonic() < deadline:
        d1, d2 = both(lab)
        m1, m2 = demo(d1), demo(d2)
        if m1 and m2:
            assert not (serving(m1) and serving(m2)), f"two primaries: {m1} {m2}"
            last = (d1, d2)
            if until(d1, d2):
                return d1, d2
        time.sleep(0.2)
    raise AssertionError(f"{what} not reached in {timeout:.0f} s; last {last}\nnode1:\n{tail(lab, 'node1')}\n"
                         f"node2:\n{tail(lab, 'node2')}")


def test_the_lab_starts_a_witness_and_node1_holds_the_lease(lab):
    assert lab.paths.log_file("witness", "witness")
    d1, d2 = watch(lab, lambda a, b: a["quorum"] is True, 20, "node1 holding the lease")
    assert d1["witness"]["holder"] == "node1" and d1["witness"]["witness"] == "198.18.0.254:7402"
    assert d2["quorum"] is False and d2["witness"]["seen"] == ["node1", "node2"]
    assert demo(d1)["state"] == "PRIM" and demo(d2)["state"] == "SECOND"


def test_a_partition_between_the_nodes_keeps_node1_primary(lab):
    assert lab.cli("partition", "node1", "node2").returncode == 0
    try:
        watch(lab, lambda a, b: demo(a)["state"] == "ALONE" and demo(b)["state"] == "WAIT"
              and not demo(a)["busy"] and not demo(b)["busy"], 30, "node1 ALONE, node2 WAIT")
        end = time.monotonic() + 12                   # longer than the lease (10 s): node2 still refused
        while time.monotonic() < end:
            d1, d2 = watch(lab, lambda a, b: True, 10, "status")
            assert demo(d2)["state"] == "WAIT" and d2["quorum"] is False and d1["quorum"] is True
        assert get(lab, "/health")[0] == 200          # the demo answers on node1 through the VIP
        assert "refuses" in tail(lab, "node2", 200)
    finally:
        assert lab.cli("heal").returncode == 0
    d1, d2 = watch(lab, lambda a, b: demo(a)["state"] == "PRIM" and demo(b)["state"] == "SECOND"
                   and demo(b)["uptodate"], 60, "PRIM/SECOND after heal")
    assert demo(d1)["relation"] != "diverged" and demo(d2)["relation"] != "diverged"
    assert get(lab, "/health")[0] == 200


def test_node1_cut_from_node2_and_the_witness_steps_down_and_node2_takes_over(lab):
    watch(lab, lambda a, b: a["quorum"] is True, 20, "node1 holding the lease")
    assert lab.cli("partition", "node1", "node2").returncode == 0
    assert lab.cli("partition", "node1", "witness").returncode == 0
    try:
        d1, d2 = watch(lab, lambda a, b: demo(a)["state"] == "WAIT" and demo(b)["state"] == "ALONE"
                       and not demo(a)["busy"] and not demo(b)["busy"], 40, "node1 WAIT, node2 ALONE")
        assert d2["quorum"] is True and d1["quorum"] is False
        assert get(lab, "/health")[0] == 200          # the demo now answers on node2
    finally:
        assert lab.cli("heal").returncode == 0
    # Fenced, node1's mount never went on alone: no history of its own, no split brain, no operator.
    d1, _ = watch(lab, lambda a, b: demo(a)["peer_state"] is not None, 30, "node1 hears node2")
    assert demo(d1)["relation"] != "diverged"
    watch(lab, lambda a, b: demo(b)["state"] == "PRIM" and demo(a)["state"] == "SECOND"
          and demo(a)["uptodate"], 60, "node2 PRIM, node1 SECOND after heal")


def test_a_primary_cut_from_the_witness_long_before_its_peer_acknowledges_nothing_alone(lab):
    """The known hole: the primary loses the witness first (its lease lapses while the peer is still
    heard), then the peer. It must not go on alone, even for a moment: every acknowledged key stays
    readable after node1 takes over, and the pair converges with no operator."""
    watch(lab, lambda a, b: demo(b)["state"] == "PRIM" and b["quorum"] is True, 30, "node2 primary with the lease")
    with kvclient.Writer(lab.paths, "wh") as writer:
        time.sleep(1)
        assert lab.cli("partition", "node2", "witness").returncode == 0
        try:
            watch(lab, lambda a, b: b["quorum"] is False, 30, "node2 without the lease")
            time.sleep(11)                               # longer than the lease: the witness forgot node2
            assert demo(status(lab, "node2"))["state"] == "PRIM"   # the peer is heard: still primary
            assert lab.cli("partition", "node1", "node2").returncode == 0
            watch(lab, lambda a, b: demo(a)["state"] == "ALONE" and demo(b)["state"] == "WAIT"
                  and not demo(a)["busy"] and not demo(b)["busy"], 60, "node1 ALONE, node2 WAIT")
        finally:
            assert lab.cli("heal").returncode == 0
        time.sleep(1)
        keys = writer.stop()
    assert len(keys) > 5 and not kvclient.unreadable(lab.paths, keys, budget=120)
    d1, _ = watch(lab, lambda a, b: demo(a)["state"] == "PRIM" and demo(b)["state"] == "SECOND"
                  and demo(b)["uptodate"], 60, "node1 PRIM, node2 SECOND after heal")
    assert demo(d1)["relation"] == "same"


def test_the_witness_down_then_the_peer_lost_the_primary_comes_back_with_the_witness(lab):
    """Finding 11: the witness machine stops, then the primary's peer loses power. The primary
    cannot tell that from being the isolated one: it steps down. It used to stay down for ever,
    even once the witness was back; the witness remembers (on disk) that node1 held the lease
    last, so node1 takes over again, and node2 returns as its SECOND."""
    import signal

    from hamirror.lab import agent, state
    from hamirror.lab.chaos_faults import pids_of

    d1, _ = watch(lab, lambda a, b: demo(a)["state"] == "PRIM" and demo(b)["state"] == "SECOND"
                  and a["quorum"] is True, 60, "node1 PRIM with the lease, node2 SECOND")
    for pid in pids_of(lab.paths, "witness"):
        os.kill(pid, signal.SIGKILL)
    assert lab.cli("kill", "node2").returncode == 0
    deadline = time.monotonic() + 40
    while demo(status(lab, "node1"))["state"] != "WAIT" or demo(status(lab, "node1"))["busy"]:
        assert time.monotonic() < deadline, f"node1 did not step down:\n{tail(lab, 'node1')}"
        time.sleep(0.3)
    recorded = state.load(lab.paths)
    recorded.processes.append(agent.start_witness(lab.paths))
    state.save(lab.paths, recorded)
    deadline = time.monotonic() + 60                  # the witness grants nothing for one lease (10 s)
    while not serving(demo(doc := status(lab, "node1"))):
        assert time.monotonic() < deadline, f"node1 not back: {doc}\n{tail(lab, 'node1', 40)}"
        time.sleep(0.3)
    assert demo(doc)["state"] == "ALONE" and doc["quorum"] is True
    assert "the witness grants the lease again" in tail(lab, "node1", 200)
    with kvclient.Writer(lab.paths, "wb") as writer:
        time.sleep(1.5)
        keys = writer.stop()
    assert len(keys) > 3 and not kvclient.unreadable(lab.paths, keys, budget=60)
    assert lab.cli("boot", "node2").returncode == 0
    watch(lab, lambda a, b: demo(a)["state"] == "PRIM" and demo(b)["state"] == "SECOND"
          and demo(b)["uptodate"], 90, "node1 PRIM, node2 SECOND after node2 booted")
