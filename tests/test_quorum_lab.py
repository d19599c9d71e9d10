"""The witness in the lab (root): a partition between the nodes leaves node1 primary; node1 cut from
both node2 and the witness steps down and node2 takes over. Never two primaries at any poll.

One lab for the module, with ``--witness``; the tests run in file order.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from hamirror.lab import kvclient
from hamirror.lab.chaos_faults import pids_of, resume
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


ONE_WAY = "hamirror_oneway"


def drop_one_way(lab, sender: str, receiver: str, what: str = "") -> None:
    """Nothing from ``sender`` reaches ``receiver`` (``what``: only that, e.g. ``meta l4proto tcp``);
    the other way still works. A table of its own in the sender's namespace (a second call
    replaces the first), removed by :func:`heal_one_way`."""
    from hamirror.lab.naming import ADDRESSES

    rules = (f"table inet {ONE_WAY} {{\n  chain output {{ type filter hook output priority 0; policy accept; }}\n}}\n"
             f"flush table inet {ONE_WAY}\n"
             f"add rule inet {ONE_WAY} output ip daddr {ADDRESSES[receiver]} {what} drop\n")
    subprocess.run(["nsenter", f"--net={lab.paths.netns_file(sender)}", "--", "nft", "-f", "-"], input=rules,
                   text=True, check=True)


def heal_one_way(lab, sender: str) -> None:
    subprocess.run(["nsenter", f"--net={lab.paths.netns_file(sender)}", "--", "nft", "delete", "table", "inet",
                    ONE_WAY], check=True)


def mirrored(lab) -> tuple[str, str]:
    """Wait for PRIM (holding the lease, serving) + SECOND, both up to date: (primary, secondary)."""
    d1, _ = watch(lab, lambda a, b: any(serving(demo(d)) and d["quorum"] is True for d in (a, b))
                  and {demo(a)["state"], demo(b)["state"]} == {"PRIM", "SECOND"}
                  and demo(a)["uptodate"] and demo(b)["uptodate"], 90, "PRIM with the lease and SECOND")
    return ("node1", "node2") if demo(d1)["state"] == "PRIM" else ("node2", "node1")


@pytest.mark.parametrize("lost", ["primary", "secondary"])
def test_a_one_way_loss_lets_the_primary_go_on_alone_and_the_pair_converges(lab, lost):
    """Finding 7: nothing from the primary reaches the SECOND, the other way flows. The SECOND
    hears nothing, the witness refuses it and says the primary holds the lease: it marks its copy
    stale, the primary hears that and goes on alone. The replication stream (TCP) is lost 1.5 s
    before the heartbeats, so the primary's mount fences (peer_timeout, 3 s) before the SECOND
    leaves (as in the campaign, under load; cut at once, the primary usually sees the SECOND
    leave first and goes on alone by the PRIM rule). It used to keep its up-to-date flag: the
    fenced primary waited out the 60 s block_timeout, then stepped down. Writes through the VIP
    resume within 20 s; after the heal: PRIM + SECOND up to date, every acknowledged key
    readable, never both serving. The other way (nothing from the SECOND reaches the primary):
    the primary hears nothing, holds the lease and goes on alone; the SECOND sees its blocked
    writes in its heartbeats, or the primary ALONE on a newer generation, and marks itself stale."""
    primary, secondary = mirrored(lab)
    sender, receiver = (primary, secondary) if lost == "primary" else (secondary, primary)
    with kvclient.Writer(lab.paths, f"ow{lost[0]}") as writer:
        writer.first_ack_after(time.monotonic(), 20)
        cut = time.monotonic()
        drop_one_way(lab, sender, receiver, "meta l4proto tcp")
        try:
            time.sleep(1.5)
            drop_one_way(lab, sender, receiver)
            resumed = writer.first_ack_after(cut + 3.5, 70)     # past the link's peer_timeout (3 s)
            assert resumed.done - cut < 20, f"writes resumed {resumed.done - cut:.1f} s after the cut"
            end = time.monotonic() + 12                          # longer than the lease: still one primary
            while time.monotonic() < end:
                docs = watch(lab, lambda a, b: True, 10, "status")
                states = {d["node"]: demo(d)["state"] for d in docs}
                assert states[primary] == "ALONE" and states[secondary] == "WAIT", states
            gap = writer.largest_gap(cut, time.monotonic())
            assert gap < 20, f"writes stopped for {gap:.1f} s"
            # Why the SECOND marked its copy stale. The other way, either the primary's blocked
            # writes in a heartbeat, or (when its fence was granted before a heartbeat showed
            # it, as on the stream link) the primary ALONE on a newer generation.
            said = ("the witness refuses this node and hears the primary",) if lost == "primary" else \
                ("the primary lost its replication link to this node", "(peer ALONE, relation peer_newer")
            log = tail(lab, secondary, 200)
            assert any(reason in log for reason in said), log[-2000:]
        finally:
            heal_one_way(lab, sender)
        watch(lab, lambda a, b: {demo(a)["state"], demo(b)["state"]} == {"PRIM", "SECOND"}
              and demo(a)["uptodate"] and demo(b)["uptodate"], 90, "PRIM + SECOND up to date after the heal")
        time.sleep(1)
        keys = writer.stop()
    assert len(keys) > 10 and not kvclient.unreadable(lab.paths, keys, budget=120)
    roles = {d["node"]: demo(d)["state"] for d in both(lab)}
    assert roles[primary] == "PRIM" and roles[secondary] == "SECOND", roles
    print(f"one-way loss from the {lost}: first write acknowledged {resumed.done - cut:.1f} s after the cut "
          f"(requests sent 3.5 s after it or later), longest gap without an acknowledgement {gap:.1f} s")


def test_a_power_loss_of_the_primary_with_a_witness_ends_in_a_takeover(lab):
    """The case a stale-marking SECOND must not break (finding 7's fix): the primary loses power
    (every process killed: its replication connection closes at once). Its lease lapses at the
    witness and the SECOND takes over with its copy up to date: every acknowledged key readable
    through the VIP; the booted node returns as SECOND."""
    primary, secondary = mirrored(lab)
    with kvclient.Writer(lab.paths, "pk") as writer:
        writer.first_ack_after(time.monotonic(), 20)
        log = lab.paths.log_file(secondary, "agent")
        offset = os.path.getsize(log)
        assert lab.cli("kill", primary).returncode == 0
        killed = time.monotonic()
        resumed = writer.first_ack_after(killed, 60)
        doc = status(lab, secondary)
        assert demo(doc)["state"] == "ALONE" and doc["quorum"] is True, doc
        with open(log) as stream:
            stream.seek(offset)
            assert "marking this copy stale" not in stream.read()
        time.sleep(1)
        keys = writer.stop()
    assert not kvclient.unreadable(lab.paths, keys, budget=120)
    assert lab.cli("boot", primary).returncode == 0
    watch(lab, lambda a, b: {demo(a)["state"], demo(b)["state"]} == {"PRIM", "SECOND"}
          and demo(a)["uptodate"] and demo(b)["uptodate"], 120, "PRIM + SECOND after the boot")
    print(f"power loss of the primary with a witness: first write acknowledged {resumed.done - killed:.1f} s after")


def test_a_secondary_frozen_while_the_primary_went_on_alone_never_takes_over_without_its_writes(lab):
    """The double fault: the SECOND freezes, the primary goes on alone (it holds the lease) and
    acknowledges writes, then loses power while the SECOND is still frozen (12 s more). It thaws with
    its copy up to date by its own reckoning and, a lease later, the lease free: it must not take
    over, since the witness marked its copy outdated before the primary acknowledged anything
    alone. Once the primary boots, the pair converges with every acknowledged key, and the mark
    goes. (Before the marks it stayed out too, by another rule: a thawed node claims nothing
    until it has listened, so its first verdict is a refusal and it leaves for WAIT, where it is
    not vouched; but with its flag still up to date and no word of why. The window the marks
    close is the SECOND's first decision coming with a grant: tests/test_agent_stall.py.)"""
    primary, secondary = mirrored(lab)
    with kvclient.Writer(lab.paths, "df") as writer:
        writer.first_ack_after(time.monotonic(), 20)
        frozen = pids_of(lab.paths, secondary)
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        try:
            deadline = time.monotonic() + 60
            while demo(status(lab, primary) or {"modules": []}) is None \
                    or demo(status(lab, primary))["state"] != "ALONE":
                assert time.monotonic() < deadline, f"{primary} not ALONE:\n{tail(lab, primary)}"
                time.sleep(0.3)
            doc = status(lab, primary)
            assert doc["witness"]["outdated"] == {"demo": secondary}, doc["witness"]
            writer.first_ack_after(time.monotonic(), 30)
            time.sleep(2)                                   # more writes acknowledged alone
            assert lab.cli("kill", primary).returncode == 0
            keys = writer.stop()
            # Frozen past the heartbeats' skew window (10 s): the primary's last heartbeats, still
            # in the frozen node's socket, would tell it the primary went on alone; once too old
            # they are refused, and nothing but the witness can tell it.
            time.sleep(12)
        finally:
            resume(frozen)
    end = time.monotonic() + 25                             # the lease (10 s) lapses meanwhile
    while time.monotonic() < end:
        m = demo(status(lab, secondary))
        assert m is None or m["state"] not in PRIMARY, f"{secondary} took over:\n{tail(lab, secondary)}"
        time.sleep(0.5)
    doc = status(lab, secondary)
    assert demo(doc)["state"] == "WAIT" and not demo(doc)["uptodate"], demo(doc)
    assert doc["witness"]["outdated"] == {"demo": secondary}
    assert "the witness marks this copy outdated" in tail(lab, secondary, 400)
    assert lab.cli("boot", primary).returncode == 0
    watch(lab, lambda a, b: {a["node"]: demo(a)["state"], b["node"]: demo(b)["state"]}
          == {primary: "PRIM", secondary: "SECOND"} and demo(a)["uptodate"] and demo(b)["uptodate"],
          120, f"{primary} PRIM and {secondary} SECOND after the boot")
    assert len(keys) > 10 and not kvclient.unreadable(lab.paths, keys, budget=120)
    watch(lab, lambda a, b: a["witness"]["outdated"] == {} and b["witness"]["outdated"] == {}, 30,
          "the mark cleared once both copies are equal")


def test_a_secondary_restarts_its_receiver_at_once_once_the_restarted_primary_agent_is_heard(lab):
    """Campaigns 4208 and 4209: the primary's agent killed and started again 3 s later. Meanwhile the
    secondary, not hearing it, claimed the lease, was refused by the primary's lease gone quiet, and
    waited for it to lapse (10 s) with its agent's tick, though it heard the primary again a moment
    later: its receiver, killed then, came back 3-6 s late. The wait ends once the peer is heard."""
    from hamirror.lab import agent as labagent

    primary, secondary = mirrored(lab)
    agent_pid = int(open(os.path.join(lab.paths.node_dir(primary, "run"), "agent.pid")).read())
    os.kill(agent_pid, signal.SIGKILL)
    time.sleep(3.0)                                         # past the heartbeat timeout (2 s): the secondary claims
    labagent.start(lab.paths, primary)
    time.sleep(1.5)                                         # the primary's agent heard again
    [receiver] = pids_of(lab.paths, secondary, "receiver")
    os.kill(receiver, signal.SIGKILL)
    killed = time.monotonic()
    while not [pid for pid in pids_of(lab.paths, secondary, "receiver") if pid != receiver]:
        assert time.monotonic() - killed < 20, f"no receiver on {secondary}:\n{tail(lab, secondary)}"
        time.sleep(0.05)
    took = time.monotonic() - killed
    assert took < 2.5, f"the receiver came back {took:.1f} s after the kill:\n{tail(lab, secondary)}"
    watch(lab, lambda a, b: {a["node"]: demo(a)["state"], b["node"]: demo(b)["state"]}
          == {primary: "PRIM", secondary: "SECOND"} and demo(a)["uptodate"] and demo(b)["uptodate"],
          60, "PRIM + SECOND again")


def hamirror(lab, node: str, *args: str) -> subprocess.CompletedProcess:
    return lab.exec(node, sys.executable, "-m", "hamirror", *args, timeout=120)


def test_a_partition_while_both_wait_leaves_the_newer_copy_current(lab):
    """The simulation's first finding (tests/test_cluster_sim_sequences.py), on real nodes. The
    primary loses power and the secondary takes over alone: its copy is the newest from then on.
    The operator stops it; the failed node boots; the pair is cut; the failed node, not hearing
    its peer, claims the free lease and holds it; the operator starts the survivor again: WAIT,
    up to date, told by the witness that its unheard peer holds the lease. It used to clear its
    flag on that word, and after the heal both copies were stale: WAIT + WAIT for an operator's
    `prim`. It keeps its flag, and leads once it hears its peer again."""
    from hamirror.lab import agent as labagent

    primary, secondary = mirrored(lab)
    assert lab.cli("kill", primary).returncode == 0
    deadline = time.monotonic() + 60
    while (demo(status(lab, secondary)) or {}).get("state") != "ALONE":
        assert time.monotonic() < deadline, f"{secondary} did not take over:\n{tail(lab, secondary)}"
        time.sleep(0.3)
    assert hamirror(lab, secondary, "stop", "demo").returncode == 0
    assert lab.cli("boot", primary).returncode == 0
    watch(lab, lambda a, b: {a["node"]: demo(a)["state"], b["node"]: demo(b)["state"]}
          == {primary: "WAIT", secondary: "STOP"}, 60, f"{primary} WAIT beside {secondary} STOP")
    # The survivor's agent down for a moment (a node that does not hear its peer claims the lease,
    # whatever its modules do): the booted node, alone to ask, holds it.
    os.kill(int(open(os.path.join(lab.paths.node_dir(secondary, "run"), "agent.pid")).read()), signal.SIGKILL)
    assert lab.cli("partition", primary, secondary).returncode == 0
    try:
        deadline = time.monotonic() + 40
        while (status(lab, primary) or {}).get("quorum") is not True:
            assert time.monotonic() < deadline, f"{primary} never held the lease:\n{tail(lab, primary)}"
            time.sleep(0.3)
        labagent.start(lab.paths, secondary)
        deadline = time.monotonic() + 30
        while demo(status(lab, secondary)) is None:
            assert time.monotonic() < deadline, f"{secondary}'s agent not back:\n{tail(lab, secondary)}"
            time.sleep(0.3)
        assert hamirror(lab, secondary, "start", "demo").returncode == 0
        time.sleep(8)                                       # listened, claimed, refused: the holder is alive
        doc = status(lab, secondary)
        assert doc["witness"]["holder"] == primary and demo(doc)["state"] == "WAIT", doc["witness"]
        assert demo(doc)["uptodate"], f"{secondary} cleared its flag:\n{tail(lab, secondary)}"
    finally:
        assert lab.cli("heal").returncode == 0
    watch(lab, lambda a, b: {a["node"]: demo(a)["state"], b["node"]: demo(b)["state"]}
          == {primary: "SECOND", secondary: "PRIM"} and demo(a)["uptodate"] and demo(b)["uptodate"],
          90, f"{secondary} PRIM with the newest copy, {primary} SECOND")


def test_a_stopped_node_never_takes_the_lease_from_a_primary_whose_agent_restarts(lab):
    """A node whose modules are all stopped can do nothing with the lease; it used to claim it
    whenever it did not hear its peer. The secondary is stopped, the pair is cut, and the
    primary's agent is down for longer than the lease (a restart, an upgrade): the stopped node,
    alone to ask, took the lapsed lease, and the primary's agent, back, was refused and stepped
    down: nothing served until the heal. It does not claim: the primary's agent, back, holds the
    lease again and the demo stays up."""
    from hamirror.lab import agent as labagent

    primary, secondary = mirrored(lab)
    assert hamirror(lab, secondary, "stop", "demo").returncode == 0
    watch(lab, lambda a, b: {a["node"]: demo(a)["state"], b["node"]: demo(b)["state"]}
          == {primary: "ALONE", secondary: "STOP"} and not demo(a)["busy"] and not demo(b)["busy"],
          60, f"{primary} ALONE beside {secondary} STOP")
    assert lab.cli("partition", primary, secondary).returncode == 0
    try:
        os.kill(int(open(os.path.join(lab.paths.node_dir(primary, "run"), "agent.pid")).read()), signal.SIGKILL)
        time.sleep(14)                                      # the lease (10 s) lapses unrenewed
        assert status(lab, secondary)["witness"]["holder"] is None, status(lab, secondary)["witness"]
        labagent.start(lab.paths, primary)
        end = time.monotonic() + 15
        while time.monotonic() < end:
            doc = status(lab, primary)
            m = demo(doc)
            if m is not None and doc.get("quorum") is True:
                assert m["state"] == "ALONE" and m["serving"], m
            time.sleep(0.3)
        doc = status(lab, primary)
        assert doc["quorum"] is True and demo(doc)["state"] == "ALONE" and demo(doc)["serving"], \
            f"{primary} lost the lease:\n{tail(lab, primary)}"
        assert get(lab, "/health")[0] == 200
        assert status(lab, secondary)["witness"]["holder"] == primary
    finally:
        assert lab.cli("heal").returncode == 0
    assert hamirror(lab, secondary, "start", "demo").returncode == 0
    mirrored(lab)


def test_a_stopped_primary_yields_and_its_secondary_takes_over_beside_it(lab):
    """The handshake (docs/cluster.md): the secondary acts alone beside a heard, up-to-date peer
    only once that peer has recorded durably that it may (``peer_led``: never vouched for since)
    or the witness marks it. The operator stops the primary: its agent, still heard, records it,
    and the secondary takes over with no wait beyond a heartbeat or two; started again, the old
    primary is SECOND and its record is cleared (it may be vouched for again)."""
    primary, secondary = mirrored(lab)
    record = os.path.join(lab.paths.node_dir(primary, "state"), "modules", "demo", "agent.json")
    assert hamirror(lab, primary, "stop", "demo").returncode == 0
    started = time.monotonic()
    watch(lab, lambda a, b: {a["node"]: demo(a)["state"], b["node"]: demo(b)["state"]}
          == {primary: "STOP", secondary: "ALONE"} and serving(demo(a) if a["node"] == secondary else demo(b)),
          60, f"{secondary} ALONE beside {primary} STOP")
    took = time.monotonic() - started
    assert json.load(open(record))["peer_led"] is True
    assert hamirror(lab, primary, "start", "demo").returncode == 0
    watch(lab, lambda a, b: {a["node"]: demo(a)["state"], b["node"]: demo(b)["state"]}
          == {primary: "SECOND", secondary: "PRIM"} and demo(a)["uptodate"] and demo(b)["uptodate"],
          90, f"{secondary} PRIM, {primary} SECOND")
    assert json.load(open(record))["peer_led"] is False
    assert took < 20, f"the takeover beside the stopped primary took {took:.1f} s"


def test_with_the_witness_down_nobody_takes_over_beside_a_primary_that_does_not_hear_it(lab):
    """The sequence the simulation found (docs/reliability.md, the handshake), on real nodes. The
    witness is down and nothing from the secondary reaches the primary: the primary cannot renew
    its lease and steps down to WAIT; the secondary hears a WAIT primary. It used to take over
    beside it (no lease needed beside a heard peer); frozen after that, it was not heard by the
    returning witness, which vouched for the old primary: it resumed ALONE beside it, two
    primaries, the writes acknowledged by the taker set aside. The stepped-down node never hears
    the secondary, so never yields: the secondary waits. With the witness back (the secondary
    frozen), the last holder resumes alone, the only primary; after the wake and the heal the pair
    converges with every acknowledged write."""
    primary, secondary = mirrored(lab)
    for pid in pids_of(lab.paths, "witness"):
        os.kill(pid, signal.SIGKILL)
    drop_one_way(lab, secondary, primary)
    frozen: list[int] = []
    try:
        watch(lab, lambda a, b: {a["node"]: demo(a)["state"], b["node"]: demo(b)["state"]}[primary] == "WAIT",
              60, f"{primary} stepped down")
        end = time.monotonic() + 8                          # dozens of ticks beside the WAIT node
        while time.monotonic() < end:
            m = demo(status(lab, secondary))
            assert m is not None and m["state"] not in PRIMARY, f"{secondary} took over: {m}"
            time.sleep(0.3)
        assert "the peer could still be vouched for by the witness" in tail(lab, secondary, 300), \
            tail(lab, secondary, 60)
        frozen = pids_of(lab.paths, secondary)
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        from hamirror.lab import agent, state
        recorded = state.load(lab.paths)
        recorded.processes.append(agent.start_witness(lab.paths))
        state.save(lab.paths, recorded)
        deadline = time.monotonic() + 60                  # the witness grants nothing for one lease (10 s)
        while not serving(demo(doc := status(lab, primary))):
            assert time.monotonic() < deadline, f"{primary} not back: {doc}\n{tail(lab, primary, 40)}"
            time.sleep(0.3)
        with kvclient.Writer(lab.paths, "hs") as writer:
            time.sleep(1.5)
            keys = writer.stop()
    finally:
        resume(frozen)
        heal_one_way(lab, secondary)
    watch(lab, lambda a, b: {a["node"]: demo(a)["state"], b["node"]: demo(b)["state"]}
          == {primary: "PRIM", secondary: "SECOND"} and demo(a)["uptodate"] and demo(b)["uptodate"],
          90, f"{primary} PRIM, {secondary} SECOND after the wake and the heal")
    assert len(keys) > 3 and not kvclient.unreadable(lab.paths, keys, budget=60)
