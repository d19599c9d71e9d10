"""``hamirror lab up --etcd`` (root): three etcd hosts run the nodes' quorum; one member killed,
the nodes go on with the other two; then a power-kill of the primary (every process of node1,
SIGKILL) and node2 takes over once etcd expires node1's key, every acknowledged write readable
there, with a newer fencing token."""

from __future__ import annotations

import os
import time

import pytest

from hamirror.lab import etcdlab, kvclient, measure
from hamirror.link import fencing
from tests.agent_lab import LAB_MARKS, agents_lab, status

pytestmark = LAB_MARKS + [pytest.mark.skipif(__import__("shutil").which("etcd") is None, reason="needs etcd")]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    yield from agents_lab(tmp_path_factory, "etcdlab", "--etcd")


def test_power_kill_of_the_primary_node2_takes_over_with_etcd(lab):
    d1 = status(lab, "node1")
    assert d1["quorum"] is True and d1["witness"]["holder"] == "node1" and d1["witness"]["token"] > 0
    assert d1["witness"]["etcd"] == "http://198.18.0.251:2379"
    # One etcd member down (the one both nodes talk to): they go on with the other two.
    assert lab.cli("kill", "etcd1").returncode == 0
    deadline = time.monotonic() + 15
    while not (d1["witness"]["etcd"] != "http://198.18.0.251:2379" and d1["quorum"] is True):
        assert time.monotonic() < deadline, f"node1 did not reach another etcd member: {d1['witness']}"
        time.sleep(0.3)
        d1 = status(lab, "node1")
    assert d1["witness"]["token"] is not None
    with kvclient.Writer(lab.paths, "etcd") as writer:
        writer.first_ack_after(time.monotonic(), 20)
        seconds = measure.failover(lab.paths, writer, "node1", "node2", timeout=40)
        keys = writer.keys()
    d2 = status(lab, "node2")
    assert d2["quorum"] is True and d2["witness"]["holder"] == "node2"
    assert d2["witness"]["token"] > d1["witness"]["token"]
    assert [m["state"] for m in d2["modules"]] == ["ALONE"]
    assert kvclient.missing(lab.paths, keys) == set()
    # The data path has the tenures' tokens: node1's stale mount would send its old one, and
    # node2's receiver, whenever it listens again, refuses it (test_fencing_token).
    assert _data_path_token(lab, "node1", fencing.TOKEN_FILE) == d1["witness"]["token"]
    assert _data_path_token(lab, "node2", fencing.TOKEN_FILE) == d2["witness"]["token"]
    assert _data_path_token(lab, "node2", fencing.FLOOR_FILE) == d2["witness"]["token"]
    # The killed member comes back and the cluster is whole again.
    assert lab.cli("boot", "etcd1").returncode == 0
    etcdlab.wait_healthy(lab.paths, 30)
    print(f"etcd: power-kill of the primary to the first acknowledged write: {seconds:.2f} s")


def _data_path_token(lab, node: str, name: str) -> int | None:
    """A fencing file of the demo module's directory on node (host path of its state)."""
    return fencing.read(os.path.join(lab.paths.node_dir(node, "state"), "modules", "demo", "0", name))
