"""The witness's lease rule and its wire checks, without sockets (simulated clocks)."""

from __future__ import annotations

import json

import pytest

from hamirror.cluster.heartbeat import MAC_SIZE, encode, Heartbeat, sign
from hamirror.cluster.quorum import (
    BELIEF, WITNESS_NAME, LeaseView, Marks, UdpWitness, encode_request, witness_key,
)
from hamirror.cluster.witness_server import LeaseBook, WitnessServer, WitnessState

KEY = b"k" * 32
LEASE = 4.0
NODES = ("node1", "node2")


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def started_book(now: float = 0.0) -> LeaseBook:
    """A book past its start-up quiet period at ``now``."""
    return LeaseBook(NODES, LEASE, now - LEASE)


def test_first_claimant_holds_and_the_other_is_refused():
    book = started_book()
    assert book.ask("node1", True, 0.0).holder == "node1"
    answer = book.ask("node2", True, 0.1)
    assert answer.holder == "node1" and answer.seen == ("node1", "node2")


def test_holder_keeps_the_lease_while_it_keeps_asking():
    book = started_book()
    book.ask("node1", True, 0.0)
    for step in range(1, 100):                     # 30 s of both nodes claiming every 0.3 s
        t = step * 0.3
        assert book.ask("node2", True, t).holder == "node1"
        assert book.ask("node1", True, t + 0.01).holder == "node1"


def test_a_silent_holder_loses_the_lease_after_the_lease_time_only():
    book = started_book()
    book.ask("node1", True, 0.0)
    assert book.ask("node2", True, LEASE - 0.01).holder == "node1"
    answer = book.ask("node2", True, LEASE + 0.01)
    assert answer.holder == "node2" and answer.seen == ("node2",)


def test_a_non_claiming_request_releases_the_lease_and_never_takes_it():
    book = started_book()
    assert book.ask("node2", False, 0.0).holder is None
    book.ask("node1", True, 0.1)
    assert book.ask("node1", False, 0.2).holder is None          # e.g. after a swap
    assert book.ask("node2", True, 0.3).holder == "node2"
    assert book.ask("node1", False, 0.4).holder == "node2"       # a non-holder's release changes nothing


def test_a_restarted_witness_grants_nothing_for_one_lease():
    book = LeaseBook(NODES, LEASE, started=100.0)
    assert book.ask("node2", True, 100.1).holder is None
    assert book.ask("node2", True, 100.0 + LEASE - 0.01).holder is None
    assert book.ask("node2", True, 100.0 + LEASE).holder == "node2"


def test_a_node_belief_ends_before_the_witness_can_grant_to_the_other():
    book, view1, view2 = started_book(), LeaseView("node1"), LeaseView("node2")
    sent = 0.0
    view1.answered(sent, book.ask("node1", True, sent + 0.2), sent + 0.3)   # request delayed 0.2 s
    assert view1.holds(sent + LEASE * BELIEF - 0.01)
    assert not view1.holds(sent + LEASE * BELIEF)
    t = sent + 0.2 + LEASE                                                 # the earliest grant to node2
    t2 = t + 0.01
    view2.answered(t2, book.ask("node2", True, t2), t2)
    assert view2.holds(t2) and not view1.holds(t2)
    assert t - (sent + LEASE * BELIEF) >= LEASE * (1 - BELIEF)


def test_never_two_holders_whatever_the_losses():
    """Random losses of requests and answers, both claiming: beliefs never overlap."""
    import random
    rng = random.Random(7)
    book = LeaseBook(NODES, LEASE, 0.0)
    views = {n: LeaseView(n) for n in NODES}
    t, held = 0.0, set()
    for _ in range(20000):
        t += rng.uniform(0.0, 0.4)
        node = rng.choice(NODES)
        cut = rng.random() < (0.9 if int(t / 20) % 2 else 0.05)      # long stretches with heavy loss
        claim = rng.random() < 0.9
        if not claim:
            views[node].release()                     # as UdpWitness.verdict does before sending
        if not cut:
            delay = rng.uniform(0.0, 0.2)
            answer = book.ask(node, claim, t + delay)
            if rng.random() < 0.9:
                views[node].answered(t, answer, t + 2 * delay)
        assert not (views["node1"].holds(t) and views["node2"].holds(t)), t
        held.update(n for n in NODES if views[n].holds(t))
    assert held == set(NODES)                          # the lease did move between them


# ---------------------------------------------------------------- wire


def server(clock: Clock, wall: Clock) -> WitnessServer:
    srv = WitnessServer("lab", NODES, KEY, LEASE, clock=clock, wall=wall)
    clock.t += LEASE                                   # past the quiet period
    return srv


def answer_fields(data: bytes) -> dict:
    return json.loads(data[MAC_SIZE:])


def test_server_grants_and_signs_an_answer_bound_to_the_request():
    clock, wall = Clock(), Clock(1_700_000_000.0)
    srv = server(clock, wall)
    reply = srv.handle(encode_request("lab", "node1", "b1", 1, wall(), True, KEY))
    assert reply is not None
    fields = answer_fields(reply)
    assert (fields["n"], fields["to"], fields["rb"], fields["rs"], fields["h"]) == (WITNESS_NAME, "node1", "b1", 1, "node1")
    assert reply[:MAC_SIZE] == sign(reply[MAC_SIZE:], witness_key(KEY))[:MAC_SIZE]


@pytest.mark.parametrize("why,data", [
    ("replayed", None),
    ("forged", b"x" * 32 + b'{"v":1}'),
    ("wrong key", encode_request("lab", "node2", "b9", 5, 1_700_000_000.0, True, b"z" * 32)),
    ("plain heartbeat", encode(Heartbeat("lab", "node2", "b9", 5, 1_700_000_000.0), KEY)),
    ("wrong cluster", encode_request("other", "node2", "b9", 5, 1_700_000_000.0, True, KEY)),
    ("unknown node", encode_request("lab", "node3", "b9", 5, 1_700_000_000.0, True, KEY)),
    ("old", encode_request("lab", "node2", "b9", 5, 1_700_000_000.0 - 60, True, KEY)),
])
def test_server_refuses_what_is_not_a_fresh_authentic_request(why, data):
    clock, wall = Clock(), Clock(1_700_000_000.0)
    srv = server(clock, wall)
    first = encode_request("lab", "node2", "b2", 7, wall(), False, KEY)
    assert srv.handle(first) is not None
    if data is None:
        clock.t += LEASE + 1                       # a replay must not renew nor take anything
        data = encode_request("lab", "node2", "b2", 7, wall(), True, KEY)
    assert srv.handle(data) is None, why
    assert srv.book.holder is None
    assert sum(srv.rejected.values()) == 1


def test_a_replayed_claim_does_not_keep_an_isolated_holder_alive():
    clock, wall = Clock(), Clock(1_700_000_000.0)
    srv = server(clock, wall)
    captured = encode_request("lab", "node1", "b1", 1, wall(), True, KEY)
    assert answer_fields(srv.handle(captured))["h"] == "node1"
    clock.t += LEASE - 0.5
    assert srv.handle(captured) is None                 # node1 is cut; an attacker replays its claim
    clock.t += 1.0
    reply = srv.handle(encode_request("lab", "node2", "b2", 1, wall(), True, KEY))
    assert answer_fields(reply)["h"] == "node2"


def test_client_accepts_only_the_answer_to_its_pending_request():
    clock, wall = Clock(), Clock(1_700_000_000.0)
    srv = server(clock, wall)
    client = UdpWitness(("127.0.0.1", 9), "lab", "node1", "node2", KEY, clock=clock, wall=wall)
    sent = []
    client.send = lambda claim, _s=client.send: (_s(claim), sent.append(claim))   # no transport: nothing leaves
    client.send(True)
    request = encode_request("lab", "node1", client.boot, client.counter, wall(), True, KEY)
    reply = srv.handle(request)
    client.received(reply)
    assert client.view.holds(clock())
    client.view.release()
    client.received(reply)                              # a replayed answer: no longer pending
    assert not client.view.holds(clock())
    client.send(True)
    other = encode_request("lab", "node2", "x", 1, wall(), True, KEY)
    client.received(srv.handle(other))                  # an answer meant for node2
    forged = bytearray(reply); forged[-3] ^= 1
    client.received(bytes(forged))
    assert not client.view.holds(clock())
    assert client.validator.rejected                     # the forged one counted as bad_mac


# ---------------------------------------------------------------- the last holder (finding 11)


def test_each_tenure_says_who_held_the_lease_before_it():
    book = started_book()
    assert book.ask("node1", True, 0.0).previous is None          # nobody ever
    assert book.ask("node1", True, LEASE - 1).previous is None    # same tenure, renewed
    assert book.ask("node1", True, 3 * LEASE).previous == "node1"  # lapsed, then node1 again
    answer = book.ask("node2", True, 5 * LEASE)
    assert (answer.holder, answer.previous) == ("node2", "node1")
    assert book.ask("node1", True, 5 * LEASE + 0.1).holder == "node2"


def test_a_restarted_witness_remembers_the_last_holder_from_its_state_file(tmp_path):
    """Finding 11: the primary stepped down while the witness was down; when the witness comes
    back it must be able to tell that primary that nobody else held the lease since."""
    state = str(tmp_path / "witness" / "lease.json")
    clock, wall = Clock(), Clock(1_700_000_000.0)
    srv = WitnessServer("lab", NODES, KEY, LEASE, clock=clock, wall=wall, state=state)
    clock.t += LEASE
    assert answer_fields(srv.handle(encode_request("lab", "node1", "b1", 1, wall(), True, KEY)))["h"] == "node1"
    assert json.load(open(state)) == {"last": "node1", "outdated": {}}
    clock.t += 100                                         # the witness machine goes down...
    again = WitnessServer("lab", NODES, KEY, LEASE, clock=clock, wall=wall, state=state)
    assert again.handle(encode_request("lab", "node1", "b1", 2, wall(), True, KEY)) is not None
    clock.t += LEASE                                       # ...and is back, past its quiet period
    fields = answer_fields(again.handle(encode_request("lab", "node1", "b1", 3, wall(), True, KEY)))
    assert (fields["h"], fields["p"]) == ("node1", "node1")
    third = WitnessServer("lab", NODES, KEY, LEASE, clock=clock, wall=wall, state=state)
    clock.t += LEASE
    fields = answer_fields(third.handle(encode_request("lab", "node2", "b2", 1, wall(), True, KEY)))
    assert (fields["h"], fields["p"]) == ("node2", "node1")   # node1 held it last: node2 is not vouched


def test_a_holder_that_cannot_be_recorded_is_not_granted(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    clock, wall = Clock(), Clock(1_700_000_000.0)
    srv = WitnessServer("lab", NODES, KEY, LEASE, clock=clock, wall=wall, state=str(tmp_path / "lease.json"))
    srv.state = str(blocker / "lease.json")                # e.g. the disk went read-only
    clock.t += LEASE
    assert answer_fields(srv.handle(encode_request("lab", "node1", "b1", 1, wall(), True, KEY)))["h"] is None


def test_the_client_is_vouched_only_when_it_held_the_lease_last():
    clock, wall = Clock(), Clock(1_700_000_000.0)
    srv = server(clock, wall)
    srv.book.state = WitnessState("node1")                              # node1 held it before the restart
    client = UdpWitness(("127.0.0.1", 9), "lab", "node1", "node2", KEY, clock=clock, wall=wall)
    client.claiming = True
    client.send(True)
    client.received(srv.handle(encode_request("lab", "node1", client.boot, client.counter, wall(), True, KEY)))
    assert client.view.holds(clock()) and client.vouches(clock())
    srv.book.holder, srv.book.state = None, WitnessState("node2")
    client.send(True)
    client.received(srv.handle(encode_request("lab", "node1", client.boot, client.counter, wall(), True, KEY)))
    assert client.view.holds(clock()) and not client.vouches(clock())


def node1_beside_a_holding_node2():
    """A witness where node2 holds the lease, node1's client, and ``ask()``: one claim of node1 answered."""
    clock, wall = Clock(), Clock(1_700_000_000.0)
    srv = server(clock, wall)
    clock.t += LEASE
    srv.handle(encode_request("lab", "node2", "b2", 1, wall(), True, KEY))          # node2 holds it
    client = UdpWitness(("127.0.0.1", 9), "lab", "node1", "node2", KEY, interval=0.3, clock=clock, wall=wall)

    def ask() -> None:
        client.send(True)
        client.received(srv.handle(encode_request("lab", "node1", client.boot, client.counter, wall(), True, KEY)))

    return clock, wall, srv, client, ask


def test_the_client_knows_the_peer_holds_the_lease_only_from_a_fresh_answer_about_a_live_holder():
    """Finding 7: a SECOND that hears nothing marks itself stale only when the witness heard its
    primary hold the lease just now; a dead primary's lease is still held until it lapses, but
    its silence at the witness is then more than two intervals."""
    clock, wall, srv, client, ask = node1_beside_a_holding_node2()

    clock.t += 0.1
    ask()
    assert client.peer_holds(clock()) and not client.view.holds(clock())
    assert client.peer_holds(clock(), silence=2.0)        # we have not heard it for 2 s: a one-way loss
    assert not client.peer_holds(clock(), silence=0.5)    # the witness heard it no later than we did
    clock.t += 1.0                                        # no newer answer: the word is old
    assert not client.peer_holds(clock())
    ask()                                                 # node2 silent at the witness for 1.1 s
    assert not client.peer_holds(clock())
    srv.handle(encode_request("lab", "node2", "b2", 2, wall(), True, KEY))
    ask()
    assert client.peer_holds(clock())
    clock.t += LEASE + 1                                  # node2's lease lapses: node1 gets it
    ask()
    assert not client.peer_holds(clock()) and client.view.holds(clock())


def test_the_client_knows_the_witness_hears_the_peer_only_from_a_fresh_answer():
    """A forced `prim` is refused while the witness hears the peer this node does not."""
    clock, wall = Clock(), Clock(1_700_000_000.0)
    srv = server(clock, wall)
    client = UdpWitness(("127.0.0.1", 9), "lab", "node1", "node2", KEY, interval=0.3, clock=clock, wall=wall)

    def ask() -> None:
        client.send(True)
        client.received(srv.handle(encode_request("lab", "node1", client.boot, client.counter, wall(), True, KEY)))

    ask()
    assert not client.peer_asks(clock())                  # the witness has never heard node2
    srv.handle(encode_request("lab", "node2", "b2", 1, wall(), False, KEY))
    ask()
    assert client.peer_asks(clock())
    clock.t += 1.0                                        # no newer answer: the word is old
    assert not client.peer_asks(clock())
    clock.t += LEASE
    ask()                                                 # node2 silent at the witness for a lease
    assert not client.peer_asks(clock())


@pytest.mark.parametrize("content", ['{"last": ["node1"]}', '{"last": 7}', '["node1"]', "{",
                                     '{"last": "node1", "outdated": ["db"]}',
                                     '{"last": "node1", "outdated": {"db": "node3"}}'])
def test_a_damaged_witness_state_file_is_a_named_error(tmp_path, content):
    """Review: a list under "last" raised TypeError (unhashable) instead of the ValueError that
    `hamirror witness` turns into a message naming the file."""
    state = tmp_path / "lease.json"
    state.write_text(content)
    with pytest.raises(ValueError, match=str(state)):
        WitnessServer("lab", NODES, KEY, LEASE, clock=Clock(), wall=Clock(1_700_000_000.0), state=str(state))


def test_the_client_knows_it_was_granted_the_lease_after_its_peer():
    """A lease that came from the peer is never vouched for later (docs/cluster.md)."""
    clock, wall, srv, client, ask = node1_beside_a_holding_node2()

    ask()
    assert not client.granted_after_peer(clock())                                  # refused: node2 holds it
    clock.t += LEASE + 1                                                           # node2's lease lapses
    ask()
    assert client.view.holds(clock()) and client.granted_after_peer(clock()) and not client.vouches(clock())


# ---------------------------------------------------------------- outdated copies (the double fault)


def test_only_the_holder_marks_its_peer_copy_outdated_and_a_marked_node_cannot_undo_it():
    book = started_book()
    assert book.ask("node1", True, 0.0, Marks(outdate=frozenset({"db"}))).outdated == {"db": "node2"}
    # node2 is refused the lease: its marks count for nothing, its own copy stays marked
    assert book.ask("node2", True, 0.1, Marks(outdate=frozenset({"db", "web"}))).outdated == {"db": "node2"}
    # node1 lost: node2 holds the lease later, and still cannot mark node1's copy of db outdated...
    answer = book.ask("node2", True, 2 * LEASE, Marks(outdate=frozenset({"db", "web"})))
    assert answer.holder == "node2" and answer.outdated == {"db": "node2", "web": "node1"}
    # ...unless its operator forces it (`hamirror prim`, losing node1's writes)
    forced = Marks(outdate=frozenset({"db"}), force=frozenset({"db"}))
    assert book.ask("node2", True, 2 * LEASE + 1, forced).outdated == {"db": "node1", "web": "node1"}
    # mirrored in sync again: the holder clears the mark of that module only
    assert book.ask("node2", True, 2 * LEASE + 2, Marks(current=frozenset({"db"}))).outdated == {"web": "node1"}


def test_marks_are_durable_before_they_are_answered_and_survive_a_restart(tmp_path):
    state = str(tmp_path / "witness" / "lease.json")
    clock, wall = Clock(), Clock(1_700_000_000.0)
    srv = WitnessServer("lab", NODES, KEY, LEASE, clock=clock, wall=wall, state=state)
    clock.t += LEASE
    marks = Marks(outdate=frozenset({"db"}))
    fields = answer_fields(srv.handle(encode_request("lab", "node1", "b1", 1, wall(), True, KEY, marks)))
    assert (fields["h"], fields["x"]) == ("node1", {"db": "node2"})
    assert json.load(open(state)) == {"last": "node1", "outdated": {"db": "node2"}}
    again = WitnessServer("lab", NODES, KEY, LEASE, clock=clock, wall=wall, state=state)
    fields = answer_fields(again.handle(encode_request("lab", "node2", "b2", 1, wall(), True, KEY)))
    assert fields["x"] == {"db": "node2"}                  # the restarted witness still says so
    srv.state = str(tmp_path / "witness" / "lease.json" / "x")  # the disk cannot record any more
    fields = answer_fields(srv.handle(encode_request("lab", "node1", "b1", 2, wall(), True, KEY,
                                                     Marks(outdate=frozenset({"web"})))))
    assert fields["x"] == {"db": "node2"}                  # not recorded: not answered as marked


def test_hostile_marks_are_ignored_but_the_claim_is_answered():
    clock, wall = Clock(), Clock(1_700_000_000.0)
    srv = server(clock, wall)
    for n, bad in enumerate(({"o": "db"}, {"o": [7]}, {"u": ["x" * 65]}, {"f": [""]}, {"o": ["m"] * 1025})):
        body = json.loads(encode_request("lab", "node1", "b1", n + 1, wall(), True, KEY)[MAC_SIZE:])
        data = sign(json.dumps({**body, **bad}).encode(), witness_key(KEY))
        fields = answer_fields(srv.handle(data))
        assert (fields["h"], fields["x"]) == ("node1", {}), bad


def test_the_client_reads_the_marks_and_knows_a_witness_that_keeps_none():
    clock, wall = Clock(), Clock(1_700_000_000.0)
    srv = server(clock, wall)
    client = UdpWitness(("127.0.0.1", 9), "lab", "node1", "node2", KEY, clock=clock, wall=wall,
                        marks=lambda: Marks(outdate=frozenset({"db"})))
    client.asking = client.marks()
    client.send(True)
    reply = srv.handle(encode_request("lab", "node1", client.boot, client.counter, wall(), True, KEY, client.asking))
    client.received(reply)
    assert client.keeps_marks() and client.outdated("db") == "node2" and client.outdated("web") is None
    old = json.loads(reply[MAC_SIZE:])
    del old["x"]                                          # a witness older than marks
    client.send(True)
    old.update(rs=client.counter, s=old["s"] + 1)
    client.received(sign(json.dumps(old).encode(), witness_key(KEY)))
    assert not client.keeps_marks() and client.outdated("db") is None
    client.send(True)
    old.update(rs=client.counter, s=old["s"] + 2, x={"db": "node3"})   # names a node of no pair: refused
    client.received(sign(json.dumps(old).encode(), witness_key(KEY)))
    assert client.counter in client.pending               # not taken as the answer


class _Loopback:
    """A client's transport that hands each request to the server and its answer back."""

    def __init__(self, client: UdpWitness, srv: WitnessServer) -> None:
        self.client, self.srv = client, srv

    def sendto(self, data: bytes) -> None:
        reply = self.srv.handle(data)
        if reply is not None:
            self.client.received(reply)


def test_a_node_that_stops_needing_the_lease_releases_it_at_once_not_at_its_next_tick():
    """Campaign 4107: a swap's old primary died within a tick of its hand-over, before the tick's
    request without claim released the lease; the new primary waited 10 s for it to lapse. The
    agent now releases it as the hand-over's sequence ends, and only if nothing here needs it."""
    clock, wall = Clock(), Clock(1_700_000_000.0)
    srv = server(clock, wall)
    needs = [True]
    client = UdpWitness(("127.0.0.1", 9), "lab", "node1", "node2", KEY, claim=lambda: needs[0],
                        clock=clock, wall=wall)
    client._transport = _Loopback(client, srv)
    client.send(True)
    assert client.view.holds(clock()) and srv.book.holder == "node1"
    client.release_now()                        # still needed (a primary module, or the peer unheard)
    assert srv.book.holder == "node1" and client.view.holds(clock())
    needs[0] = False
    client.release_now()
    assert srv.book.holder is None and not client.view.holds(clock()) and not client.claiming


@pytest.mark.parametrize("field, value", [("l", float("nan")), ("l", float("inf")), ("l", 1e9), ("l", 0),
                                          ("l", "10"), ("l", True), ("a", -1.0), ("a", float("nan"))])
def test_the_client_refuses_an_answer_whose_lease_or_age_is_out_of_range(field, value):
    """An authentic answer whose lease is not a sane duration is no answer: a claim refused by a
    silent holder waits out the holder's lease, and the agent's tick waits with it (Infinity and
    NaN pass JSON)."""
    clock, wall = Clock(), Clock(1_700_000_000.0)
    srv = server(clock, wall)
    client = UdpWitness(("127.0.0.1", 9), "lab", "node1", "node2", KEY, clock=clock, wall=wall)
    client.send(True)
    request = encode_request("lab", "node1", client.boot, client.counter, wall(), True, KEY)
    reply = json.loads(srv.handle(request)[MAC_SIZE:])
    reply[field] = value
    client.received(sign(json.dumps(reply).encode(), witness_key(KEY)))
    assert client.counter in client.pending and client.view.answer is None
    reply.update({field: 10.0, "s": reply["s"] + 1})        # the same answer, in range: taken
    client.received(sign(json.dumps(reply).encode(), witness_key(KEY)))
    assert client.view.answer is not None and client.counter not in client.pending
