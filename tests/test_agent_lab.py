"""The agent end to end in the lab (root): cold start, reload, failover, failback, swap under a writer,
agent kill -9 without failover, a configuration difference between the nodes, forged and replayed
heartbeats, a stale node that refuses to lead.

One lab for the whole module; the tests run in file order and each leaves the cluster mirrored
(node1 or node2 primary, as it says) for the next, except the last one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from hamirror.agent import events
from hamirror.lab import agent as labagent
from tests.agent_lab import LAB_MARKS, agents_lab, get, link_engines, module, status, tail, wait_for, writing
from tests.reload_lab import reload_scenario

pytestmark = LAB_MARKS


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    yield from agents_lab(tmp_path_factory, "agentlab")


@pytest.fixture
def workdir(tmp_path):
    return str(tmp_path)


def assert_all_readable(lab, keys):
    code, body = get(lab, "/kv")
    assert code == 200
    missing = set(keys) - set(body.split())
    assert not missing, f"{len(missing)} acknowledged key(s) lost: {sorted(missing)[:10]}"


def test_cold_start_serves_through_the_vip(lab):
    assert module(lab, "node1")["state"] == "PRIM"
    second = module(lab, "node2")
    assert second["state"] == "SECOND" and second["uptodate"] is True
    assert get(lab, "/health")[0] == 200
    assert lab.exec("client", "curl", "-sf", "-X", "PUT", "--data", "v", "http://198.18.0.100:8080/kv/cold").returncode == 0
    assert get(lab, "/kv/cold") == (200, "v")
    # A new lab's configuration says [link] engine = "stream": its agents start the data path with it.
    assert link_engines(lab) == {"node1 mount": "stream", "node2 receive": "stream"}


def test_reload_adds_and_removes_a_module_without_touching_the_others_and_refuses_a_bad_configuration(lab):
    reload_scenario(lab)         # tests/reload_lab.py


def test_failover_keeps_every_acknowledged_key(lab, workdir):
    with writing(lab, "fo", workdir) as keys:
        time.sleep(2)
        assert lab.cli("kill", "node1").returncode == 0
        wait_for(lab, "node2", lambda m: m["state"] == "ALONE" and not m["busy"], what="ALONE")
        time.sleep(1)
    assert len(keys) > 5
    assert_all_readable(lab, keys)


def test_failback_resyncs_and_node1_rejoins_as_second(lab):
    announced = vip_announces(lab, "node2")
    assert lab.cli("boot", "node1").returncode == 0
    wait_for(lab, "node1", lambda m: m["state"] == "SECOND" and m["uptodate"], what="SECOND up to date")
    wait_for(lab, "node2", lambda m: m["state"] == "PRIM", what="PRIM")
    assert module(lab, "node1")["relation"] == "same"
    # node1 was power-killed while primary: its activity log made the failback incremental.
    assert (module(lab, "node2")["last_resync"] or {}).get("mode") == "incremental"
    # The peer came back: the primary announced its VIP again (clients may still have node1's MAC).
    assert vip_announces(lab, "node2") > announced


def vip_announces(lab, node: str) -> int:
    with open(lab.paths.log_file(node, "agent")) as f:
        return f.read().count("VIP 198.18.0.100/24 added")


def test_swap_both_ways_under_a_writer(lab, workdir):
    with writing(lab, "sw", workdir) as keys:
        time.sleep(1)
        result = lab.exec("node2", "hamirror", "swap", "demo", timeout=120)    # on the primary
        assert result.returncode == 0, result.stderr
        wait_for(lab, "node1", lambda m: m["state"] == "PRIM" and m["peer_state"] == "SECOND", what="PRIM")
        time.sleep(1)
        result = lab.exec("node2", "hamirror", "swap", "demo", timeout=120)    # on the secondary: a request
        assert result.returncode == 0, result.stderr
        wait_for(lab, "node2", lambda m: m["state"] == "PRIM" and m["peer_state"] == "SECOND", what="PRIM")
        wait_for(lab, "node1", lambda m: m["state"] == "SECOND" and m["uptodate"], what="SECOND")
        time.sleep(1)
    assert len(keys) > 5
    assert_all_readable(lab, keys)


def test_agent_kill_on_the_primary_is_not_a_failover(lab):
    run = lab.paths.node_dir("node2", "run")
    app_pid = open(os.path.join(run, "modules", "demo", "kvserver.pid")).read()
    takeovers = open(lab.paths.log_file("node1", "agent")).read().count("taking over")
    restart_agent(lab, "node2")                        # systemd would restart it the same way
    time.sleep(4)                                      # longer than the heartbeat timeout
    wait_for(lab, "node2", lambda m: m["state"] == "PRIM" and m["peer_state"] == "SECOND", what="PRIM again")
    assert module(lab, "node1")["state"] == "SECOND"
    assert open(os.path.join(run, "modules", "demo", "kvserver.pid")).read() == app_pid     # app kept running
    assert open(lab.paths.log_file("node1", "agent")).read().count("taking over") == takeovers
    assert "re-attached to the running mount as PRIM" in open(lab.paths.log_file("node2", "agent")).read()


def test_primary_agent_down_longer_than_the_heartbeat_timeout_is_not_a_failover(lab):
    """The agent alone is gone for 3x the heartbeat timeout; the mount keeps streaming
    keepalives, so the secondary knows the primary's server is alive and does not take over.
    The VIP is a lease the agent renews (one heartbeat timeout): with no agent it lapses, so no
    node answers on it meanwhile, and it is back as soon as the agent is (same application)."""
    primary = "node1" if module(lab, "node1")["state"] == "PRIM" else "node2"
    secondary = "node2" if primary == "node1" else "node1"
    run = lab.paths.node_dir(primary, "run")
    app_pid = open(os.path.join(run, "modules", "demo", "kvserver.pid")).read()
    agent_pid = int(open(os.path.join(run, "agent.pid")).read())
    os.kill(agent_pid, signal.SIGKILL)
    deadline = time.monotonic() + 6.0                  # heartbeat timeout is 2 s
    while time.monotonic() < deadline:
        assert module(lab, secondary)["state"] == "SECOND", tail(lab, secondary)
        time.sleep(0.3)
    assert "replication link is alive: not acting alone" in open(lab.paths.log_file(secondary, "agent")).read()
    assert "198.18.0.100" not in lab.sh(primary, "ip -o addr show")   # the lease lapsed: nobody serves
    labagent.start(lab.paths, primary)
    wait_for(lab, primary, lambda m: m["state"] == "PRIM" and m["peer_state"] == "SECOND", what="PRIM again")
    assert get(lab, "/health")[0] == 200               # the same application answers on the VIP again
    assert open(os.path.join(run, "modules", "demo", "kvserver.pid")).read() == app_pid


def restart_agent(lab, node: str) -> None:
    """SIGKILL the node's agent alone and start it again, as systemd would (data path untouched)."""
    agent_pid = int(open(os.path.join(lab.paths.node_dir(node, "run"), "agent.pid")).read())
    os.kill(agent_pid, signal.SIGKILL)
    while psutil.pid_exists(agent_pid) and psutil.Process(agent_pid).status() != psutil.STATUS_ZOMBIE:
        time.sleep(0.01)
    labagent.start(lab.paths, node)


def differs(entry: dict | None) -> object:
    return "no status" if entry is None else (entry.get("config") or {}).get("differs", "no entry")


def last_event(lab, node: str, kind: str) -> dict:
    found = [e for e in events.read(lab.paths.node_dir(node, "state"), module="demo") if e["kind"] == kind]
    assert found, f"{node}: no {kind} event"
    return found[-1]


def test_a_module_configuration_difference_shows_on_both_nodes_within_two_heartbeats(lab):
    """One node restarts with a checker's timeout changed in its copy of the module folder: both
    statuses (JSON and human) name the section, and each node's event says which heartbeat
    told it: the restarted node's first or second heartbeat for its peer, its first or second
    heard for itself. Restored the same way: the difference ends on both. (Each status call
    is a process in the node's namespaces: the test makes as few as it can.)"""
    primary = "node1" if module(lab, "node1")["state"] == "PRIM" else "node2"
    secondary = "node2" if primary == "node1" else "node1"
    toml = os.path.join(lab.paths.node_dir(secondary, "etc"), "modules", "demo", "module.toml")
    original = open(toml).read()
    assert original.count("timeout = 1.0") == 1                     # the checker's
    try:
        with open(toml, "w") as f:
            f.write(original.replace("timeout = 1.0", "timeout = 1.5"))
        restart_agent(lab, secondary)
        # Once the restarted agent answers, it has heard its peer (or is about to) and sent its
        # own heartbeats: the primary's status already shows it.
        wait_for(lab, secondary, lambda m: differs(m) == ["checkers"], timeout=30, what="the difference")
        human = lab.exec(primary, sys.executable, "-m", "hamirror", "status", timeout=20).stdout
        assert f"demo: warning: configuration differs from {secondary}'s: [checkers]" in human, human
        told_primary, told_secondary = last_event(lab, primary, "config-differs"), \
            last_event(lab, secondary, "config-differs")
        assert told_primary["peer_counter"] <= 2, told_primary        # the new boot's 1st or 2nd heartbeat
        assert told_secondary["heard"] <= 2, told_secondary           # its 1st or 2nd heard since start
    finally:
        with open(toml, "w") as f:
            f.write(original)
        restart_agent(lab, secondary)
    wait_for(lab, secondary, lambda m: differs(m) is None and m["state"] == "SECOND" and m["uptodate"],
             timeout=30, what="the same configuration, SECOND again")
    assert differs(module(lab, primary)) is None
    assert last_event(lab, primary, "config-same")["seq"] > told_primary["seq"]


SNIFF_AND_SEND = r"""
import socket, sys, time
# In the switch: capture one heartbeat frame node2 sent towards node1, then replay it and a forged
# copy (one body byte changed) towards node1, twice, after the real counter moved on.
cap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
cap.bind(("p-node2", 0)); cap.settimeout(5)
while True:
    frame = cap.recv(4096)
    if (frame[12:14] == b"\x08\x00" and frame[23] == 17 and frame[26:30] == socket.inet_aton("198.18.0.2")
            and int.from_bytes(frame[36:38], "big") == 7401):
        break
time.sleep(1)
out = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); out.bind(("p-node1", 0))
replay = bytearray(frame)
replay[40:42] = b"\x00\x00"       # no UDP checksum (optional in IPv4; the captured one may be offloaded)
forged = bytearray(replay); forged[-10] ^= 0x01
for _ in range(2):
    out.send(bytes(replay)); out.send(bytes(forged)); time.sleep(0.2)
print("sent")
"""


def test_forged_and_replayed_heartbeats_change_nothing(lab):
    before = module(lab, "node1")
    result = subprocess.run(["ip", "netns", "exec", lab.paths.netns("switch"), sys.executable, "-c", SNIFF_AND_SEND],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "sent" in result.stdout, result.stderr
    time.sleep(1)
    doc = status(lab, "node1")
    rejected = doc["peer"]["rejected"]
    assert rejected.get("replay", 0) >= 2 and rejected.get("bad_mac", 0) >= 2, rejected
    after = next(m for m in doc["modules"] if m["name"] == "demo")
    assert (after["state"], after["peer_state"]) == (before["state"], before["peer_state"]) == ("SECOND", "PRIM")


def test_a_node_booting_alone_waits_and_prim_forces_it(lab):
    # node1 (SECOND) dies, then node2 (primary) dies; node1 comes back alone: it may be stale.
    assert lab.cli("kill", "node1").returncode == 0
    wait_for(lab, "node2", lambda m: m["state"] == "ALONE" and not m["busy"], what="ALONE")
    assert lab.cli("kill", "node2").returncode == 0
    assert lab.cli("boot", "node1").returncode == 0
    time.sleep(5)                                        # well past the heartbeat timeout
    assert module(lab, "node1")["state"] == "WAIT"
    forced = lab.exec("node1", "hamirror", "prim", "demo", timeout=120)
    assert forced.returncode == 0, forced.stderr
    assert "may be lost" in forced.stderr
    wait_for(lab, "node1", lambda m: m["state"] == "ALONE" and not m["busy"], what="ALONE (forced)")
    assert get(lab, "/health")[0] == 200
