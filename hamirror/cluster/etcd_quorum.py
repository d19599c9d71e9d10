"""Quorum on an etcd v3 cluster: the lease of :mod:`quorum` kept as a lease-backed key in etcd.

Keys (``P`` = ``[quorum] etcd_prefix`` + ``/`` + cluster name): ``P/holder`` (value: the holding
node's name, attached to its lease), ``P/last`` (the last node that created ``P/holder``, no
lease: it outlives every lease), ``P/alive/NODE`` (attached to NODE's lease: "heard within a
lease") and ``P/outdated/MODULE`` (no lease: the node whose copy of MODULE is outdated, the marks
of :mod:`quorum`; set and cleared only by the holder, in a transaction that checks it still holds
``P/holder``).

Each agent runs one **session**: an etcd lease of ``etcd_ttl`` seconds, granted at start and kept
alive every tick (``/v3/lease/keepalive``). A node that needs to act alone (the same *claim* as the
UDP witness: a primary module, or the peer not heard) runs one transaction per tick: "if
``P/holder`` does not exist (create_revision == 0), create it with my lease and record me in
``P/last``". It holds the key while its lease lives; when it stops claiming it deletes the key
(compare: the key is still mine). A key left by an earlier session of this node (an agent
restart) is deleted and created again. The holder key's ``create_revision`` is the **fencing
token** of the tenure: it grows with every new holder (:meth:`EtcdWitness.token`).

**Belief** (:class:`LeaseView`, as for the witness): a node believes it holds the key until
(the send time of its last successful keepalive) + ``TTL * BELIEF``. etcd deletes the key only
when the lease expires, at least ``TTL`` after the leader renewed it (after that send), and a new
etcd leader extends every lease rather than shortening it; so the belief ends at least
``TTL * (1 - BELIEF)`` before etcd can delete the key and let the other node create it. etcd
unreachable: no keepalive succeeds, the belief lapses by itself, the verdict is False.

**The peer's lease**: etcd tells a lease's remaining time in whole seconds only
(``/v3/lease/timetolive``, rounded down). A remaining time of TTL-1 means "renewed within the last
second" (:class:`PeerRenewals`); seen without a break for more than a second it proves the peer
alive (a dead peer's reading drops to TTL-2 a second after its last renewal). A reading of TTL-2 or
less proves it stale. A claimant refused by the peer's key waits in :meth:`EtcdWitness.verdict`
until one of the two is proven: stale, it waits for the key to go (the takeover), fresh, it
answers False at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import enum
import logging
import math
import ssl
import time
from collections.abc import Callable

from hamirror.cluster.etcd_client import (
    EtcdClient, EtcdError, EtcdUnavailable, b64, kvs, prefix_end, unb64,
)
from hamirror.cluster.quorum import NO_MARKS, Answer, LeaseView, LeaseWitness, Marks, apply_marks

log = logging.getLogger(__name__)

PROOF = 1.0          # etcd's TTL resolution (s): a fresh reading proves a renewal within this
SPAN = PROOF + 0.1   # fresh readings over more than this prove the holder alive (0.1 s: clock rates)
# etcd unreachable or refusing, or an answer of the wrong shape: no answer this tick, never a crash.
ANSWER_ERRORS = (EtcdUnavailable, EtcdError, OSError, ValueError, KeyError, TypeError, IndexError, AttributeError)


class Renewal(enum.Enum):
    UNKNOWN = "unknown"
    FRESH = "fresh"      # the holder renewed its lease within about a second, and keeps doing so
    STALE = "stale"      # the holder has not renewed its lease for more than a second


class PeerRenewals:
    """What the readings of one lease's remaining TTL prove about its holder (pure).

    ``observe(lease, remaining, granted, sent, received)``: one ``timetolive`` answer, asked at
    ``sent`` and answered at ``received`` (this node's clock). Two fresh readings (TTL-1) more
    than ``SPAN`` apart, in a row, prove a renewal after the first (a lease not renewed shows
    TTL-2 a second after its last renewal); the first must be recent (within ``2 * SPAN``) for
    the renewal to be, so a gap in the readings starts the proof again. ``age``, when FRESH:
    how long ago, at most, the holder renewed (from the first reading's send time)."""

    def __init__(self) -> None:
        self.lease: int | None = None
        self.fresh: list[tuple[float, float]] = []   # (sent, received) of the fresh readings in a row
        self.state = Renewal.UNKNOWN
        self.age: float | None = None
        self.proof: float | None = None              # when FRESH: the holder renewed after this time
        self.run = 0                                 # which run of fresh readings (a break starts another)

    def forget(self) -> None:
        self.lease, self.fresh, self.state, self.age, self.proof = None, [], Renewal.UNKNOWN, None, None
        self.run += 1

    def observe(self, lease: int, remaining: int, granted: int, sent: float, received: float) -> None:
        if lease != self.lease:
            self.forget()
            self.lease = lease
        self.state, self.age, self.proof = Renewal.UNKNOWN, None, None
        fresh = 0 <= remaining == granted - 1     # TTL-2 or less: stale; more than granted: a new
        if not fresh or not self.fresh or sent - self.fresh[-1][1] > 2 * SPAN:   # leader extended it
            self.fresh = []
            self.run += 1
        if not fresh:
            self.state = Renewal.STALE if 0 <= remaining <= granted - 2 else Renewal.UNKNOWN
            return
        self.fresh = [(s, r) for s, r in self.fresh if sent - r <= 2 * SPAN] + [(sent, received)]
        proofs = [s for s, r in self.fresh if sent - r > SPAN]
        if proofs:
            self.state, self.proof = Renewal.FRESH, max(proofs)
            self.age = received - self.proof


@dataclasses.dataclass(frozen=True)
class Tenure:
    """This node's current holding of the key: its lease, its token, who created the key before."""

    lease: int
    token: int
    previous: str | None


class EtcdWitness(LeaseWitness):
    """The ``[quorum] etcd`` backend of :class:`~hamirror.cluster.quorum.Witness`."""

    def __init__(self, client: EtcdClient, prefix: str, cluster: str, node: str, peer: str,
                 claim: Callable[[], bool] = lambda: True, interval: float = 0.3, ttl: int = 10,
                 clock: Callable[[], float] = time.monotonic, marks: Callable[[], Marks] = lambda: NO_MARKS,
                 still_needed: Callable[[], bool] | None = None) -> None:
        self.client, self.node, self.peer = client, node, peer
        self.claim, self.interval, self.requested_ttl, self.clock = claim, interval, ttl, clock
        self.still_needed = claim if still_needed is None else still_needed
        base = f"{prefix.rstrip('/')}/{cluster}/"
        self.holder_key, self.last_key = base + "holder", base + "last"
        self.alive_prefix, self.outdated_prefix = base + "alive/", base + "outdated/"
        self.marks = marks
        self.view = LeaseView(node)
        self.renewals = PeerRenewals()
        self._proven: tuple[int | None, int] | None = None    # the run of readings that proved the peer alive
        self.claiming = False
        self.lease: int | None = None
        self.ttl = ttl
        self.tenure: Tenure | None = None
        self.error: str | None = None
        self.errors = 0
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="etcd")

    @property
    def freshness(self) -> float:
        return 2 * SPAN + 2 * self.interval

    async def stop(self) -> None:
        """Close the connections. The key is not released: the applications keep running when
        the agent stops, so the lease lapses by itself (``etcd_ttl``) unless the agent returns."""
        await asyncio.get_running_loop().run_in_executor(self._executor, self.client.close)
        self._executor.shutdown(wait=False)

    def _release_at_once(self) -> None:
        """The holder key deleted at once, not at the next tick's exchange (``Witness.release_now``:
        a swap's old primary killed within a tick of its hand-over left its key to ``etcd_ttl``, and
        the new primary waited that long). In the worker thread, in order with the ticks' exchanges:
        a claim made after this call creates the key again."""
        try:
            self._executor.submit(self._release)
        except RuntimeError:   # stopped (the agent is ending): the key lapses with the lease, as at stop()
            pass

    # ------------------------------------------------------------------ one exchange (in the worker thread)

    def _release(self) -> None:
        if self.lease is None or self.tenure is None:   # not held: nothing to delete
            return
        try:
            deleted = self._delete_own(self.lease)
        except ANSWER_ERRORS as exc:   # the next tick's exchange deletes it
            log.info("etcd: the holder key not released at once: %s", exc)
            return
        self.tenure = None
        if deleted:
            log.info("etcd: %s released %s", self.node, self.holder_key)

    def _session(self) -> float:
        """Keep this node's lease alive (a new one if it expired): the send time of the renewal."""
        sent = self.clock()
        if self.lease is not None:
            ttl = self.client.keepalive(self.lease)
            if ttl > 0:
                self.ttl = ttl
                return sent
            log.warning("etcd lease %x expired (not renewed within %d s): a new session", self.lease, self.ttl)
            self.lease, self.tenure = None, None
            self.view.release()
            sent = self.clock()
        self.lease, self.ttl = self.client.grant(self.requested_ttl)
        self.client.put(self.alive_prefix + self.node, self.node, self.lease)
        log.info("etcd session: lease %x, %d s", self.lease, self.ttl)
        return sent

    def _alive_range(self) -> dict:
        return {"request_range": {"key": b64(self.alive_prefix), "range_end": prefix_end(self.alive_prefix)}}

    def _outdated_range(self) -> dict:
        return {"request_range": {"key": b64(self.outdated_prefix), "range_end": prefix_end(self.outdated_prefix)}}

    def _outdated(self, found: list[dict]) -> dict[str, str]:
        """The marks of the outdated keys' key-values (only those naming a node of the pair)."""
        marks = {unb64(kv.get("key"))[len(self.outdated_prefix):]: unb64(kv.get("value")) for kv in found}
        return {m: n for m, n in marks.items() if m and n in (self.node, self.peer)}

    def _mark(self, outdated: dict[str, str], marks: Marks) -> dict[str, str]:
        """Apply this holder's marks in one transaction that checks it still holds the key: the
        marks as etcd now has them."""
        assert self.lease is not None
        after = apply_marks(outdated, self.node, self.peer, marks)
        if after == outdated:
            return outdated
        ops = [{"request_put": {"key": b64(self.outdated_prefix + m), "value": b64(n)}}
               for m, n in sorted(after.items()) if outdated.get(m) != n]
        ops += [{"request_delete_range": {"key": b64(self.outdated_prefix + m)}} for m in sorted(outdated)
                if m not in after]
        done, _, _ = self.client.txn(
            [{"key": b64(self.holder_key), "target": "LEASE", "result": "EQUAL", "lease": str(self.lease)}], ops, [])
        if done:
            log.warning("etcd: outdated copies (module: node): %s",
                        ", ".join(f"{m}: {n}" for m, n in sorted(after.items())) or "none")
        return after if done else outdated

    def _delete_own(self, lease: int) -> bool:
        """Delete the holder key if it is still attached to ``lease`` (one of this node's)."""
        done, _, _ = self.client.txn(
            [{"key": b64(self.holder_key), "target": "LEASE", "result": "EQUAL", "lease": str(lease)}],
            [{"request_delete_range": {"key": b64(self.holder_key)}}], [])
        return done

    def _claim(self) -> tuple[dict | None, list[dict], list[dict]]:
        """Create the holder key unless it exists: (the holder's key-value, the alive keys, the outdated keys)."""
        assert self.lease is not None
        created, revision, responses = self.client.txn(
            [{"key": b64(self.holder_key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
            [{"request_range": {"key": b64(self.last_key)}},
             {"request_put": {"key": b64(self.holder_key), "value": b64(self.node), "lease": str(self.lease)}},
             {"request_put": {"key": b64(self.last_key), "value": b64(self.node)}},
             self._alive_range(), self._outdated_range()],
            [{"request_range": {"key": b64(self.holder_key)}}, self._alive_range(), self._outdated_range()])
        if created:
            last = kvs(responses[0])
            previous = unb64(last[0].get("value")) if last else None
            self.tenure = Tenure(self.lease, revision, previous)
            log.warning("etcd: %s holds %s (token %d, previous holder %s)", self.node, self.holder_key,
                        revision, previous or "none")
            holder = {"value": b64(self.node), "lease": str(self.lease), "create_revision": str(revision)}
            return holder, kvs(responses[3]), kvs(responses[4])
        found = kvs(responses[0])
        return (found[0] if found else None), kvs(responses[1]), kvs(responses[2])

    def _read(self) -> tuple[dict | None, list[dict], list[dict]]:
        _, _, responses = self.client.txn([], [{"request_range": {"key": b64(self.holder_key)}},
                                               self._alive_range(), self._outdated_range()], [])
        found = kvs(responses[0])
        return (found[0] if found else None), kvs(responses[1]), kvs(responses[2])

    def exchange(self, claim: bool, marks: Marks = NO_MARKS) -> tuple[float, Answer]:
        """One tick's talk with etcd: (the send time the belief rests on, what etcd says)."""
        sent = self._session()
        assert self.lease is not None
        holder, alive, outdated = self._claim() if claim else self._read()
        name, lease = holder_of(holder)
        if name == self.node and (lease != self.lease or not claim):
            # Ours but not wanted, or left by an earlier session of this node: delete, then claim anew.
            self._delete_own(lease)
            self.tenure = None
            holder, alive, outdated = self._claim() if claim else self._read()
            name, lease = holder_of(holder)
        mine = name == self.node and lease == self.lease
        if mine:
            token = int(holder.get("create_revision", 0))
            if self.tenure is None or self.tenure.token != token:     # created by a call whose answer was lost
                self.tenure = Tenure(self.lease, token, None)
        else:
            self.tenure = None
        age: float | None = 0.0 if mine else None
        if name == self.peer:
            asked = self.clock()
            remaining, granted = self.client.time_to_live(lease)
            self.renewals.observe(lease, remaining, granted, asked, self.clock())
            age = self.renewals.age
        else:
            self.renewals.forget()
        seen = tuple(sorted(unb64(kv.get("key"))[len(self.alive_prefix):] for kv in alive))
        if name == self.node and not mine:
            name = None          # an earlier session's key that would not go: not held, by nobody else either
        marked = self._outdated(outdated)
        if mine and marks != NO_MARKS:
            marked = self._mark(marked, marks)
        return sent, Answer(name, seen, age, float(self.ttl), self.tenure.previous if self.tenure else None, marked)

    # ------------------------------------------------------------------ the Witness interface

    async def ask(self, claim: bool, marks: Marks = NO_MARKS) -> bool:
        """One exchange; whether etcd answered."""
        try:
            sent, answer = await asyncio.get_running_loop().run_in_executor(self._executor, self.exchange, claim,
                                                                            marks)
        except ANSWER_ERRORS as exc:
            self.errors += 1
            if str(exc) != self.error:
                log.warning("etcd quorum: %s", exc)
            self.error = str(exc)
            return False
        self.error = None
        self.view.answered(sent, answer, self.clock())
        return True

    async def verdict(self, now: float) -> bool | None:
        claim = self.claiming = bool(self.claim())
        if not claim:
            self.view.release()
        started = self.clock()
        marks = self.marks() if claim else NO_MARKS
        answered = await self.ask(claim, marks)
        # Refused by the peer's key: wait until the peer is proven to renew its lease after this
        # claim began (alive: False), or until etcd deletes the key of a peer that stopped
        # renewing (the claim succeeds), so that a takeover is not refused for asking before the
        # dead holder's lease expired. Proven once, it holds while the fresh readings go on.
        # The wait ends too once this node no longer needs the lease (its peer heard again): it
        # holds the agent's tick (campaigns 4208, 4209, on the UDP witness's twin of this wait).
        deadline = started + self.ttl + 3 * PROOF
        while (claim and answered and self.view.answer is not None and self.view.answer.holder == self.peer
               and not self._peer_proven(started) and self.clock() < deadline):
            await asyncio.sleep(self.interval)
            if not self.still_needed():
                log.info("etcd: no longer claiming the lease (the peer is heard again): not waiting for "
                         "its holder's lease to lapse")
                break
            answered = await self.ask(claim, marks)
        self.renewed = bool(claim and answered)   # Witness.renewed
        return self.view.holds(self.clock() + self.interval) if claim else False

    def _peer_proven(self, since: float) -> bool:
        renewals = self.renewals
        if renewals.state is not Renewal.FRESH or renewals.proof is None:
            return False
        if renewals.proof >= since:
            self._proven = (renewals.lease, renewals.run)
        return self._proven == (renewals.lease, renewals.run)

    def token(self) -> int | None:
        return self.tenure.token if self.tenure is not None and self.view.holds(self.clock()) else None

    def status(self) -> dict:
        answer, now = self.view.answer, self.clock()
        return {"etcd": self.client.endpoint, "holds": self.view.holds(now), "claiming": self.claiming,
                "holder": answer.holder if answer else None, "seen": list(answer.seen) if answer else [],
                "outdated": dict(answer.outdated or {}) if answer else {},
                "answer_age": None if self.view.answered_at is None else now - self.view.answered_at,
                "token": self.token(), "lease_ttl": self.ttl, "peer_lease": self.renewals.state.value,
                "error": self.error, "errors": self.errors,
                "belief_left": max(0.0, self.view.valid_until - now) if math.isfinite(self.view.valid_until) else 0.0}


def holder_of(kv: dict | None) -> tuple[str | None, int]:
    """(node name, lease) of the holder key's key-value (None, 0 without one)."""
    return (None, 0) if kv is None else (unb64(kv.get("value")), int(kv.get("lease", 0)))


def from_config(cluster, claim: Callable[[], bool], clock: Callable[[], float],
                marks: Callable[[], Marks] = lambda: NO_MARKS,
                still_needed: Callable[[], bool] | None = None) -> EtcdWitness:
    """The backend of a :class:`ClusterConfig` whose ``[quorum] etcd`` is set (TLS and
    credentials read now: a problem stops the agent's start, naming the file)."""
    from hamirror.secretfile import read_secret

    quorum = cluster.quorum
    tls = None
    if any(url.startswith("https://") for url in quorum.etcd):
        tls = ssl.create_default_context(cafile=quorum.etcd_ca_file)
        if quorum.etcd_cert_file is not None:
            tls.load_cert_chain(quorum.etcd_cert_file, quorum.etcd_key_file)
    credentials = None
    if quorum.etcd_user is not None:
        password = read_secret(quorum.etcd_password_file, "the etcd password", 4096).decode().strip()
        credentials = (quorum.etcd_user, password)
    interval = cluster.heartbeat.interval
    client = EtcdClient(quorum.etcd, timeout=max(1.0, 2 * interval), tls=tls, credentials=credentials)
    return EtcdWitness(client, quorum.etcd_prefix, cluster.name, cluster.local_name, cluster.peer_node.name,
                       claim=claim, interval=interval, ttl=quorum.etcd_ttl, clock=clock, marks=marks,
                       still_needed=still_needed)
