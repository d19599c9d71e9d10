"""Issue 7 in the lab, each finding reproduced with a writer through the VIP: a frozen primary,
a dead mount daemon, a dead receiver, a swap after a resolved split brain. After each: every
acknowledged key readable, the pair back to PRIM + up-to-date SECOND with no operator, and no
sample (every 100 ms) where both nodes serve the VIP with a running application.

One lab for the module; the tests run in file order, each leaves the pair mirrored.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from hamirror.lab import agent as labagent, kvclient
from hamirror.lab.chaos_faults import pids_of
from hamirror.lab.chaos_watch import Sampler
from tests.agent_lab import LAB_MARKS, agents_lab, module, wait_for

pytestmark = LAB_MARKS


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    yield from agents_lab(tmp_path_factory, "fencelab")


@pytest.fixture
def sampler(lab):
    watch = Sampler(lab.paths)
    watch.start()
    yield watch
    watch.stop()
    dual = [s for s in watch.findings if s.dual]
    assert not dual, f"both nodes served at once: {dual[:5]}"


def roles(lab) -> tuple[str, str]:
    node1 = module(lab, "node1")
    primary = "node1" if node1 and node1["state"] in ("PRIM", "ALONE") else "node2"
    return primary, ("node2" if primary == "node1" else "node1")


def converge(lab, primary: str, secondary: str, timeout: float = 60.0) -> None:
    wait_for(lab, secondary, lambda m: m["state"] == "SECOND" and m["uptodate"] and not m["busy"], timeout,
             what="SECOND up to date")
    wait_for(lab, primary, lambda m: m["state"] == "PRIM" and m["mirror"] == "streaming" and not m["busy"],
             timeout, what="PRIM streaming")


def assert_readable(lab, keys: list[str]) -> None:
    assert len(keys) > 5, "the writer got too few acknowledgements to prove anything"
    bad = kvclient.unreadable(lab.paths, keys, budget=120)
    assert not bad, f"{len(bad)} acknowledged key(s) lost or wrong: {sorted(bad.items())[:10]}"


def test_frozen_primary_yields_to_the_node_that_took_over(lab, sampler):
    primary, secondary = roles(lab)
    with kvclient.Writer(lab.paths, "frz") as writer:
        time.sleep(1.5)
        stopped = [p for p in pids_of(lab.paths, primary)]
        frozen_at = time.monotonic()
        for pid in stopped:
            signal_quiet(pid, signal.SIGSTOP)
        try:
            wait_for(lab, secondary, lambda m: m["state"] == "ALONE" and not m["busy"], 20, what="takeover")
            time.sleep(2)   # the new primary acknowledges writes while the old one is frozen
        finally:
            for pid in stopped:
                signal_quiet(pid, signal.SIGCONT)
        writer.first_ack_after(frozen_at, 30)
        wait_for(lab, primary, lambda m: m["state"] in ("WAIT", "SECOND"), 30, what="the frozen node steps down")
        converge(lab, secondary, primary)
        keys = writer.stop()
    assert module(lab, secondary)["state"] == "PRIM"   # the node that took over keeps running
    assert_readable(lab, keys)


@pytest.mark.parametrize("role,daemon", [("primary", "mount"), ("secondary", "receiver")])
def test_a_dead_daemon_is_restarted_in_place(lab, sampler, role, daemon):
    """kill -9 of the primary's mount (remounted from its journal, the application restarted once
    writable) or of the secondary's receiver (restarted, then resynced): no failover, nothing lost."""
    primary, secondary = roles(lab)
    with kvclient.Writer(lab.paths, f"k{daemon[0]}") as writer:
        time.sleep(1.5)
        victims = pids_of(lab.paths, primary if role == "primary" else secondary, daemon)
        assert victims, f"no {daemon} found"
        killed_at = time.monotonic()
        for pid in victims:
            signal_quiet(pid, signal.SIGKILL)
        ack = writer.first_ack_after(killed_at, 30)
        assert ack.done - killed_at < 10
        converge(lab, primary, secondary)
        keys = writer.stop()
    assert roles(lab)[0] == primary
    assert_readable(lab, keys)


def test_swap_after_a_resolved_split_brain_replicates(lab, sampler):
    """Finding 3: after `second` resolves a split brain, a swap to that node must stream (not ALONE
    under PRIM), so a failover after it loses nothing."""
    primary, secondary = roles(lab)
    sampler.pause(True)                       # a partition without witness makes two primaries
    assert lab.cli("partition", "node1", "node2").returncode == 0
    try:
        for node in (secondary, primary):   # availability-first: both sides go on alone
            wait_for(lab, node, lambda m: m["state"] == "ALONE" and not m["busy"], 30, what="split")
    finally:
        assert lab.cli("heal").returncode == 0
    loser = wait_one_waiting(lab)
    winner = "node2" if loser == "node1" else "node1"
    result = lab.exec(loser, "hamirror", "second", "demo", timeout=120)
    assert result.returncode == 0, result.stderr
    sampler.pause(False)
    converge(lab, winner, loser, 120)
    result = lab.exec(loser, "hamirror", "swap", "demo", timeout=120)
    assert result.returncode == 0, result.stderr
    converge(lab, loser, winner)
    with kvclient.Writer(lab.paths, "sbs") as writer:
        time.sleep(3)
        assert lab.cli("kill", loser).returncode == 0
        wait_for(lab, winner, lambda m: m["state"] == "ALONE" and not m["busy"], 30, what="takeover")
        time.sleep(1)
        keys = writer.stop()
    assert_readable(lab, keys)
    assert lab.cli("boot", loser).returncode == 0
    converge(lab, winner, loser, 90)


def wait_one_waiting(lab, timeout: float = 40.0) -> str:
    """After a healed split brain exactly one node steps down to WAIT (split brain reported): which."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = {n: module(lab, n) for n in ("node1", "node2")}
        waiting = [n for n, m in states.items() if m and m["state"] == "WAIT" and not m["busy"]]
        if len(waiting) == 1 and all(m and m["relation"] == "diverged" for m in states.values()):
            return waiting[0]
        time.sleep(0.3)
    raise AssertionError(f"no single node waiting on a split brain: {states}")


def signal_quiet(pid: int, sig: int) -> None:
    import os
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


# The swap's steps, as each agent logs them once done (module_runner): where a kill -9 lands.
OLD_APP_STOPPED = "demo: done RunScript(stop_prim)"
NEW_RECEIVER_STOPPED = "demo: done StopReceiver"
NEW_MOUNTED = "demo: done MountReplicated"


@pytest.mark.parametrize("victim,daemon,after", [("old", "agent", OLD_APP_STOPPED),
                                                 ("new", "agent", NEW_RECEIVER_STOPPED),
                                                 ("old", "mount", OLD_APP_STOPPED),
                                                 ("new", "mount", NEW_MOUNTED)],
                         ids=["old-agent", "new-agent", "old-mount", "new-mount"])
def test_a_daemon_killed_in_the_middle_of_a_swap_converges(lab, sampler, victim, daemon, after):
    """kill -9 of either agent (restarted 0.5 s later, as systemd's RestartSec does) or either
    mount daemon half-way through a swap: the pair converges to PRIM + up-to-date SECOND with no
    operator, no acknowledged write is lost and the service is never on both nodes."""
    primary, secondary = roles(lab)
    node = primary if victim == "old" else secondary
    with kvclient.Writer(lab.paths, f"s{victim[0]}{daemon[0]}") as writer:
        time.sleep(1.5)
        with swapping(lab, primary, node, after):
            for pid in pids_of(lab.paths, node, daemon):
                signal_quiet(pid, signal.SIGKILL)
            killed_at = time.monotonic()
            if daemon == "agent":
                time.sleep(0.5)
                labagent.start(lab.paths, node)
        writer.first_ack_after(killed_at, 60)
        new_primary, new_secondary = wait_roles(lab)
        converge(lab, new_primary, new_secondary, 90)
        keys = writer.stop()
    assert_readable(lab, keys)


def test_power_loss_of_the_old_primary_after_its_hand_over_ends_in_a_takeover(lab, sampler):
    """The old primary loses power once it handed over: the new primary's connected mount can
    never be made (no receiver answers); it must not retry it for ever but take over ALONE (its
    copy is final: the hand-over flushed), then resync the old primary when it boots."""
    primary, secondary = roles(lab)
    with kvclient.Writer(lab.paths, "spk") as writer:
        time.sleep(1.5)
        with swapping(lab, primary, secondary, NEW_RECEIVER_STOPPED):
            assert lab.cli("kill", primary).returncode == 0
            killed_at = time.monotonic()
        writer.first_ack_after(killed_at, 60)
        wait_for(lab, secondary, lambda m: m["state"] == "ALONE" and not m["busy"], 30, what="takeover")
        assert lab.cli("boot", primary).returncode == 0
        converge(lab, secondary, primary, 90)
        keys = writer.stop()
    assert_readable(lab, keys)


@contextmanager
def swapping(lab, primary: str, node: str, step: str) -> Iterator[None]:
    """``hamirror swap demo`` typed on primary; the block runs as soon as node's agent logs step."""
    offset = log_size(lab, node)
    swap = subprocess.Popen(lab.cli_command("exec", primary, "--", "hamirror", "swap", "demo"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_log(lab, node, offset, step)
        yield
    finally:
        swap.wait(timeout=120)


def log_size(lab, node: str) -> int:
    return os.path.getsize(lab.paths.log_file(node, "agent"))


def wait_log(lab, node: str, offset: int, text: str, timeout: float = 30.0) -> None:
    """Until node's agent log, from offset, holds text (polled every 5 ms: a kill lands right after)."""
    deadline = time.monotonic() + timeout
    with open(lab.paths.log_file(node, "agent"), encoding="utf-8", errors="replace") as f:
        f.seek(offset)
        seen = ""
        while text not in seen:
            if time.monotonic() > deadline:
                raise AssertionError(f"{node}: {text!r} not logged within {timeout:.0f} s")
            seen += f.read()
            time.sleep(0.005)


def wait_roles(lab, timeout: float = 60.0) -> tuple[str, str]:
    """Once one node is primary again and not busy: (primary, secondary)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for node, other in (("node1", "node2"), ("node2", "node1")):
            m = module(lab, node)
            if m and m["state"] in ("PRIM", "ALONE") and not m["busy"]:
                return node, other
        time.sleep(0.3)
    raise AssertionError(f"no primary within {timeout:.0f} s: {module(lab, 'node1')} {module(lab, 'node2')}")



def block_heartbeats(lab, node: str, port: int = 7401) -> None:
    """Drop the node's heartbeat datagrams both ways (the replication link keeps flowing), in the
    lab's partition table of that node's namespace, which ``lab heal`` removes."""
    rules = ("table inet hamirror_lab {\n"
             f"  chain input {{ type filter hook input priority 0; policy accept; udp dport {port} drop; }}\n"
             f"  chain output {{ type filter hook output priority 0; policy accept; udp dport {port} drop; }}\n"
             "}\n")
    subprocess.run(["nsenter", f"--net={lab.paths.netns_file(node)}", "--", "nft", "-f", "-"], input=rules,
                   text=True, check=True)


def test_heartbeats_blocked_then_the_secondary_agent_restarted_take_nothing_over(lab, sampler):
    """Finding 6: heartbeats lost while replication flows, then the SECOND's agent restarts (it has
    heard no heartbeat since): it took over beside the serving primary. Its receiver hears the
    primary's mount: it stays SECOND, the primary keeps serving, nothing acknowledged is lost."""
    from hamirror.lab import control

    primary, secondary = roles(lab)
    converge(lab, primary, secondary)
    with kvclient.Writer(lab.paths, "hb") as writer:
        time.sleep(1.0)
        block_heartbeats(lab, secondary)
        try:
            time.sleep(3.0)                              # more than a heartbeat timeout
            for pid in pids_of(lab.paths, secondary, "agent"):
                signal_quiet(pid, signal.SIGKILL)
            time.sleep(0.5)
            control.start_agent(lab.paths, secondary)
            time.sleep(8.0)                              # four timeouts with no heartbeat at all
            assert wait_for(lab, secondary, lambda m: True, 20)["state"] == "SECOND"
            assert module(lab, primary)["state"] == "PRIM"
        finally:
            assert lab.cli("heal").returncode == 0
        time.sleep(1.0)
        keys = writer.stop()
    converge(lab, primary, secondary)
    assert_readable(lab, keys)


def logged_at(lab, node: str, text: str, since: str) -> str | None:
    """The timestamp ("YYYY-mm-dd HH:MM:SS,mmm", sortable) of the first agent log line at or after
    ``since`` that contains ``text``."""
    with open(lab.paths.log_file(node, "agent"), encoding="utf-8", errors="replace") as f:
        return next((line[:23] for line in f if line[:23] >= since and text in line), None)


def test_a_one_way_loss_without_a_witness_moves_the_service_without_serving_on_both(lab, sampler):
    """Campaigns 1603 and 2203: nothing from the primary reaches the SECOND, the other way flows,
    no witness. The SECOND took over at its heartbeat timeout; the primary, which heard it, stepped
    down only on seeing it ALONE: the VIP and the application on both nodes for ~0.6 s. Now the
    SECOND says at half its timeout that it will take over, and the primary steps down before
    the takeover. Every acknowledged key readable; after the heal the pair converges."""
    from hamirror.cluster.decide import PEER_LEAVING
    from hamirror.lab import chaos_net

    primary, secondary = roles(lab)
    converge(lab, primary, secondary)
    since = time.strftime("%Y-%m-%d %H:%M:%S")
    with kvclient.Writer(lab.paths, "ow") as writer:
        time.sleep(1.0)
        chaos_net.one_way(lab.paths, primary, secondary)
        try:
            wait_for(lab, secondary, lambda m: m["state"] == "ALONE" and not m["busy"], 20, what="takeover")
        finally:
            chaos_net.heal(lab.paths)
        left = logged_at(lab, primary, PEER_LEAVING, since)
        took = logged_at(lab, secondary, "peer lost: taking over", since)
        assert left is not None and took is not None and left < took, (left, took, tail(lab, primary))
        converge(lab, secondary, primary)
        keys = writer.stop()
    assert_readable(lab, keys)
