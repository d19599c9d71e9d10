"""Quorum: a witness that lets exactly one side of a partition act alone.

The witness is a third machine that only keeps a **lease**, held by at most one node at a time.
Each node asks it every heartbeat interval (UDP, one request, one answer); a request carries a
*claim* flag, set when the node needs to act alone: it runs a primary module, or it does not hear
its peer (a takeover may be due). The witness's rule (:class:`~hamirror.cluster.witness_server.LeaseBook`):

- a claim is granted when nobody holds the lease: the first claimant gets it;
- the holder keeps it as long as it keeps asking: the lease lapses ``lease`` seconds after the
  holder was last heard; a request *without* claim from the holder releases it (after a swap the
  new primary can take it at once);
- after its own start the witness grants nothing for ``lease`` seconds, so a lease granted
  before a restart has lapsed everywhere before another can be granted;
- it remembers, durably (a state file written before the grant is answered), the last node that
  held the lease, and tells each holder who held it before its current tenure (``previous``).
  A holder that was also the previous one knows the peer has not held it since: the peer cannot
  have acted alone in between, so this node's data is the newest. That is how a primary that
  stepped down because the witness was down comes back when it returns and the peer is still
  lost (issue 15, finding 11).

**Outdated copies** (DRBD's outdate-peer, kept by the witness): a node that acts alone for a
module (a primary going on without its peer, a takeover, an operator's ``prim``) first has the
witness record, durably, that the *peer's* copy of that module is outdated (:class:`Marks`, request
field ``o``); the answer lists every mark (``x``: module -> node whose copy is outdated) and
``decide()`` lets the node act alone only once its peer's mark is in this tick's answer. A node
whose own copy is marked never takes over by itself: it cannot know what the other acknowledged
alone, even after a freeze, a restart or a power loss of that node (the double fault: the primary
went on alone while it still had the lease, then lost the witness or its power; campaign 3009's
fix closed only the single fault). Only the lease holder changes marks; an operator's ``prim``
may mark the peer even where its own copy is marked (``f``), and a primary mirrored in sync with
its peer again clears its module's mark (``u``). The server side is :mod:`witness_server`.

The answer names the holder and the nodes heard within ``lease``. A node's verdict
(:class:`LeaseView`) is True only while it holds the lease *by its own reckoning*: from the time it
*sent* the request that was answered "you hold it", for a quarter of the lease (``BELIEF``). The
witness counts from the *reception* of that request, later, for the full lease. So a node's belief
always ends three quarters of a lease before the witness can grant the lease to the other node: two
nodes never both believe they hold it, whatever is cut or lost (clock *rates* matter, not clock
values). Those three quarters are the time a primary has to step down (stop_prim, VIP removed,
unmount; a flush can wait ``peer_timeout`` for the lost peer) before the other may take over, so the
default lease (``hamirror witness --timeout``) is five heartbeat timeouts (10 s): the belief lasts
2.5 s, and the primary has 7.5 s to step down (measured in the lab: about 5.5 s for the demo when the
peer is cut, most of it the flush waiting for ``peer_timeout``).

How ``decide()`` uses it (``quorum`` only matters while the peer is not heard): a SECOND takes over
only with True; a primary that does not hear its peer steps down with False. In a partition between
the nodes, the holder (normally the primary, the only one claiming while the peer is heard) keeps
running and the other side is refused. If the primary is cut from both the peer and the witness, its
belief ends (half a lease) before the witness lapses the lease (a full lease), so it has stepped down
before the peer gets the lease and takes over. A takeover with a witness therefore waits for the
lease to lapse (10 s with the defaults, instead of the 2 s heartbeat timeout).

The witness machine itself being down changes nothing while both nodes hear each other (quorum is
not consulted then): the verdict is False, so neither node may act *alone*. It is the price of the
guarantee: a primary that loses the witness and then its peer stops, because it cannot tell "the
witness is down" from "I am cut off and the peer holds the lease".

Wire: requests and answers are heartbeat datagrams (:mod:`heartbeat`'s signing, validation and
replay checks, reused as they are) signed with a key derived from the cluster key, so neither can be
replayed as a heartbeat or the other way round. A request is the node's heartbeat with an extra
``q`` (claim); an answer is the witness's (sender name ``witness``) with the request's boot and
counter echoed (``rb``, ``rs``), the holder ``h``, the holder's silence ``a``, the nodes seen
``seen`` and the lease ``l``. A node accepts only the answer to a request it has pending.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import math
import time
from collections.abc import Callable, Iterable

from hamirror.cluster.heartbeat import (
    MAC_SIZE, MAX_NAME, HeartbeatRejected, Validator, new_boot_id, sign,
)

log = logging.getLogger(__name__)
Address = tuple[str, int]

WITNESS_NAME = "witness"
BELIEF = 0.25           # a node trusts a granted lease for this fraction of it, from its request's send
KEY_CONTEXT = b"hamirror witness v1"


def boottime() -> float:
    """A clock that keeps counting across a freeze *and* a system suspend (CLOCK_BOOTTIME):
    a lease believed on it can only end early, never late (CLOCK_MONOTONIC stops in suspend)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def witness_key(key: bytes) -> bytes:
    """The key of witness traffic, derived from the cluster key (domain separation from heartbeats)."""
    return hmac.new(key, KEY_CONTEXT, hashlib.sha256).digest()


@dataclasses.dataclass(frozen=True)
class Answer:
    """What the witness says: who holds the lease, since when it is silent, whom it heard."""

    holder: str | None
    seen: tuple[str, ...]
    age: float | None          # seconds since the holder was last heard (None: no holder)
    lease: float
    previous: str | None = None   # who held the lease before the holder's current tenure (None: nobody known)
    outdated: dict[str, str] | None = None   # module -> node whose copy is outdated (None: a witness without marks)


MAX_MARKS = 1024        # modules named in one request, or marked at the witness
MAX_LEASE = 3600.0      # seconds: a witness's lease (``--timeout``), and what a node accepts in an answer


@dataclasses.dataclass(frozen=True)
class Marks:
    """What a node asks the witness to record with a request (only the holder's are applied):
    ``outdate``: modules this node acts alone for, so the peer's copies are outdated; ``force``:
    of those, the ones an operator forces (``prim``), marked even where this node's own copy is;
    ``current``: modules mirrored in sync again, whose marks go."""

    outdate: frozenset[str] = frozenset()
    force: frozenset[str] = frozenset()
    current: frozenset[str] = frozenset()

    def fields(self) -> dict[str, list[str]]:
        """The request's fields (none when empty: a request as before marks existed)."""
        named = {"o": self.outdate, "f": self.force, "u": self.current}
        return {key: sorted(value) for key, value in named.items() if value}

    @classmethod
    def from_fields(cls, fields: dict) -> Marks:
        """The marks of a request's fields; ValueError for anything but short lists of names."""
        lists = []
        for key in ("o", "f", "u"):
            value = fields.get(key, [])
            if (not isinstance(value, list) or len(value) > MAX_MARKS
                    or not all(isinstance(v, str) and 0 < len(v) <= MAX_NAME for v in value)):
                raise ValueError(f"field {key!r}: not a list of at most {MAX_MARKS} module names")
            lists.append(frozenset(value))
        return cls(*lists)


NO_MARKS = Marks()


def apply_marks(outdated: dict[str, str], holder: str, peer: str, marks: Marks) -> dict[str, str]:
    """The marks after the lease holder's request (pure; both backends): the marks of
    ``current`` go; the peer's copies of ``outdate`` are marked, except where the holder's own
    copy is marked and the operator does not force it (a node whose copy is outdated cannot
    make the other's outdated: it would undo the mark that protects the other's writes)."""
    after = {m: n for m, n in outdated.items() if m not in marks.current}
    for module in marks.outdate:
        if after.get(module) != holder or module in marks.force:
            after[module] = peer
    return after if len(after) <= MAX_MARKS else dict(outdated)


class LeaseView:
    """A node's belief about the lease (pure): True only within ``BELIEF`` of a lease from a grant's send time."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.valid_until = -math.inf
        self.answer: Answer | None = None
        self.answered_at: float | None = None

    def answered(self, sent_at: float, answer: Answer, now: float) -> None:
        """The answer to the request sent at ``sent_at`` arrived at ``now``."""
        self.answer, self.answered_at = answer, now
        if answer.holder == self.node:
            self.valid_until = max(self.valid_until, sent_at + answer.lease * BELIEF)
        else:
            self.valid_until = -math.inf

    def release(self) -> None:
        """This node stops claiming: it stops believing at once (the release reaches the witness later)."""
        self.valid_until = -math.inf

    def holds(self, now: float) -> bool:
        return now < self.valid_until


class Witness(abc.ABC):
    """Answers "may this node act alone?" for :func:`decide` (``ModuleView.quorum``)."""

    async def start(self) -> None:
        """Open sockets (nothing by default)."""

    async def stop(self) -> None:
        """Close sockets (nothing by default)."""

    # Whether the last verdict rests on an answer to this tick's request (a renewal), not only on
    # the belief from earlier answers (ModuleView.renewed).
    renewed: bool = True

    @abc.abstractmethod
    async def verdict(self, now: float) -> bool | None:
        """True: may act alone; False: may not; None: no witness (decide without quorum)."""

    def vouches(self, now: float) -> bool:
        """Whether this node holds the lease and held it last before this tenure too: the peer
        has not held it since, so it cannot have acted alone meanwhile."""
        return False

    def granted_after_peer(self, now: float) -> bool:
        """Whether this node holds the lease now and the peer held it last before this tenure:
        the peer may have acted alone since this node's data was last current."""
        return False

    def peer_holds(self, now: float, silence: float | None = None) -> bool:
        """Whether the witness said, in its latest answer, that the peer holds the lease and asked
        for it within two intervals, and two intervals after this node last heard the peer
        (``silence``: since then; None: never): the peer is alive, only cut from this node, and
        may act alone."""
        return False

    def peer_asks(self, now: float) -> bool:
        """Whether the witness's latest answer, fresh (two intervals), lists the peer among the
        nodes it heard within its lease: the peer may be alive though this node does not hear it."""
        return False

    def release_now(self) -> None:
        """This node stopped needing the lease between two ticks (its last primary module left that
        role): tell the witness now rather than with the next tick's request (nothing by default)."""

    def keeps_marks(self) -> bool:
        """Whether the witness records outdated copies (:class:`Marks`): False without a witness,
        or with one older than marks (then acting alone needs no mark, as before)."""
        return False

    def outdated(self, module: str) -> str | None:
        """The node whose copy of ``module`` the witness's latest answer marks outdated (None: none)."""
        return None

    def marked(self) -> frozenset[str]:
        """Every module the witness's latest answer marks (one copy outdated), configured or not."""
        return frozenset()

    def token(self) -> int | None:
        """The fencing token of this node's current tenure (a number that grows with each new
        holder), None when it holds none or the backend has no tokens (the UDP witness)."""
        return None

    def status(self) -> dict | None:
        """For ``hamirror status``; None without a witness."""
        return None


class LeaseWitness(Witness):
    """What every lease backend derives from its latest answer (:class:`LeaseView`): whether it
    vouches for this node, holds the peer alive, heard the peer. Subclasses set ``view``,
    ``clock``, ``interval``, ``peer``, ``claiming`` and may widen ``freshness`` (how old the
    holder's last renewal may be and still count as alive: two intervals for the witness)."""

    view: LeaseView
    clock: Callable[[], float]
    interval: float
    peer: str
    claiming: bool
    claim: Callable[[], bool]
    still_needed: Callable[[], bool]   # asked while a verdict waits on a refusal (``claim`` by default)

    @property
    def freshness(self) -> float:
        return 2 * self.interval

    def vouches(self, now: float) -> bool:
        answer = self.view.answer
        return (self.claiming and self.view.holds(self.clock() + self.interval) and answer is not None
                and answer.holder == self.view.node and answer.previous == self.view.node)

    def granted_after_peer(self, now: float) -> bool:
        answer = self.view.answer
        return (self.view.holds(self.clock()) and answer is not None and answer.holder == self.view.node
                and answer.previous == self.peer)

    def peer_holds(self, now: float, silence: float | None = None) -> bool:
        # A fresh answer about a fresh holder only: a dead peer's lease is still "held" until it
        # lapses, but its silence at the witness is about ours, not two intervals shorter.
        answer, at, margin = self.view.answer, self.view.answered_at, 2 * self.interval
        return (answer is not None and at is not None and self.clock() - at <= margin
                and answer.holder == self.peer and answer.age is not None and answer.age <= self.freshness
                and (silence is None or answer.age + margin <= silence))

    def peer_asks(self, now: float) -> bool:
        answer, at = self.view.answer, self.view.answered_at
        return (answer is not None and at is not None and self.clock() - at <= 2 * self.interval
                and self.peer in answer.seen)

    def release_now(self) -> None:
        """Unless this node still claims: it stops believing at once, and the backend lets go now."""
        if self.claim():
            return
        self.claiming = False
        self.view.release()
        self._release_at_once()

    @abc.abstractmethod
    def _release_at_once(self) -> None:
        """The backend's release, between two ticks."""

    def keeps_marks(self) -> bool:
        answer = self.view.answer
        return answer is None or answer.outdated is not None

    def outdated(self, module: str) -> str | None:
        answer = self.view.answer
        return None if answer is None or answer.outdated is None else answer.outdated.get(module)

    def marked(self) -> frozenset[str]:
        answer = self.view.answer
        return frozenset() if answer is None or answer.outdated is None else frozenset(answer.outdated)


class NoWitness(Witness):
    """No ``[quorum]``: decisions are made without quorum."""

    async def verdict(self, now: float) -> bool | None:
        return None


# ------------------------------------------------------------------ wire


def datagram_body(cluster: str, sender: str, boot: str, counter: int, wall: float, **extra: object) -> bytes:
    """A heartbeat-shaped body (v, c, n, b, s, t, i, m) with extra fields."""
    body = {"v": 1, "c": cluster, "n": sender, "b": boot, "s": counter, "t": wall, "i": 0, "m": {}, **extra}
    return json.dumps(body, separators=(",", ":")).encode()


def datagram_fields(data: bytes) -> dict:
    """The fields of an already validated datagram (its MAC was checked)."""
    return json.loads(data[MAC_SIZE:])


def encode_request(cluster: str, node: str, boot: str, counter: int, wall: float, claim: bool, key: bytes,
                   marks: Marks = NO_MARKS) -> bytes:
    return sign(datagram_body(cluster, node, boot, counter, wall, q=claim, **marks.fields()), witness_key(key))


def seconds(value: object, key: str, high: float = math.inf, positive: bool = False) -> float:
    """An answer's duration field: a finite number from 0 (excluded when ``positive``) to ``high``;
    ValueError otherwise. JSON lets NaN and Infinity through, and a lease of a year would hold a
    claim's wait for it, the agent's tick with it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"field {key!r}: not a number")
    number = float(value)
    if not (math.isfinite(number) and 0 <= number <= high) or (positive and number == 0):
        raise ValueError(f"field {key!r}: {value!r} out of range")
    return number


def decode_outdated(value: object, nodes: Iterable[str]) -> dict[str, str] | None:
    """An answer's ``x`` (None: absent, a witness without marks); ValueError unless it maps
    module names to nodes of the pair."""
    if value is None:
        return None
    known = set(nodes)
    if (not isinstance(value, dict) or len(value) > MAX_MARKS
            or not all(isinstance(m, str) and len(m) <= MAX_NAME and n in known for m, n in value.items())):
        raise ValueError("field 'x': not a map of module names to nodes of this pair")
    return dict(value)


# ------------------------------------------------------------------ node side


class _ClientProtocol(asyncio.DatagramProtocol):
    def __init__(self, client: UdpWitness) -> None:
        self.client = client

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.client.received(data)

    def error_received(self, exc: Exception) -> None:      # ICMP unreachable: the witness is down
        log.debug("witness: %s", exc)


class UdpWitness(LeaseWitness):
    """Asks the witness at ``endpoint`` on every :meth:`verdict` (once per tick).

    ``claim()`` says whether this node needs the lease now (a primary module, or the peer not
    heard). A verdict waits for the answer at most ``wait`` seconds; with no answer the belief
    from earlier answers decides (it lapses by itself). When claiming, refused, and the holder has
    been silent for more than two intervals, it waits for the lease to lapse and asks once more, so
    a takeover is not refused merely because it asked a moment before the lapse.
    """

    def __init__(self, endpoint: Address, cluster: str, node: str, peer: str, key: bytes,
                 claim: Callable[[], bool] = lambda: True, interval: float = 0.3,
                 wait: float | None = None, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, marks: Callable[[], Marks] = lambda: NO_MARKS,
                 still_needed: Callable[[], bool] | None = None) -> None:
        if WITNESS_NAME in (node, peer):
            raise ValueError(f"a node may not be named {WITNESS_NAME!r}")
        self.endpoint, self.cluster, self.node, self.peer = endpoint, cluster, node, peer
        self.key, self.claim, self.interval, self.marks = key, claim, interval, marks
        self.still_needed = claim if still_needed is None else still_needed
        self.asking = NO_MARKS                        # the marks this tick's requests carry
        self.wait = interval if wait is None else wait
        self.clock, self.wall = clock, wall
        self.view = LeaseView(node)
        self.validator = Validator(cluster, node, {WITNESS_NAME}, witness_key(key))
        self.boot, self.counter = new_boot_id(), 0
        self.pending: dict[int, float] = {}           # counter -> send time (monotonic)
        self._arrived = asyncio.Event()
        self._transport: asyncio.DatagramTransport | None = None
        self.claiming = False

    async def start(self) -> None:
        family = 0
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: _ClientProtocol(self), remote_addr=self.endpoint, family=family)
        self._transport = transport

    async def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def received(self, data: bytes) -> None:
        """One datagram from the witness: accepted only as the answer to a pending request."""
        try:
            self.validator.accept(data, self.wall(), 0)
            fields = datagram_fields(data)
            counter = fields["rs"]
            if fields.get("to") != self.node or fields.get("rb") != self.boot or counter not in self.pending:
                raise ValueError("not an answer to a pending request")
            holder, age, previous = fields["h"], fields["a"], fields.get("p")
            lease = seconds(fields["l"], "l", MAX_LEASE, positive=True)
            answer = Answer(holder if isinstance(holder, str) else None,
                            tuple(str(n) for n in fields["seen"]), None if age is None else seconds(age, "a"), lease,
                            previous if isinstance(previous, str) else None,
                            decode_outdated(fields.get("x"), (self.node, self.peer)))
        except (HeartbeatRejected, ValueError, TypeError, KeyError) as exc:
            log.debug("witness answer refused: %s", exc)
            return
        sent_at = self.pending[counter]
        for c in [c for c in self.pending if c <= counter]:
            del self.pending[c]
        self.view.answered(sent_at, answer, self.clock())
        self._arrived.set()

    def send(self, claim: bool) -> None:
        self.counter += 1
        self.pending[self.counter] = self.clock()
        while len(self.pending) > 32:
            del self.pending[min(self.pending)]
        data = encode_request(self.cluster, self.node, self.boot, self.counter, self.wall(), claim, self.key,
                              self.asking if claim else NO_MARKS)
        if self._transport is not None:
            try:
                self._transport.sendto(data)
            except OSError as exc:
                log.debug("witness request not sent: %s", exc)

    def _release_at_once(self) -> None:
        """A request without claim, sent at once (its answer is taken as any answer is): a swap's old
        primary that dies within a tick of its hand-over, before the tick's request released the
        lease, made the new primary wait for the lease to lapse (campaign 4107: 10 s)."""
        self.send(False)

    async def ask(self, claim: bool) -> bool:
        """Send one request and wait for its answer (at most ``wait``); whether it arrived."""
        self._arrived.clear()
        self.send(claim)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._arrived.wait(), self.wait)
            return True
        return False

    async def verdict(self, now: float) -> bool | None:
        claim = self.claiming = bool(self.claim())
        if not claim:
            self.view.release()
        self.asking = self.marks() if claim else NO_MARKS
        answered = await self.ask(claim)
        if claim and answered and self._refused_by_silent_holder():
            answered = await self._await_lapse()
        self.renewed = bool(claim and answered)
        # With a margin of one interval: a verdict given now still holds when it is acted on.
        return self.view.holds(self.clock() + self.interval) if claim else False

    def _refused_by_silent_holder(self) -> bool:
        answer = self.view.answer
        return (answer is not None and answer.holder not in (None, self.node)
                and answer.age is not None and answer.age > 2 * self.interval)

    async def _await_lapse(self) -> bool:
        """Refused by a holder silent for two intervals: ask again every interval until the lease
        is granted here, the holder renews, or its lease has lapsed (plus half a wait), so that a
        takeover is not refused for asking a moment before the lapse. The wait ends as soon as
        this node no longer needs the lease (``still_needed``: its peer heard again): it holds the
        agent's tick, and with it the secondary's receiver restart, which waited 3-6 s for a lapse
        nobody needed any more (campaigns 4208, 4209). Whether the last request was answered."""
        answer = self.view.answer
        assert answer is not None and answer.age is not None
        deadline = self.clock() + max(0.0, answer.lease - answer.age) + self.wait / 2
        answered = True
        while self.clock() < deadline:
            await asyncio.sleep(min(self.interval, max(0.0, deadline - self.clock())))
            if not self.still_needed():
                log.info("witness: no longer claiming the lease (the peer is heard again): not waiting "
                         "for its holder's lease to lapse")
                break
            answered = await self.ask(True)
            if answered and not self._refused_by_silent_holder():
                break
        return answered

    def status(self) -> dict:
        answer, now = self.view.answer, self.clock()
        return {"witness": f"{self.endpoint[0]}:{self.endpoint[1]}", "holds": self.view.holds(now),
                "claiming": self.claiming, "holder": answer.holder if answer else None,
                "seen": list(answer.seen) if answer else [],
                "outdated": dict(answer.outdated or {}) if answer else {},
                "answer_age": None if self.view.answered_at is None else now - self.view.answered_at,
                "rejected": {r.value: n for r, n in self.validator.rejected.items()}}


def build(cluster, claim: Callable[[], bool], marks: Callable[[], Marks] = lambda: NO_MARKS,
          still_needed: Callable[[], bool] | None = None) -> Witness:
    """The witness of a :class:`ClusterConfig`: :class:`NoWitness` without ``[quorum] witness``
    or ``etcd`` (:mod:`etcd_quorum` for the latter). ``still_needed``: whether the lease is still
    needed while a verdict waits on a refusal (``claim`` when None)."""
    from hamirror.cluster.heartbeat import load_cluster_key

    if cluster.quorum.etcd is not None:
        from hamirror.cluster.etcd_quorum import from_config
        return from_config(cluster, claim, clock=boottime, marks=marks, still_needed=still_needed)
    endpoint = cluster.quorum.witness_endpoint if cluster.quorum.witness else None
    if endpoint is None:
        return NoWitness()
    return UdpWitness(endpoint, cluster.name, cluster.local_name, cluster.peer_node.name,
                      load_cluster_key(cluster.cluster_key_file), claim=claim,
                      interval=cluster.heartbeat.interval, clock=boottime, marks=marks, still_needed=still_needed)
