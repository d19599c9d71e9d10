"""The witness machine's side of :mod:`quorum`: the lease rule, the outdated copies it records,
its state file, and its UDP server (``hamirror witness``).

What it keeps durably (``--state``, written and fsynced before an answer depends on it): the last
holder of the lease (a tenure's ``previous``) and the marks of outdated copies (module -> node).
Losing the file loses no lease (a restarted witness grants nothing for a lease), but it forgets
marks: a node whose copy is outdated could then take over after a double fault. Keep it on a disk
that survives a reboot (docs/cluster.md).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterable

from hamirror.cluster.heartbeat import HeartbeatRejected, Validator, new_boot_id, sign
from hamirror.cluster.quorum import (
    NO_MARKS, WITNESS_NAME, Address, Answer, Marks, apply_marks, datagram_body, datagram_fields, decode_outdated,
    witness_key,
)
from hamirror.durablefile import write_json

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class WitnessState:
    """What the witness remembers across restarts."""

    last: str | None = None                                   # the last holder of the lease
    outdated: dict[str, str] = dataclasses.field(default_factory=dict)   # module -> node whose copy is outdated


class LeaseBook:
    """The witness's rule (pure): one lease, at most one holder; ``now`` is a monotonic clock.
    ``state``: what a previous run remembered; ``save(state)`` makes a change durable before an
    answer depends on it (if it raises, the change is not made: no grant, no mark)."""

    def __init__(self, nodes: Iterable[str], lease: float, started: float, state: WitnessState = WitnessState(),
                 save: Callable[[WitnessState], None] = lambda state: None) -> None:
        if lease <= 0:
            raise ValueError("the lease must be positive")
        self.nodes, self.lease = frozenset(nodes), lease
        self.quiet_until = started + lease     # leases granted by a previous run have lapsed by then
        self.heard: dict[str, float] = {}
        self.holder: str | None = None
        self.state, self.previous, self.save = state, None, save

    @property
    def last(self) -> str | None:
        return self.state.last

    def ask(self, node: str, claim: bool, now: float, marks: Marks = NO_MARKS) -> Answer:
        """A request from ``node`` (already authenticated) at ``now``; its ``marks`` count only
        if it holds the lease once the claim is settled."""
        if node not in self.nodes:
            raise ValueError(f"unknown node {node!r}")
        self.expire(now)
        self.heard[node] = now
        if claim and self.holder is None and now >= self.quiet_until:
            self.grant(node)
        elif not claim and self.holder == node:
            self.holder = None
        if self.holder == node and marks != NO_MARKS:
            self.mark(node, marks)
        return self.answer(now)

    def grant(self, node: str) -> None:
        """A new tenure: durable first, then granted; the holder before it is ``previous``."""
        previous = self.last
        if node != previous and not self.record(dataclasses.replace(self.state, last=node),
                                                f"lease not granted to {node}: its holder"):
            return
        self.holder, self.previous = node, previous

    def mark(self, node: str, marks: Marks) -> None:
        """The holder's marks: its peer's copies of ``outdate`` are outdated (not where the holder's
        own copy is, unless forced), the marks of ``current`` go."""
        peer = next((n for n in self.nodes if n != node), None)
        if peer is None:
            return
        outdated = apply_marks(self.state.outdated, node, peer, marks)
        if outdated != self.state.outdated:
            self.record(dataclasses.replace(self.state, outdated=outdated), f"{node}'s marks")

    def record(self, state: WitnessState, what: str) -> bool:
        try:
            self.save(state)
        except OSError as exc:
            log.error("%s cannot be recorded: %s", what, exc)
            return False
        self.state = state
        return True

    def expire(self, now: float) -> None:
        if self.holder is not None and now - self.heard[self.holder] > self.lease:
            self.holder = None

    def answer(self, now: float) -> Answer:
        self.expire(now)
        seen = tuple(sorted(n for n, t in self.heard.items() if now - t <= self.lease))
        age = now - self.heard[self.holder] if self.holder is not None else None
        return Answer(self.holder, seen, age, self.lease, self.previous if self.holder is not None else None,
                      dict(self.state.outdated))


class WitnessServer:
    """The witness's datagram handler (no sockets): validate, apply the lease rule, sign the answer."""

    def __init__(self, cluster: str, nodes: Iterable[str], key: bytes, lease: float,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 state: str | None = None) -> None:
        nodes = frozenset(nodes)
        if WITNESS_NAME in nodes:
            raise ValueError(f"a node may not be named {WITNESS_NAME!r}")
        self.cluster, self.key, self.clock, self.wall = cluster, witness_key(key), clock, wall
        self.state = state
        remembered = load_state(state, nodes) if state else WitnessState()
        self.book = LeaseBook(nodes, lease, clock(), remembered, self.remember)
        self.validator = Validator(cluster, WITNESS_NAME, nodes, self.key)
        self.boot, self.counter = new_boot_id(), 0

    @property
    def rejected(self) -> dict[str, int]:
        return {reason.value: n for reason, n in self.validator.rejected.items()}

    def remember(self, state: WitnessState) -> None:
        """Record the state durably (write, fsync, rename) before an answer depends on it."""
        if self.state:
            save_state(self.state, state)

    def handle(self, data: bytes) -> bytes | None:
        """The signed answer to one request, or None for anything not a fresh authentic request."""
        try:
            hb = self.validator.accept(data, self.wall(), 0)
            fields = datagram_fields(data)
        except HeartbeatRejected as exc:
            log.debug("witness request rejected: %s", exc)
            return None
        try:
            marks = Marks.from_fields(fields)
        except ValueError as exc:      # authentic but malformed: its claim still counts, its marks not
            log.warning("witness request from %s: marks ignored: %s", hb.node, exc)
            marks = NO_MARKS
        before, marked = self.book.holder, self.book.state.outdated
        answer = self.book.ask(hb.node, fields.get("q") is True, self.clock(), marks)
        if answer.holder != before:
            log.warning("lease: %s -> %s", before or "nobody", answer.holder or "nobody")
        if self.book.state.outdated != marked:
            log.warning("outdated copies (module: node), recorded for %s: %s", hb.node,
                        ", ".join(f"{m}: {n}" for m, n in sorted(self.book.state.outdated.items())) or "none")
        self.counter += 1
        return sign(datagram_body(self.cluster, WITNESS_NAME, self.boot, self.counter, self.wall(), to=hb.node,
                          rb=hb.boot_id, rs=hb.counter, h=answer.holder, a=answer.age, seen=list(answer.seen),
                          l=answer.lease, p=answer.previous, x=answer.outdated), self.key)


class _ServerProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: WitnessServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Address) -> None:
        reply = self.server.handle(data)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


def load_state(path: str, nodes: frozenset[str]) -> WitnessState:
    """What ``path`` remembers (nothing: no file yet); a damaged file is an error naming it."""
    try:
        with open(path, encoding="utf-8") as stream:
            data = json.load(stream)
        last, outdated = data.get("last"), data.get("outdated", {})
    except FileNotFoundError:
        return WitnessState()
    except (OSError, ValueError, AttributeError) as exc:
        raise ValueError(f"{path}: witness state unreadable: {exc}") from exc
    if last is not None and (not isinstance(last, str) or last not in nodes):
        raise ValueError(f"{path}: witness state names {last!r}, not a node of this cluster")
    try:
        marks = decode_outdated(outdated, nodes) or {}
    except ValueError as exc:
        raise ValueError(f"{path}: witness state's \"outdated\": {exc}") from exc
    return WitnessState(last, marks)


def save_state(path: str, state: WitnessState) -> None:
    """Write ``{"last": ..., "outdated": {...}}`` atomically and durably."""
    write_json(path, {"last": state.last, "outdated": state.outdated}, mode=0o644, dir_mode=0o755)


async def open_witness(bind: Address, cluster: str, nodes: Iterable[str], key: bytes,
                       timeout: float, state: str | None = None) -> tuple[asyncio.DatagramTransport, WitnessServer]:
    """Bind the witness's UDP socket; the caller closes the transport."""
    server = WitnessServer(cluster, nodes, key, timeout, state=state)
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: _ServerProtocol(server), local_addr=bind)
    return transport, server


async def serve_witness(bind: Address, cluster: str, key: bytes, timeout: float, nodes: Iterable[str],
                        state: str | None = None) -> None:
    """Run the witness until cancelled. ``timeout`` is the lease (seconds); ``state``: the file
    that remembers the last holder and the outdated copies."""
    transport, _ = await open_witness(bind, cluster, nodes, key, timeout, state)
    log.warning("witness for cluster %s listening on %s:%d (lease %.1f s); no lease for the first %.1f s",
                cluster, bind[0], bind[1], timeout, timeout)
    try:
        await asyncio.Event().wait()
    finally:
        transport.close()
