"""UDP transport for heartbeats: send to the peer on every network, receive on every local address.

One socket per network (``bind[i]`` talks to ``peers[i]``), so each heartbeat leaves by the network
it describes and the per-network last-seen times say which links are up. Clocks are injected:
``clock`` (monotonic) stamps receptions and sends, drives ``peer_alive`` and the echo's age (a
heartbeat echoing one of ours sent within ``max_skew`` is fresh); ``wall`` feeds the skew check of
heartbeats that echo nothing recent.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Mapping

from hamirror import audit, versions
from hamirror.cluster.heartbeat import (
    Heartbeat, HeartbeatRejected, ModuleInfo, NewerProtocol, Validator, encode, new_boot_id,
)
from hamirror.config.digest import ConfigDigests

log = logging.getLogger(__name__)
Address = tuple[str, int]
SENT_REMEMBERED = 256      # send times kept for echoes: more than max_skew at any interval in use


class _Receiver(asyncio.DatagramProtocol):
    """Hands every datagram of network ``index`` to the service."""

    def __init__(self, service: HeartbeatService, index: int) -> None:
        self.service, self.index = service, index

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.service.received(self.index, data, addr)

    def error_received(self, exc: Exception) -> None:      # e.g. ICMP port unreachable
        log.debug("heartbeat network %d: %s", self.index, exc)


class HeartbeatService:
    """Sends this node's heartbeats every ``interval`` and tracks the peer's."""

    def __init__(self, cluster: str, node: str, peer: str, key: bytes,
                 bind: list[Address], peers: list[Address],
                 modules: Callable[[], Mapping[str, ModuleInfo]],
                 interval: float = 0.3, timeout: float = 2.0, max_skew: float = 10.0,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        if len(bind) != len(peers) or not bind:
            raise ValueError("need one local and one peer address per heartbeat network")
        self.cluster, self.node, self.peer, self.key = cluster, node, peer, key
        self.bind, self.peers, self.modules = list(bind), list(peers), modules
        self.interval, self.timeout, self.clock, self.wall = interval, timeout, clock, wall
        self.validator = Validator(cluster, node, {peer}, key, max_skew)
        self.boot_id = new_boot_id()
        self.counter = 0
        self.sent: collections.OrderedDict[int, float] = collections.OrderedDict()   # counter -> clock()
        self.last_seen: list[float | None] = [None] * len(bind)
        self.peer_heartbeat: Heartbeat | None = None
        # Called when the peer advertises something new for a module (a state, a swap phase):
        # the agent decides at once instead of at its next tick (a swap's second half waits on it).
        self.on_peer_change: Callable[[], None] | None = None
        # Called with every heartbeat accepted from the peer, as it arrives (the agent compares
        # configurations and releases: hamirror/agent/agreement.py).
        self.on_heard: Callable[[Heartbeat], None] | None = None
        # This node's configuration digests (hamirror/config/digest.py), sent with every heartbeat.
        self.digests: ConfigDigests | None = None
        self._transports: list[asyncio.DatagramTransport] = []
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        """Bind every local address and start sending."""
        loop = asyncio.get_running_loop()
        for index, addr in enumerate(self.bind):
            transport, _ = await loop.create_datagram_endpoint(
                lambda index=index: _Receiver(self, index), local_addr=addr)
            self._transports.append(transport)
        self._task = asyncio.create_task(self._send_loop(), name=f"heartbeat-{self.node}")

    async def stop(self) -> None:
        """Stop sending and close the sockets."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for transport in self._transports:
            transport.close()
        self._transports.clear()

    def send_now(self) -> None:
        """Send one heartbeat on every network (also called right after a change of state)."""
        self.counter += 1
        self.sent[self.counter] = self.clock()
        while len(self.sent) > SENT_REMEMBERED:
            self.sent.popitem(last=False)
        modules, wall, echo = dict(self.modules()), self.wall(), self.validator.echo_for(self.peer)
        digests = self.digests or ConfigDigests(None, {})
        module_config = {name: d for name, d in digests.modules.items() if d is not None}
        for index, (transport, addr) in enumerate(zip(self._transports, self.peers)):
            hb = Heartbeat(self.cluster, self.node, self.boot_id, self.counter, wall, modules, index, echo,
                           versions.SOFTWARE, digests.cluster, module_config)
            try:
                transport.sendto(encode(hb, self.key), addr)
            except Exception as exc:  # noqa: BLE001 - one network's failure must not stop others
                log.warning("heartbeat not sent on network %d: %s", index, exc)

    async def _send_loop(self) -> None:
        while True:
            try:
                self.send_now()
            except Exception as exc:  # noqa: BLE001 - a failing module provider must not stop us
                log.error("heartbeat not sent: %s", exc)
            await asyncio.sleep(self.interval)

    def received(self, index: int, data: bytes, source: Address | None = None) -> None:
        """Validate one datagram from network ``index``; rejections are counted and audited."""
        try:
            hb = self.validator.accept(data, self.wall(), index, self.echo_age)
        except HeartbeatRejected as exc:
            where = f"{source[0]}:{source[1]}" if source else "unknown"
            audit.refused("heartbeat", source[0] if source else "unknown",
                          f"datagram rejected on network {index} (from {where}): {exc}")
            return
        self.last_seen[index] = self.clock()
        previous, self.peer_heartbeat = self.peer_heartbeat, hb
        if self.on_heard is not None:
            try:
                self.on_heard(hb)
            except Exception:  # noqa: BLE001 - a listener's bug must not cost the peer's liveness
                log.exception("heartbeat listener failed")
        if self.on_peer_change is not None and (previous is None or previous.modules != hb.modules):
            self.on_peer_change()

    def echo_age(self, boot: str, counter: int) -> float | None:
        """How long ago this service sent heartbeat ``counter`` of boot ``boot`` (None: not ours)."""
        sent = self.sent.get(counter) if boot == self.boot_id else None
        return None if sent is None else self.clock() - sent

    def peer_alive(self, now: float | None = None) -> bool:
        """Whether the peer was heard on any network within ``timeout``."""
        now = self.clock() if now is None else now
        return any(t is not None and now - t <= self.timeout for t in self.last_seen)

    def silence(self, now: float | None = None) -> float | None:
        """Seconds since the peer was last heard on any network (None: never heard)."""
        now = self.clock() if now is None else now
        heard = [t for t in self.last_seen if t is not None]
        return now - max(heard) if heard else None

    def peer_modules(self, now: float | None = None) -> Mapping[str, ModuleInfo]:
        """The peer's last advertised modules, empty once the peer is considered lost."""
        if self.peer_heartbeat is None or not self.peer_alive(now):
            return {}
        return self.peer_heartbeat.modules

    def networks(self, now: float | None = None) -> list[dict]:
        """Per network, for status: addresses, seconds since last heard (None: never), up."""
        now = self.clock() if now is None else now
        return [{"local": f"{b[0]}:{b[1]}", "peer": f"{p[0]}:{p[1]}",
                 "age": None if t is None else now - t,
                 "up": t is not None and now - t <= self.timeout}
                for b, p, t in zip(self.bind, self.peers, self.last_seen)]

    @property
    def newer(self) -> NewerProtocol | None:
        """The last heartbeat refused for a newer protocol, until the peer is understood again."""
        return self.validator.newer

    @property
    def rejected(self) -> dict[str, int]:
        """Rejected datagrams by reason, for status and metrics."""
        return {reason.value: n for reason, n in self.validator.rejected.items()}
