"""A real witness on 127.0.0.1 with two UdpWitness clients (the nodes), and the CLI's witness."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time

from hamirror.cluster.quorum import BELIEF, UdpWitness
from hamirror.cluster.witness_server import open_witness
from tests import ports

KEY = b"q" * 32
LEASE = 1.0
INTERVAL = 0.1


def free_port() -> int:
    return ports.free_port(kind=socket.SOCK_DGRAM)


def client(port: int, node: str, peer: str, claim) -> UdpWitness:
    return UdpWitness(("127.0.0.1", port), "lab", node, peer, KEY, claim=lambda: claim[node],
                      interval=INTERVAL, wait=0.5)


async def witness_and_nodes(lease: float, claim: dict[str, bool]):
    """A witness on 127.0.0.1 and both nodes' clients, started."""
    transport, server = await open_witness(("127.0.0.1", 0), "lab", ["node1", "node2"], KEY, lease)
    port = transport.get_extra_info("sockname")[1]
    n1, n2 = client(port, "node1", "node2", claim), client(port, "node2", "node1", claim)
    await n1.start()
    await n2.start()
    return transport, server, n1, n2


async def scenario() -> None:
    claim = {"node1": True, "node2": False}
    transport, server, n1, n2 = await witness_and_nodes(LEASE, claim)
    try:
        # Start-up quiet period: nobody holds the lease during the witness's first lease.
        assert await n1.verdict(time.monotonic()) is False
        await asyncio.sleep(LEASE)
        assert await n1.verdict(time.monotonic()) is True
        assert await n2.verdict(time.monotonic()) is False              # not claiming: never True
        assert n2.status()["seen"] == ["node1", "node2"] and n2.status()["holder"] == "node1"
        # A partition between the nodes: both claim; the holder keeps it, the other is refused.
        claim["node2"] = True
        for _ in range(10):
            silent_since = time.monotonic()                             # node1's last request, at the latest
            assert await n1.verdict(time.monotonic()) is True
            assert await n2.verdict(time.monotonic()) is False
            await asyncio.sleep(INTERVAL)
        # node1 goes silent (cut from everything): its belief ends before node2 is granted, and
        # node2 is granted no sooner than a lease after node1's last request.
        assert await n2.verdict(time.monotonic()) is False               # holder just heard: no wait
        while not n1.view.holds(time.monotonic()) is False:
            await asyncio.sleep(0.01)
        lost = time.monotonic()
        granted = await n2.verdict(time.monotonic())                     # waits for the lapse
        assert granted is True
        assert time.monotonic() - silent_since >= LEASE and time.monotonic() - lost >= LEASE * (1 - BELIEF) - 0.05
        assert await n1.verdict(time.monotonic()) is False               # node1 back: refused
        assert n2.renewed and n1.renewed                                 # both verdicts rest on this answer
        # The witness goes away: no answer, the belief lapses by itself, and nobody is True. A
        # verdict without an answer is never a renewal, whatever the belief says
        # (ModuleView.renewed: a node does not act alone on it).
        transport.close()
        await n2.verdict(time.monotonic())
        assert n2.renewed is False
        deadline = time.monotonic() + LEASE
        while time.monotonic() < deadline:
            assert not (await n1.verdict(time.monotonic()) or False)
        assert await n2.verdict(time.monotonic()) is False
        assert server.rejected == {}
    finally:
        await n1.stop()
        await n2.stop()
        transport.close()


def test_two_clients_and_a_witness_over_udp():
    asyncio.run(asyncio.wait_for(scenario(), 30))


async def held_by_node1_gone_quiet(lease: float):
    """A witness whose lease node1 holds, then node1 silent for more than two intervals: what a
    claim by node2 is refused by, with the wait for the lapse ahead of it."""
    transport, _, n1, n2 = await witness_and_nodes(lease, {"node1": True, "node2": True})
    await asyncio.sleep(lease)                                           # the witness's quiet start
    assert await n1.verdict(time.monotonic()) is True
    await asyncio.sleep(3 * INTERVAL)
    return transport, n1, n2


def test_a_claim_waiting_for_a_silent_holders_lapse_ends_when_the_lease_is_no_longer_needed():
    """Campaigns 4208/4209: a secondary that did not hear its peer (the primary's agent restarting)
    claimed, was refused by the peer's lease gone quiet, and waited for that lease to lapse (a whole
    lease) with its agent's tick, its receiver restart with it, though the peer was heard again
    a moment later. The wait ends once ``still_needed`` says no."""
    async def scenario() -> None:
        lease = 4.0
        transport, n1, n2 = await held_by_node1_gone_quiet(lease)
        needed_until = time.monotonic() + 0.3
        n2.still_needed = lambda: time.monotonic() < needed_until       # the peer heard again after 0.3 s
        try:
            started = time.monotonic()
            assert await n2.verdict(time.monotonic()) is False
            assert time.monotonic() - started < 1.0, "waited for a lapse no longer needed"
            assert n2.status()["holder"] == "node1"
        finally:
            await n1.stop()
            await n2.stop()
            transport.close()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_a_claim_waiting_for_a_silent_holders_lapse_ends_when_the_holder_renews():
    """The holder was only slow (frozen, then thawed): its renewal ends the claimant's wait at the
    next interval, not at the lapse the first refusal predicted."""
    async def scenario() -> None:
        lease = 4.0
        transport, n1, n2 = await held_by_node1_gone_quiet(lease)

        async def thaw() -> None:
            await asyncio.sleep(0.5)
            assert await n1.verdict(time.monotonic()) is True

        try:
            started = time.monotonic()
            thawed = asyncio.create_task(thaw())
            assert await n2.verdict(time.monotonic()) is False
            await thawed
            assert time.monotonic() - started < 1.5, "waited for a lapse that never came"
            assert n2.peer_holds(0, silence=None)
        finally:
            await n1.stop()
            await n2.stop()
            transport.close()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_the_cli_runs_a_witness_that_answers(tmp_path):
    key_file = tmp_path / "cluster.key"
    key_file.write_bytes(KEY)
    key_file.chmod(0o600)                  # a key other users can read is refused
    port = free_port()
    (tmp_path / "hamirror.toml").write_text(
        f'[cluster]\nname = "lab"\ncluster_key_file = "{key_file}"\n\n[heartbeat]\ninterval = 0.1\ntimeout = 0.5\n\n'
        '[[nodes]]\nname = "node1"\naddresses = ["127.0.0.1"]\n\n[[nodes]]\nname = "node2"\naddresses = ["127.0.0.2"]\n')
    proc = subprocess.Popen([sys.executable, "-m", "hamirror", "witness", "--bind", f"127.0.0.1:{port}",
                             "-c", str(tmp_path / "hamirror.toml")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        async def ask() -> bool:
            n1 = client(port, "node1", "node2", {"node1": True})
            await n1.start()
            try:
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline:                       # lease 1.0 s: quiet, then granted
                    if await n1.verdict(time.monotonic()):
                        return True
                    await asyncio.sleep(0.1)
                return False
            finally:
                await n1.stop()
        assert asyncio.run(ask()), proc.stdout.read1(4096) if proc.poll() is not None else "no grant"
    finally:
        proc.kill()
        proc.wait(10)
        proc.stdout.close()
