"""Lab pieces that need no namespaces: naming, generated config, readiness, mount parsing, state."""

from __future__ import annotations

import os
import re
import tomllib

import psutil
import pytest

from hamirror.lab import agent, control, mountns, nodeconfig, state
from hamirror.lab.naming import LabPaths, hosts_for, prefix_for, resolve_root
from hamirror.lab.shell import LabError
from hamirror.lab.state import LabState, Started


def test_prefix_is_stable_per_root_and_differs_between_roots(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert prefix_for(a) == prefix_for(a + "/")
    assert prefix_for(a) != prefix_for(b)
    assert re.fullmatch(r"hm[0-9a-f]{6}", prefix_for(a))
    assert LabPaths(a).netns("witness") == prefix_for(a) + "-witness"


def test_root_comes_from_option_then_environment_then_default(monkeypatch, tmp_path):
    monkeypatch.setenv("HAMIRROR_LAB", str(tmp_path / "env"))
    assert resolve_root(str(tmp_path / "opt")) == str(tmp_path / "opt")
    assert resolve_root(None) == str(tmp_path / "env")
    monkeypatch.delenv("HAMIRROR_LAB")
    assert resolve_root(None) == "/tmp/hamirror-lab"
    with pytest.raises(ValueError):
        resolve_root("/")


@pytest.mark.parametrize("witness", [False, True])
def test_cluster_file_follows_the_schema_and_names_the_node(witness):
    data = tomllib.loads(nodeconfig.cluster_toml("node2", witness))
    assert data["cluster"]["name"] == "lab" and data["cluster"]["node"] == "node2"
    assert [(n["name"], n["addresses"]) for n in data["nodes"]] == [("node1", ["198.18.0.1"]), ("node2", ["198.18.0.2"])]
    assert data["cluster"]["state_dir"] == "/var/lib/hamirror"
    assert ("quorum" in data) is witness
    if witness:
        assert data["quorum"]["witness"] == "198.18.0.254:7402"


def test_a_new_lab_runs_stream_and_a_0_2_0_configuration_has_no_link_table():
    """The lab's configurations are new ones: stream. ``lab up --link-engine none`` writes what
    0.2.0 reads (it refuses an unknown table): curve on both nodes (tests/test_upgrade_lab.py)."""
    from hamirror.link import session

    assert tomllib.loads(nodeconfig.cluster_toml("node1", False))["link"] == {"engine": "stream"}
    assert "link" not in tomllib.loads(nodeconfig.cluster_toml("node1", False, engine=None))
    assert nodeconfig.LINK_ENGINES == (session.CURVE, session.AEAD, session.STREAM)   # named, not imported


def test_cluster_file_with_etcd_names_the_three_members():
    data = tomllib.loads(nodeconfig.cluster_toml("node1", False, etcd=True))
    assert data["quorum"] == {"etcd": ["http://198.18.0.251:2379", "http://198.18.0.252:2379",
                                       "http://198.18.0.253:2379"]}
    assert hosts_for(False, etcd=True)[-3:] == ("etcd1", "etcd2", "etcd3")
    with_lease = tomllib.loads(nodeconfig.cluster_toml("node1", False, etcd=True, lease=4))
    assert with_lease["quorum"]["etcd_ttl"] == 4      # lab up --etcd --lease 4


def test_a_lease_needs_a_quorum(tmp_path):
    with pytest.raises(LabError, match="--lease needs a quorum: --witness or --etcd"):
        control.up(LabPaths(str(tmp_path)), ["demo"], lease=4)


def test_unknown_module_is_refused_with_its_path():
    with pytest.raises(LabError, match="no-such-module"):
        nodeconfig.module_source("no-such-module")


def _status(node, state_, uptodate=True, name="demo"):
    return {"node": node, "modules": [{"name": name, "state": state_, "peer_state": None, "uptodate": uptodate, "resync": None}]}


def test_ready_only_when_node1_prim_and_node2_second_up_to_date():
    assert agent.not_ready(_status("node1", "PRIM"), _status("node2", "SECOND"), ["demo"]) is None
    assert "PRIM" in agent.not_ready(_status("node1", "ALONE"), _status("node2", "SECOND"), ["demo"])
    assert "uptodate=False" in agent.not_ready(_status("node1", "PRIM"), _status("node2", "SECOND", False), ["demo"])
    assert "not reported" in agent.not_ready(None, _status("node2", "SECOND"), ["demo"])
    assert "not reported" in agent.not_ready(_status("node1", "PRIM", name="other"), _status("node2", "SECOND"), ["demo"])


def _me() -> Started:
    return Started("node1", "agent", os.getpid(), psutil.Process().create_time(), ["x"])


def test_wait_ready_returns_when_the_status_says_mirrored(tmp_path):
    answers = iter([None, _status("node1", "WAIT"), _status("node1", "PRIM")])
    current = {}

    def status(paths, node):
        if node == "node1":
            current["node1"] = next(answers)
        return current["node1"] if node == "node1" else _status("node2", "SECOND")

    agent.wait_ready(LabPaths(str(tmp_path)), [_me()], ["demo"], timeout=5, status=status, poll=0.01)
    assert current["node1"]["modules"][0]["state"] == "PRIM"


def test_wait_ready_times_out_with_the_reason_and_the_logs(tmp_path):
    paths = LabPaths(str(tmp_path))
    os.makedirs(os.path.dirname(paths.log_file("node1", "agent")))
    with open(paths.log_file("node1", "agent"), "w") as f:
        f.write("line one\nheartbeat lost\n")
    with pytest.raises(LabError) as err:
        agent.wait_ready(paths, [_me()], ["demo"], timeout=0.05, status=lambda p, n: None, poll=0.01)
    assert "not ready after" in str(err.value) and "heartbeat lost" in str(err.value)


def test_wait_ready_fails_at_once_when_an_agent_died(tmp_path):
    paths = LabPaths(str(tmp_path))
    dead = Started("node2", "agent", os.getpid(), 1.0, ["x"])  # same pid, other start time: not ours
    with pytest.raises(LabError, match="the agent on node2 exited"):
        agent.wait_ready(paths, [dead], ["demo"], timeout=30, status=lambda p, n: None, poll=0.01)


def test_mount_table_parsing_unescapes_paths():
    rows = mountns.parse_mounts("nsfs /tmp/a\\040b/ns/node1.mnt nsfs rw 0 0\n/dev/x / ext4 rw 0 0\n")
    assert rows == [("nsfs", "/tmp/a b/ns/node1.mnt", "nsfs"), ("/dev/x", "/", "ext4")]


def test_state_round_trips_and_an_unreadable_file_reads_as_none(tmp_path):
    paths = LabPaths(str(tmp_path))
    saved = LabState(root=paths.root, prefix=paths.prefix, witness=True, modules=["demo"], processes=[_me()])
    state.save(paths, saved)
    assert state.load(paths) == saved
    assert state.load(paths).hosts[-1] == "witness"
    with open(paths.state_file, "w") as f:
        f.write('{"root": ')
    assert state.load(paths) is None
