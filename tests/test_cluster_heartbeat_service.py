"""Two real heartbeat services talking over 127.0.0.1 UDP, with an injected clock for timeouts."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Awaitable, Callable

from hamirror.cluster.heartbeat import ModuleInfo, Reason
from hamirror.cluster.heartbeat_service import HeartbeatService
from hamirror.cluster.states import NodeState
from hamirror.cluster.view import SwapPhase
from tests.ports import free_ports as pick_ports

KEY = b"s" * 32
LOOPBACK = "127.0.0.1"


def free_ports(n: int) -> list[int]:
    return pick_ports(n, LOOPBACK, socket.SOCK_DGRAM)


class FakeClock:
    """Monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pair(key_b: bytes = KEY, networks: int = 2,
         skew_b: float = 0.0) -> tuple[HeartbeatService, HeartbeatService, FakeClock]:
    ports = free_ports(2 * networks)
    a_bind = [(LOOPBACK, p) for p in ports[:networks]]
    b_bind = [(LOOPBACK, p) for p in ports[networks:]]
    clock = FakeClock()
    a_mods = {"demo": ModuleInfo(NodeState.PRIM, True, "g1")}
    b_mods = {"demo": ModuleInfo(NodeState.SECOND, True, "g1")}
    a = HeartbeatService("lab", "node1", "node2", KEY, a_bind, b_bind, lambda: a_mods,
                         interval=0.02, timeout=2.0, clock=clock)
    b = HeartbeatService("lab", "node2", "node1", key_b, b_bind, a_bind, lambda: b_mods,
                         interval=0.02, timeout=2.0, clock=clock, wall=lambda: time.time() + skew_b)
    return a, b, clock


async def until(cond: Callable[[], bool], limit: float = 3.0) -> bool:
    for _ in range(int(limit / 0.01)):
        if cond():
            return True
        await asyncio.sleep(0.01)
    return cond()


def run(body: Callable[[HeartbeatService, HeartbeatService, FakeClock], Awaitable[None]],
        **kw) -> None:
    async def main() -> None:
        a, b, clock = pair(**kw)
        await a.start()
        await b.start()
        try:
            await body(a, b, clock)
        finally:
            await a.stop()
            await b.stop()
    asyncio.run(main())


def test_peers_see_each_other_on_every_network_then_time_out() -> None:
    async def body(a: HeartbeatService, b: HeartbeatService, clock: FakeClock) -> None:
        assert await until(lambda: all(n["up"] for n in a.networks() + b.networks()))
        assert a.peer_alive() and b.peer_alive()
        assert a.peer_modules()["demo"].state is NodeState.SECOND
        assert b.peer_modules()["demo"] == ModuleInfo(NodeState.PRIM, True, "g1")
        await b.stop()
        await asyncio.sleep(0.05)                    # let datagrams in flight land
        clock.now += 2.5                             # nothing heard for longer than timeout
        assert not a.peer_alive()
        assert a.peer_modules() == {}
        assert [n["up"] for n in a.networks()] == [False, False]
        assert a.rejected == {}
    run(body)


def test_one_network_down_keeps_peer_alive() -> None:
    async def body(a: HeartbeatService, b: HeartbeatService, clock: FakeClock) -> None:
        assert await until(lambda: all(n["up"] for n in a.networks()))
        b.peers[1] = (LOOPBACK, free_ports(1)[0])    # cut network 1: b's datagrams go nowhere
        await asyncio.sleep(0.05)
        clock.now += 2.5
        assert await until(lambda: a.networks()[0]["up"])
        assert a.peer_alive()
        assert not a.networks()[1]["up"]
    run(body)


def test_wrong_key_is_counted_audited_with_the_source_and_never_alive(audit_lines) -> None:
    async def body(a: HeartbeatService, b: HeartbeatService, clock: FakeClock) -> None:
        assert await until(lambda: a.rejected.get(Reason.BAD_MAC.value, 0) >= 4)
        assert not a.peer_alive() and not b.peer_alive()
        [line] = audit_lines()                                # many rejections, one line a minute
        ports = "|".join(str(port) for _, port in a.bind + b.bind)
        assert re.fullmatch(rf"audit: heartbeat from {LOOPBACK}: datagram rejected on network [01] "
                            rf"\(from {LOOPBACK}:({ports})\): bad_mac", line), line
    run(body, key_b=b"t" * 32)


def test_replayed_datagram_is_rejected_by_the_service() -> None:
    async def body(a: HeartbeatService, b: HeartbeatService, clock: FakeClock) -> None:
        captured: list[bytes] = []
        original = a.received
        a.received = lambda i, data, *source: (captured.append(data), original(i, data, *source))  # type: ignore
        assert await until(lambda: len(captured) >= 1)
        before = a.rejected.get(Reason.REPLAY.value, 0)
        original(0, captured[0])
        assert a.rejected.get(Reason.REPLAY.value, 0) == before + 1
    run(body)


def test_a_change_the_peer_advertises_is_reported_at_once_and_only_once() -> None:
    """The agent ticks on it (a swap's new primary acts on the hand-over without waiting a tick)."""
    async def body(a: HeartbeatService, b: HeartbeatService, clock: FakeClock) -> None:
        changes: list[NodeState] = []
        a.on_peer_change = lambda: changes.append(a.peer_heartbeat.modules["demo"].state)
        assert await until(lambda: len(changes) == 1)
        await asyncio.sleep(0.1)                     # several heartbeats, each network: nothing new
        assert changes == [NodeState.SECOND]
        b.modules = lambda: {"demo": ModuleInfo(NodeState.SECOND, True, "g1", SwapPhase.HANDOVER)}
        b.send_now()
        assert await until(lambda: len(changes) == 2)
        await asyncio.sleep(0.1)
        assert changes == [NodeState.SECOND, NodeState.SECOND]
        assert a.peer_modules()["demo"].swap is SwapPhase.HANDOVER
    run(body)


def test_wall_clocks_a_minute_apart_do_not_stop_the_heartbeats() -> None:
    """Finding 6: a skew over 10 s made every heartbeat rejected while replication flowed, and a
    restarted SECOND took over beside the serving primary. The echo of a counter sent moments ago
    proves freshness on each node's own monotonic clock: after one round trip both are alive."""
    async def body(a: HeartbeatService, b: HeartbeatService, clock: FakeClock) -> None:
        assert await until(lambda: a.peer_alive() and b.peer_alive())
        assert a.peer_modules()["demo"].state is NodeState.SECOND
        assert b.peer_modules()["demo"].state is NodeState.PRIM
        skewed = a.rejected.get(Reason.SKEW.value, 0)
        await asyncio.sleep(0.2)                     # ten more rounds: none of them is rejected
        assert a.rejected.get(Reason.SKEW.value, 0) == skewed and skewed <= 4
    run(body, skew_b=60.0)


def test_versions_and_digests_travel_and_a_failing_listener_costs_no_liveness() -> None:
    """What the agent compares (hamirror/agent/agreement.py) arrives with every heartbeat; a bug
    in the listener must not make the peer look silent."""
    from hamirror import versions
    from hamirror.config.digest import ConfigDigests

    digest = "0" * 12 + "/" + "1234" * 9

    async def body(a: HeartbeatService, b: HeartbeatService, clock: FakeClock) -> None:
        heard: list = []

        def listener(hb) -> None:
            heard.append(hb)
            raise RuntimeError("listener bug")

        b.digests = ConfigDigests(digest, {"demo": digest, "broken": None})
        a.on_heard = listener
        assert await until(lambda: len(heard) >= 3 and heard[-1].config is not None)
        assert (heard[-1].software, heard[-1].config, heard[-1].module_config) == \
            (versions.SOFTWARE, digest, {"demo": digest})
        assert a.peer_alive()
    run(body)
