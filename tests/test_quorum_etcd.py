"""The etcd quorum backend against a real three-member etcd cluster on 127.0.0.1 (Debian's
etcd-server): grant, renewal, release, lapse, members and the leader killed, all killed, and two
clients that never both believe they hold the key whatever is killed or paused."""

from __future__ import annotations

import asyncio
import random
import signal
import time

import pytest

from hamirror.cluster.etcd_client import EtcdClient, EtcdUnavailable
from hamirror.cluster.etcd_quorum import EtcdWitness, PeerRenewals, Renewal
from hamirror.cluster.quorum import BELIEF, NO_MARKS, Marks
from tests.etcd_cluster import etcd_cluster, free_ports, needs_etcd  # noqa: F401 - the fixture

TTL = 3            # etcd's smallest with its default election timeout is 2 s
INTERVAL = 0.1

pytestmark = needs_etcd


def node(urls: list[str], name: str, claim: dict[str, bool], ttl: int = TTL,
         marks: dict[str, Marks] | None = None) -> EtcdWitness:
    peer = "node2" if name == "node1" else "node1"
    return EtcdWitness(EtcdClient(urls, timeout=0.5), "/t", "lab", name, peer, claim=lambda: claim[name],
                       interval=INTERVAL, ttl=ttl, marks=lambda: (marks or {}).get(name, NO_MARKS))


async def ticks(*nodes: EtcdWitness, seconds: float) -> list[tuple[bool | None, ...]]:
    """Each node ticks on its own (as each agent does) for ``seconds``: the set of verdicts each
    gave, and every 5 ms a check that no two believe they hold the key."""
    verdicts: list[set] = [set() for _ in nodes]
    deadline = time.monotonic() + seconds

    async def run(i: int) -> None:
        while time.monotonic() < deadline:
            verdicts[i].add(await nodes[i].verdict(time.monotonic()))
            await asyncio.sleep(INTERVAL)

    tasks = [asyncio.create_task(run(i)) for i in range(len(nodes))]
    while time.monotonic() < deadline:
        assert sum(n.view.holds(time.monotonic()) for n in nodes) <= 1
        await asyncio.sleep(0.005)
    await asyncio.gather(*tasks)
    return [tuple(sorted(v, key=str)) for v in verdicts]


def test_grant_renew_release_token_and_vouch(etcd_cluster):
    async def scenario() -> None:
        claim = {"node1": True, "node2": False}
        n1, n2 = node(etcd_cluster.urls, "node1", claim), node(etcd_cluster.urls, "node2", claim)
        try:
            assert await n1.verdict(0) is True
            first = n1.token()
            assert first is not None and n1.status()["holder"] == "node1" and not n1.vouches(0)
            assert await n2.verdict(0) is False and n2.token() is None
            assert n2.status()["seen"] == ["node1", "node2"] and n2.peer_asks(0)
            # Renewed every tick, for longer than the TTL: held all along, same tenure.
            assert await ticks(n1, n2, seconds=TTL + 1) == [(True,), (False,)]
            assert n1.token() == first
            # Released: the other node takes it at once, with a newer token, not vouched (node1 was last).
            claim.update(node1=False, node2=True)
            assert await n1.verdict(0) is False and n1.token() is None
            assert await n2.verdict(0) is True and n2.token() > first and not n2.vouches(0)
            # Back and forth: a node that created the key last before this tenure is vouched.
            claim.update(node1=True, node2=False)
            assert await n2.verdict(0) is False
            assert await n1.verdict(0) is True and not n1.vouches(0)
            claim["node1"] = False
            await n1.verdict(0)
            claim["node1"] = True
            assert await n1.verdict(0) is True and n1.vouches(0)
            # An agent restart (a new session, same node) takes its own key over at once.
            n1b = node(etcd_cluster.urls, "node1", claim)
            assert await n1b.verdict(0) is True and n1b.vouches(0) and n1b.token() > n1.token()
            await n1b.stop()
        finally:
            await n1.stop()
            await n2.stop()

    asyncio.run(scenario())


def test_a_node_that_stops_needing_the_key_deletes_it_at_once_not_at_its_next_tick(etcd_cluster):
    """Campaign 4107's window on etcd: a swap's old primary killed within a tick of its hand-over,
    before the tick's exchange deleted its key, left it to its lease (etcd_ttl): the new primary
    waited that long. The agent releases as the hand-over ends, and only if nothing here needs it."""
    async def scenario() -> None:
        claim = {"node1": True, "node2": False}
        ttl = 8
        n1, n2 = node(etcd_cluster.urls, "node1", claim, ttl), node(etcd_cluster.urls, "node2", claim, ttl)
        loop = asyncio.get_running_loop()
        try:
            assert await n1.verdict(0) is True
            first = n1.token()
            n1.release_now()                     # still needed (a primary module, or the peer unheard)
            await loop.run_in_executor(n1._executor, lambda: None)
            assert n1.view.holds(time.monotonic()) and n1.token() == first
            claim.update(node1=False, node2=True)
            n1.release_now()                     # ... and no tick of node1's after it: it was killed
            await loop.run_in_executor(n1._executor, lambda: None)
            assert not n1.view.holds(time.monotonic()) and not n1.claiming and n1.token() is None
            started = time.monotonic()
            assert await n2.verdict(0) is True and n2.token() > first
            assert time.monotonic() - started < ttl / 2, "granted only once node1's lease lapsed"
        finally:
            await n1.stop()
            await n2.stop()

    asyncio.run(scenario())


def test_a_release_after_the_witness_stopped_does_nothing(etcd_cluster):
    """A sequence that ends while the agent stops: the key lapses with the lease, as at stop()."""
    claim = {"node1": False, "node2": False}
    n1 = node(etcd_cluster.urls, "node1", claim)
    asyncio.run(n1.stop())
    n1.release_now()
    assert not n1.claiming


def test_the_holder_marks_outdated_copies_in_etcd_and_a_marked_node_cannot_undo_them(etcd_cluster):
    """The marks of quorum.py on etcd: only the holder's requests change them, a node whose copy
    is marked cannot mark the other's unless forced, and they outlive every session."""
    async def scenario() -> None:
        claim = {"node1": True, "node2": True}
        marks = {"node1": Marks(outdate=frozenset({"db"})), "node2": Marks(outdate=frozenset({"db", "web"}))}
        n1 = node(etcd_cluster.urls, "node1", claim, marks=marks)
        n2 = node(etcd_cluster.urls, "node2", claim, marks=marks)
        try:
            assert await n1.verdict(0) is True and n1.outdated("db") == "node2" and n1.keeps_marks()
            assert await ticks(n1, n2, seconds=2.0) == [(True,), (False,)]   # refused: its marks count for nothing
            assert (n2.outdated("db"), n2.outdated("web")) == ("node2", None)
            claim["node1"] = False                              # node1 lets go: node2 holds the key
            await n1.verdict(0)
            assert await n2.verdict(0) is True
            assert (n2.outdated("db"), n2.outdated("web")) == ("node2", "node1")
            marks["node2"] = Marks(outdate=frozenset({"db"}), force=frozenset({"db"}))
            assert await n2.verdict(0) is True and n2.outdated("db") == "node1"
            marks["node2"] = Marks(current=frozenset({"db", "web"}))
            assert await n2.verdict(0) is True and (n2.outdated("db"), n2.outdated("web")) == (None, None)
            marks["node2"] = Marks(outdate=frozenset({"web"}))
            await n2.verdict(0)
            again = node(etcd_cluster.urls, "node1", claim)     # a new session reads what etcd keeps
            assert await again.verdict(0) is False and again.outdated("web") == "node1"
            await again.stop()
            marks["node2"] = Marks(current=frozenset({"web"}))
            await n2.verdict(0)
        finally:
            await n1.stop()
            await n2.stop()

    asyncio.run(scenario())


def test_lapse_the_belief_ends_before_the_other_node_is_granted(etcd_cluster):
    async def scenario() -> None:
        claim = {"node1": True, "node2": True}
        n1, n2 = node(etcd_cluster.urls, "node1", claim), node(etcd_cluster.urls, "node2", claim)
        try:
            assert await n1.verdict(0) is True
            # A partition between the nodes: both claim; the holder, renewing, is proven alive.
            assert await ticks(n1, n2, seconds=2.0) == [(True,), (False,)]
            assert await n2.verdict(0) is False             # at once: proven alive, by the fresh readings
            assert n2.renewals.state is Renewal.FRESH and n2.peer_holds(0, silence=10.0)
            assert not n2.peer_holds(0, silence=0.5)          # renewed too close to our last hearing
            # node1 goes silent: its belief ends TTL*(1-BELIEF) before etcd can give node2 the key.
            while n1.view.holds(time.monotonic()):
                await asyncio.sleep(0.01)
            lost = time.monotonic()
            for _ in range(10 * TTL):                        # until etcd expires node1's lease
                if await n2.verdict(0):
                    break
                await asyncio.sleep(INTERVAL)
            assert n2.view.holds(time.monotonic()) and n2.token() is not None
            assert time.monotonic() - lost >= TTL * (1 - BELIEF) - 0.05
            # node1 back (a new session: its lease expired), node2 renewing: node1 is refused.
            assert await ticks(n1, n2, seconds=2.0) == [(False,), (True,)]
            assert n1.status()["holder"] == "node2" and n1.renewals.state is Renewal.FRESH
        finally:
            await n1.stop()
            await n2.stop()

    asyncio.run(scenario())


def test_a_claim_waiting_for_a_silent_holders_lapse_ends_when_the_key_is_no_longer_needed(etcd_cluster):
    """Campaigns 4208/4209 (there on the UDP witness): a node that claimed because it did not hear
    its peer, refused by the peer's key gone quiet, waited for that lease to lapse, its agent's tick
    with it, though it heard the peer again a moment later. The wait ends once ``still_needed``
    says no, and the key stays the peer's."""
    async def scenario() -> None:
        claim = {"node1": True, "node2": True}
        n1, n2 = node(etcd_cluster.urls, "node1", claim), node(etcd_cluster.urls, "node2", claim)
        try:
            assert await n1.verdict(0) is True                 # then node1 goes quiet (its agent restarting)
            await asyncio.sleep(3 * INTERVAL)
            needed_until = time.monotonic() + 0.3
            n2.still_needed = lambda: time.monotonic() < needed_until
            started = time.monotonic()
            assert await n2.verdict(0) is False
            assert time.monotonic() - started < 1.5, "waited for a lapse no longer needed"
            assert n2.status()["holder"] == "node1" and n2.token() is None
        finally:
            await n1.stop()
            await n2.stop()

    asyncio.run(scenario())


def test_a_member_then_the_leader_killed_the_holder_keeps_the_key(etcd_cluster):
    async def scenario() -> None:
        claim = {"node1": True, "node2": True}
        # A longer TTL: an election on a loaded machine may keep every request waiting for seconds.
        n1, n2 = (node(etcd_cluster.urls, name, claim, ttl=6) for name in ("node1", "node2"))
        try:
            assert await n1.verdict(0) is True
            token = n1.token()
            leader = etcd_cluster.leader()
            follower = next(i for i in range(3) if i != leader)
            etcd_cluster.kill(follower)
            assert await ticks(n1, n2, seconds=1.5) == [(True,), (False,)]
            etcd_cluster.restart(follower)
            etcd_cluster.wait_member(follower)
            etcd_cluster.kill(etcd_cluster.wait_leader())      # the leader now
            first, second = await ticks(n1, n2, seconds=6.0)
            assert second == (False,)                            # node2 never granted
            assert True in first and n1.tenure.token == token   # node1 holds it again, the same tenure
        finally:
            await n1.stop()
            await n2.stop()

    asyncio.run(scenario())


def test_all_killed_the_verdict_is_false_within_the_belief(etcd_cluster):
    async def scenario() -> None:
        claim = {"node1": True, "node2": False}
        n1 = node(etcd_cluster.urls, "node1", claim)
        try:
            assert await n1.verdict(0) is True
            for i in range(3):
                etcd_cluster.kill(i)
            killed = time.monotonic()
            while await n1.verdict(0):
                await asyncio.sleep(INTERVAL)
            assert time.monotonic() - killed <= TTL * BELIEF + 3 * 0.5   # belief, and the calls' timeouts
            assert n1.status()["error"] and not n1.view.holds(time.monotonic() + INTERVAL)
        finally:
            await n1.stop()

    asyncio.run(scenario())


def test_the_client_tries_the_next_endpoint(etcd_cluster):
    dead = f"http://127.0.0.1:{free_ports(1)[0]}"
    client = EtcdClient([dead, etcd_cluster.urls[1]], timeout=0.5)
    lease, ttl = client.grant(5)
    assert ttl == 5 and client.endpoint == etcd_cluster.urls[1] and client.keepalive(lease) == 5
    client.revoke(lease)
    assert client.keepalive(lease) == 0
    client.revoke(lease)                                       # gone already: no error
    with pytest.raises(EtcdUnavailable, match="127.0.0.1"):
        EtcdClient([dead], timeout=0.5).grant(5)
    client.close()


def test_two_clients_never_both_believe_under_random_kills_and_pauses(etcd_cluster):
    """Both nodes claim all along; at random, a node pauses (a freeze: it does not run), restarts
    (a new session), or an etcd member is killed, paused or restarted. Sampled every 5 ms:
    never both believe, and each new tenure's token is newer than the last."""
    rng = random.Random(18)
    claim = {"node1": True, "node2": True}

    async def scenario() -> None:
        nodes = {name: node(etcd_cluster.urls, name, claim) for name in claim}
        paused_until = {name: 0.0 for name in claim}
        violations, tokens, stop = [], [], asyncio.Event()

        async def run(name: str) -> None:
            while not stop.is_set():
                if time.monotonic() >= paused_until[name]:
                    await nodes[name].verdict(0)
                    token = nodes[name].token()
                    if token is not None and (not tokens or tokens[-1] != token):
                        tokens.append(token)
                await asyncio.sleep(INTERVAL)

        async def watch() -> None:
            while not stop.is_set():
                now = time.monotonic()
                if all(n.view.holds(now) for n in nodes.values()):
                    violations.append(now)
                await asyncio.sleep(0.005)

        tasks = [asyncio.create_task(run(name)) for name in claim] + [asyncio.create_task(watch())]
        try:
            for _ in range(14):
                await asyncio.sleep(rng.uniform(0.3, 1.2))
                action, name = rng.choice(["pause", "restart", "etcd-kill", "etcd-pause"]), rng.choice(list(claim))
                if action == "pause":
                    paused_until[name] = time.monotonic() + rng.uniform(0.2, TTL + 1)
                elif action == "restart":
                    old = nodes[name]
                    nodes[name] = node(etcd_cluster.urls, name, claim)
                    await old.stop()
                else:
                    member = rng.randrange(3)
                    if action == "etcd-kill" and member in etcd_cluster.procs:
                        etcd_cluster.kill(member)
                        await asyncio.sleep(rng.uniform(0.2, 1.5))
                        await asyncio.to_thread(etcd_cluster.start_member, member, "existing")
                    elif member in etcd_cluster.procs:
                        etcd_cluster.signal(member, signal.SIGSTOP)
                        await asyncio.sleep(rng.uniform(0.2, 1.5))
                        etcd_cluster.signal(member, signal.SIGCONT)
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            for n in nodes.values():
                await n.stop()
        assert violations == []
        assert tokens == sorted(tokens) and len(tokens) >= 2

    asyncio.run(scenario())


def test_peer_renewals_what_the_readings_prove():
    r = PeerRenewals()
    r.observe(7, 9, 10, sent=0.0, received=0.01)
    assert r.state is Renewal.UNKNOWN                  # one fresh reading: it may have died just now
    r.observe(7, 9, 10, sent=0.5, received=0.51)
    assert r.state is Renewal.UNKNOWN
    r.observe(7, 9, 10, sent=1.2, received=1.21)
    assert r.state is Renewal.FRESH and r.age == pytest.approx(1.21)
    r.observe(7, 9, 10, sent=1.7, received=1.71)
    assert r.state is Renewal.FRESH and r.age == pytest.approx(1.21)   # renewed after 0.5 at least
    r.observe(7, 8, 10, sent=1.8, received=1.81)
    assert r.state is Renewal.STALE and r.age is None
    r.observe(7, 10, 10, sent=1.9, received=1.91)      # a new etcd leader extended it: proves nothing
    assert r.state is Renewal.UNKNOWN
    r.observe(7, 9, 10, sent=2.0, received=2.01)
    r.observe(7, 9, 10, sent=9.0, received=9.01)       # a gap: an old reading proves no recent renewal
    assert r.state is Renewal.UNKNOWN
    r.observe(8, 9, 10, sent=9.5, received=9.51)       # another lease: the proof starts again
    r.observe(8, 9, 10, sent=10.2, received=10.21)
    assert r.state is Renewal.UNKNOWN
    r.observe(8, 9, 10, sent=10.7, received=10.71)
    assert r.state is Renewal.FRESH
