"""Fencing is between nodes (issue 15, finding 10): one fence script run serves every module, and in
a partition exactly one node fences at once while the other waits ``takeover_delay``, even when each
node runs the primary of a different module. The script is a real bash script; the delay's sleep
and the heartbeat clock are faked."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from hamirror.actions.fence import FenceStanding, NodeFence, fence_delay
from hamirror.config.loader import load_cluster
from tests.configfiles import CLUSTER


def cluster_on(tmp_path: Path, node: str, script: Path, delay: float = 7.0):
    text = CLUSTER.replace('node = "node1"', f'node = "{node}"')
    text += f'\n[fence]\nscript = "{script}"\ntakeover_delay = {delay}\n'
    path = tmp_path / f"{node}.toml"
    path.write_text(text)
    for sub in ("modules", "state", "run", "keys"):
        (tmp_path / sub).mkdir(exist_ok=True)
    (tmp_path / "cluster.key").write_bytes(b"k" * 32)
    return load_cluster(str(path))


@pytest.fixture()
def script(tmp_path: Path) -> Path:
    """A fence script that counts its runs and takes a moment, as a BMC does."""
    path = tmp_path / "fence.sh"
    path.write_text(f'#!/bin/bash\nsleep 0.3\necho "$HAMIRROR_NODE fences $1" >> {tmp_path}/runs\n')
    path.chmod(0o755)
    return path


def runs(tmp_path: Path) -> list[str]:
    path = tmp_path / "runs"
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.parametrize("local,peer,first,expected", [
    (1, 0, False, 0.0),      # the primary fences at once, wherever it is listed
    (0, 1, True, 5.0),       # the secondary waits
    (1, 1, True, 0.0),       # one primary each: the node listed first wins ...
    (1, 1, False, 5.0),      # ... and the other waits
    (0, 0, True, 0.0),
    (2, 1, False, 0.0),      # more primaries wins
])
def test_exactly_one_node_of_a_partition_fences_at_once(local, peer, first, expected):
    assert fence_delay(FenceStanding(local, peer), first, 5.0) == expected
    # The peer computes the mirror image: exactly one of the two waits.
    other = fence_delay(FenceStanding(peer, local), not first, 5.0)
    assert {expected, other} == {0.0, 5.0}


def test_one_primary_on_each_node_does_not_fence_both(tmp_path, script):
    """Module A primary on node1, B on node2, a partition: node2 waits the delay, node1 does not."""
    slept: dict[str, list[float]] = {"node1": [], "node2": []}
    fences = {}
    for node in ("node1", "node2"):
        fences[node] = NodeFence(cluster_on(tmp_path, node, script), lambda: FenceStanding(1, 1),
                                 lambda: 0.0, clock=lambda: 10.0, sleep=slept[node].append)
    assert fences["node1"].for_module("a").run(takeover=False).ok
    assert fences["node2"].for_module("b").run(takeover=False).ok
    assert slept == {"node1": [], "node2": [7.0]}


def test_one_fence_run_serves_every_module(tmp_path, script):
    fence = NodeFence(cluster_on(tmp_path, "node1", script), lambda: FenceStanding(1, 0), lambda: 5.0,
                      clock=lambda: 10.0)
    results = []
    threads = [threading.Thread(target=lambda m=m: results.append(fence.for_module(m).run(takeover=m == "b")))
               for m in ("a", "b", "c")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.ok for r in results] == [True, True, True]
    assert runs(tmp_path) == ["node1 fences node2"]
    assert sum(r.detail == "the peer was already fenced for another module" for r in results) == 2


def test_a_peer_heard_after_its_fence_is_fenced_again(tmp_path, script):
    heard = [5.0]
    now = [10.0]
    fence = NodeFence(cluster_on(tmp_path, "node1", script), lambda: FenceStanding(1, 0), lambda: heard[0],
                      clock=lambda: now[0])
    assert fence.for_module("a").run().ok
    heard[0], now[0] = 20.0, 30.0              # it rebooted and was heard; then lost again
    assert fence.for_module("a").run().ok
    assert runs(tmp_path) == ["node1 fences node2"] * 2


def test_a_failed_fence_is_not_remembered(tmp_path):
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/bin/bash\nexit 3\n")
    bad.chmod(0o755)
    fence = NodeFence(cluster_on(tmp_path, "node1", bad), lambda: FenceStanding(1, 0), lambda: 5.0,
                      clock=lambda: 10.0)
    assert not fence.for_module("a").run().ok
    assert not fence.fenced()
