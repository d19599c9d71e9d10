"""LinkClient with the ``stream`` engine (link/transport_stream.py): its own TCP connection, the
aead handshake and sealed records, the submitting thread writing its record, one reader thread.

The peer is a small receiver in this process (tests/stream_peer.py): the real session layer
(``session.Sessions``) and record layer (``stream.Records``) on a real socket over loopback,
answering with ``protocol.encode_reply``. What each test's peer does with a message is its
``answer``; what the client did is checked from outside (tickets, ``on_lost``, the peer's view).
"""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from hamirror.link import keys, protocol, session
from hamirror.link.client import LinkClient, PeerLost, Ticket
from hamirror.link.protocol import Op
from tests.conftest import needs_root
from tests.mirror_fixtures import free_port, wait_for
from tests.stream_peer import CLOSE, StreamPeer, acknowledge

@pytest.fixture
def keys_dir(tmp_path) -> str:
    keys.generate(str(tmp_path / "keys"), "test")
    return str(tmp_path / "keys")


@pytest.fixture
def peers():
    started: list[StreamPeer] = []
    yield lambda *args, **kwargs: started.append(StreamPeer(*args, **kwargs)) or started[-1]
    for peer in started:
        peer.close()


@pytest.fixture
def slow_reader(monkeypatch):
    """The reader's receive timeout (and the keepalive) at 60 s: what the test shows cannot come
    from the reader waking up on its own."""
    from hamirror.link import client as client_module, transport_stream
    monkeypatch.setattr(transport_stream, "KEEPALIVE", 60.0)
    monkeypatch.setattr(client_module, "KEEPALIVE", 60.0)


@pytest.fixture
def clients():
    made: list[LinkClient] = []
    yield lambda *args, **kwargs: made.append(LinkClient(*args, engine=session.STREAM, **kwargs)) or made[-1]
    for client in made:
        client.close(0)


def test_the_stream_engine_is_a_setting():
    assert session.engine("stream") == session.STREAM


def test_pipelined_submits_are_all_acknowledged_and_arrive_intact(keys_dir, peers, clients):
    peer = peers(keys_dir)
    client = clients(peer.endpoint, keys_dir)
    client.hello(10)
    assert client.peer_versions is not None and client.peer_versions[0] == protocol.VERSION
    data = [os.urandom(size) for size in (1, 4096, 3 << 20, 65536)]
    tickets = [client.submit(Op.CREATE, (0o100644, 0, 0, 0), (b"f",))]
    for i in range(400):
        if i % 100 == 0:
            tickets.append(client.submit(Op.WRITE, (i,), (b"f",), data=data[i // 100]))
        else:
            tickets.append(client.submit(Op.PING))
    assert all(t.wait(20) for t in tickets)
    assert [t.error for t in tickets] == [None] * len(tickets)
    assert [m.seq for m in peer.messages] == list(range(len(tickets) + 1))   # the HELLO, then in order
    assert [bytes(m.data) for m in peer.messages if m.op == Op.WRITE] == data
    assert client.bytes_sent == sum(map(len, data)) and client.in_flight == 0


def test_a_cumulative_ack_completes_every_earlier_ticket(keys_dir, peers, clients):
    """The peer answers only the tenth message: that one reply completes all ten."""
    peer = peers(keys_dir, answer=lambda m: acknowledge(m) if m.op == Op.HELLO or m.seq == 10 else None)
    client = clients(peer.endpoint, keys_dir, ack_timeout=60)
    client.hello(10)
    tickets = [client.submit(Op.STAT, (), (b"x%d" % i,)) for i in range(9)]
    assert not tickets[0].wait(0.3)   # nothing answered yet
    tickets.append(client.submit(Op.PING))
    assert all(t.wait(10) for t in tickets) and [t.error for t in tickets] == [None] * 10
    assert client.in_flight == 0


def test_an_error_reply_fails_every_pending_ticket_with_its_message(keys_dir, peers, clients):
    def answer(message):   # refuses seq 3, once seq 5 is in: all three are pending then
        if message.seq == 5:
            return protocol.encode_reply(3, protocol.ERROR, 28, "No space left on device: f")
        return acknowledge(message) if message.seq < 3 else None
    peer = peers(keys_dir, answer=answer)
    lost: list[tuple[str, list[Ticket]]] = []
    client = clients(peer.endpoint, keys_dir, ack_timeout=60, on_lost=lambda r, t: lost.append((r, t)))
    client.hello(10)
    tickets = [client.submit(Op.PING) for _ in range(5)]   # seq 1 to 5
    assert all(t.wait(10) for t in tickets)
    reason = "peer refused operation 3: No space left on device: f"
    assert [t.error for t in tickets] == [None, None, reason, reason, reason]
    assert lost == [(reason, tickets[2:])]
    assert client.submit(Op.PING).error == reason   # later submits fail at once


def _closing_at(seq: int, gate: threading.Event, answered: int = 0):
    """A peer's answer: acknowledge the HELLO and messages up to ``answered``, nothing more; at
    ``seq``, once ``gate`` is set, close the connection."""
    def answer(message):
        if message.op == Op.HELLO or message.seq <= answered:
            return acknowledge(message)
        if message.seq == seq:
            gate.wait(10)
            return CLOSE
        return None
    return answer


def test_the_peer_closing_fails_every_pending_ticket_and_on_lost_sees_them_first(keys_dir, peers, clients):
    seen = threading.Event()
    peer = peers(keys_dir, answer=_closing_at(6, seen))
    lost: list[tuple[str, list[Ticket], list[bool]]] = []
    client = clients(peer.endpoint, keys_dir, ack_timeout=60,
                     on_lost=lambda reason, failed: lost.append((reason, failed, [t.done for t in failed])))
    client.hello(10)
    tickets = [client.submit(Op.MKDIR, (0o40755, 0, 0), (b"d%d" % i,), changes=((f"d{i}",),)) for i in range(6)]
    seen.set()
    assert all(t.wait(10) for t in tickets)
    reason = f"connection to peer {peer.endpoint} lost"
    assert [t.error for t in tickets] == [reason] * 6
    assert len(lost) == 1
    assert lost[0][0] == reason and lost[0][1] == tickets
    assert lost[0][2] == [False] * 6   # on_lost ran before any ticket completed


def test_a_peer_that_stops_answering_times_the_link_out(keys_dir, peers, clients):
    peer = peers(keys_dir, answer=lambda m: acknowledge(m) if m.op == Op.HELLO else None)
    client = clients(peer.endpoint, keys_dir, ack_timeout=0.5)
    client.hello(10)
    ticket = client.submit(Op.PING)
    assert ticket.wait(10)
    assert ticket.error == f"peer {peer.endpoint} did not acknowledge within 0.5s"


def test_a_refused_handshake_gives_the_receivers_text(keys_dir, peers, clients):
    peer = peers(keys_dir, trust=False)
    client = clients(peer.endpoint, keys_dir)
    with pytest.raises(PeerLost) as refused:
        client.hello(10)
    assert str(refused.value) == (f"secure session with peer {peer.endpoint} ended: the receiver refused the "
                                  "session: this node's public key is not trusted by the receiver (is it in the "
                                  "receiver's keys directory?)")
    assert peer.messages == []


def test_abort_wakes_every_waiter_and_a_blocked_submit(keys_dir, peers, clients, slow_reader):
    peer = peers(keys_dir, answer=lambda m: acknowledge(m) if m.op == Op.HELLO else None)
    lost: list[int] = []
    client = clients(peer.endpoint, keys_dir, ack_timeout=60, window=3,
                     on_lost=lambda reason, failed: lost.append(len(failed)))
    client.hello(10)
    first, second = client.submit(Op.PING), client.submit(Op.PING)
    third = client.submit(Op.PING, hold=True)   # held: it has not even left
    blocked: list[Ticket] = []
    thread = threading.Thread(target=lambda: blocked.append(client.submit(Op.MKDIR, (0o40755, 0, 0), (b"d",))))
    thread.start()
    thread.join(0.3)
    assert thread.is_alive()   # the window is full
    client.abort("the agent saw the peer die")
    thread.join(5)
    assert not thread.is_alive() and lost == [3]
    for ticket in (first, second, third, *blocked):
        assert ticket.wait(5) and ticket.error == "the agent saw the peer die"


def test_abort_before_the_receiver_is_up(keys_dir, clients):
    client = clients(f"tcp://127.0.0.1:{free_port()}", keys_dir, ack_timeout=60)
    ticket = client.submit(Op.PING)
    client.abort("the agent gave up")
    assert ticket.wait(5) and ticket.error == "the agent gave up"


def test_a_peer_that_never_answers_the_handshake(keys_dir, clients):
    listener = socket.create_server(("127.0.0.1", 0))   # accepts (the kernel does), reads nothing
    endpoint = f"tcp://127.0.0.1:{listener.getsockname()[1]}"
    try:
        client = clients(endpoint, keys_dir, ack_timeout=0.5)
        with pytest.raises(PeerLost, match=rf"^peer {endpoint} did not complete the secure handshake within "
                                           r"0\.9\d*s$"):
            client.hello(1)
    finally:
        listener.close()


def test_close_wakes_the_reader_at_once(keys_dir, peers, clients, slow_reader):
    peer = peers(keys_dir)
    client = clients(peer.endpoint, keys_dir)
    client.hello(10)
    reader = client._transport._reader
    assert reader.is_alive()
    client.close(0)   # the reader sleeps in recv_into for 60 s: only the shutdown wakes it
    assert not reader.is_alive()


def test_a_receiver_that_starts_late_still_gets_the_hello(keys_dir, peers, clients):
    port = free_port()
    client = clients(f"tcp://127.0.0.1:{port}", keys_dir, ack_timeout=2)
    timer = threading.Timer(1.0, lambda: peers(keys_dir, port=port))
    timer.start()
    try:
        client.hello(10)
    finally:
        timer.join()
    assert client.submit(Op.PING).wait(5)


def test_no_receiver_at_all_names_the_connection_error(keys_dir, clients):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    client = clients(endpoint, keys_dir, ack_timeout=0.5)
    with pytest.raises(PeerLost, match=rf"could not connect to peer {endpoint} within [0-9.]+s \(Connection refused\)"):
        client.hello(1)


def test_a_held_message_leaves_when_due_with_the_merged_times(keys_dir, peers, clients, slow_reader, monkeypatch):
    from hamirror.link import client as client_module
    monkeypatch.setattr(client_module, "HOLD", 0.3)   # the merge must not race the timer on a busy machine
    peer = peers(keys_dir)
    client = clients(peer.endpoint, keys_dir)
    client.hello(10)
    write = client.submit(Op.WRITE, (0,), (b"f",), ((b"f", 1, 2),), b"page", hold=True)
    assert client.submit(Op.UTIMENS, (), (b"f",), ((b"f", 3, 4),), hold=True) is write
    assert write.wait(5) and write.error is None   # no further submit: the hold's timer sent it
    assert peer.ops() == [Op.HELLO, Op.WRITE] and peer.messages[-1].times == ((b"f", 3, 4),)
    again = client.submit(Op.WRITE, (4,), (b"f",), ((b"f", 5, 6),), b"next", hold=True)   # the timer waits now
    assert again.wait(5) and again.error is None and peer.ops() == [Op.HELLO, Op.WRITE, Op.WRITE]


def test_an_idle_link_carries_a_keepalive(keys_dir, peers, clients):
    peer = peers(keys_dir)
    client = clients(peer.endpoint, keys_dir)
    client.hello(10)
    deadline = time.monotonic() + 5
    while Op.PING not in peer.ops() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert peer.ops()[:2] == [Op.HELLO, Op.PING]


def test_a_peer_that_stops_reading_does_not_hold_the_sender_for_ever(keys_dir, peers, clients):
    stop = threading.Event()

    def answer(message):
        if message.op == Op.HELLO:
            return acknowledge(message)
        stop.wait(20)   # reads nothing more
        return None
    peer = peers(keys_dir, answer=answer)
    client = clients(peer.endpoint, keys_dir, ack_timeout=1)
    client.hello(10)
    tickets: list[Ticket] = []
    block = os.urandom(4 << 20)
    sender = threading.Thread(target=lambda: tickets.extend(client.submit(Op.WRITE, (0,), (b"f",), data=block)
                                                           for _ in range(32)))
    sender.start()
    sender.join(15)
    stop.set()
    assert not sender.is_alive()
    assert len(tickets) == 32 and all(t.wait(5) and t.error for t in tickets)
    assert client.lost_reason in (f"peer {peer.endpoint} did not acknowledge within 1s",
                                  f"peer {peer.endpoint} did not read what was sent for 1s")


def test_a_zeromq_receiver_is_named_as_an_engine_mismatch(keys_dir, clients):
    """A stream client meets ZeroMQ's greeting (a curve or aead receiver): a clear failure."""
    import zmq
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    try:
        client = clients(f"tcp://127.0.0.1:{port}", keys_dir)
        with pytest.raises(PeerLost, match="HAMIRROR_LINK_ENGINE.*this node: stream"):
            client.hello(10)
    finally:
        router.close(0)
        context.term()


def test_a_bad_endpoint_is_refused_at_once(keys_dir):
    with pytest.raises(ValueError, match=r"HAMIRROR_LINK_ENGINE=stream: the peer must be tcp://HOST:PORT, not 'ipc:///x'"):
        LinkClient("ipc:///x", keys_dir, engine=session.STREAM)


# -- the product's receiver ------------------------------------------------------------------------

def test_a_real_stream_receiver_applies_bytes_equal(tmp_path):
    from tests.mirror_fixtures import receiver_thread
    with receiver_thread(str(tmp_path), session.STREAM) as (receiver, _, keys_dir):
        client = LinkClient(receiver.endpoint, keys_dir, engine=session.STREAM)
        try:
            client.hello(10)
            data = os.urandom(5 << 20)
            client.submit(Op.CREATE, (0o100644, os.getuid(), os.getgid(), 0), (b"f",))
            for offset in range(0, len(data), 1 << 20):
                client.submit(Op.WRITE, (offset,), (b"f",), data=data[offset:offset + (1 << 20)])
            last = client.submit(Op.RENAME, (0,), (b"f", b"g"))
            assert last.wait(20) and last.error is None, last.error
            missing = client.submit(Op.UNLINK, (), (b"nothing-here",))
            assert missing.wait(10) and missing.error and missing.error.startswith("peer refused operation 8: ")
        finally:
            client.close()
        assert (tmp_path / "secondary" / "g").read_bytes() == data


def test_what_waited_for_the_handshake_follows_confirm_to_a_real_receiver(tmp_path, keys_dir):
    """HELLO, CREATE and a 1 MiB WRITE submitted before the receiver even listens go out right
    behind CONFIRM, in one write: the receiver reads them under the session's limits, in order."""
    import zmq

    from hamirror.replica.receiver import Receiver
    port = free_port()
    client = LinkClient(f"tcp://127.0.0.1:{port}", keys_dir, engine=session.STREAM)
    data = os.urandom(1 << 20)
    tickets = [client.submit(Op.HELLO, (protocol.VERSION, 0)),
               client.submit(Op.CREATE, (0o100644, os.getuid(), os.getgid(), 0), (b"early",)),
               client.submit(Op.WRITE, (0,), (b"early",), data=data)]
    (tmp_path / "secondary").mkdir()
    context = zmq.Context()
    receiver = Receiver(str(tmp_path / "secondary"), f"tcp://127.0.0.1:{port}", keys_dir, context=context,
                        engine=session.STREAM)
    serving = threading.Thread(target=receiver.serve_forever, daemon=True)
    serving.start()
    try:
        assert all(t.wait(10) for t in tickets) and [t.error for t in tickets] == [None] * 3
    finally:
        client.close()
        receiver.stop()
        serving.join(5)
        receiver.close()
        context.term()
    assert (tmp_path / "secondary" / "early").read_bytes() == data


@needs_root
def test_a_sync_mount_over_the_stream_engine_goes_alone_when_the_receiver_dies(mirror_factory, monkeypatch):
    """Both processes with HAMIRROR_LINK_ENGINE=stream: writes are on the secondary once they
    return; a killed receiver makes the next write go ALONE, its path in the journal."""
    from hamirror.journal.journal import Journal
    monkeypatch.setenv(session.ENGINE_ENV, session.STREAM)
    pair = mirror_factory("stream", timeout=2).start()
    data = os.urandom(1 << 20)
    with open(os.path.join(pair.primary, "f"), "wb") as f:
        f.write(data)
        os.fsync(f.fileno())
    assert open(os.path.join(pair.secondary, "f"), "rb").read() == data
    assert pair.status()["state"] == "PRIM"
    pair.kill_receiver()
    with open(os.path.join(pair.primary, "after"), "wb") as f:
        f.write(b"written alone")
    wait_for(lambda: pair.status()["state"] == "ALONE", 5, what="ALONE in the status file")
    pair.umount()
    assert pair.mounter.returncode == 0
    assert "engine stream" in open(pair.log("mount")).read()
    journal = Journal(os.path.join(pair.state, "journal.db"))
    try:
        assert "after" in set(journal.changed_paths())
    finally:
        journal.close()


# -- who reads: the waiting thread or the background reader; the hold timer ----------------------------

@pytest.fixture
def reader_aside(monkeypatch):
    """The background reader, once a thread has waited, stands aside for 60 s and looks at the
    socket every 60 s only: whatever is read meanwhile, a waiting thread read it."""
    from hamirror.link import transport_stream
    monkeypatch.setattr(transport_stream, "STEP", 60.0, raising=False)
    monkeypatch.setattr(transport_stream, "QUIET", 60.0, raising=False)


def _readers(client: LinkClient) -> list[str]:
    """The names of the threads that take each reply, from now on (the client's own hook, called through)."""
    names: list[str] = []
    on_reply = client._on_reply

    def noted(frames):
        names.append(threading.current_thread().name)
        return on_reply(frames)
    client._on_reply = noted
    return names


def _settle(client: LinkClient) -> None:
    """A few waited round trips: the background reader has seen a waiter and stands aside."""
    for _ in range(3):
        assert client.submit(Op.PING).wait(10)
    time.sleep(0.2)


def _settled(keys_dir, peers, clients, before_ack=lambda message: None) -> tuple[StreamPeer, LinkClient]:
    """A peer that acknowledges every message (after ``before_ack``), and a client past its
    HELLO whose background reader stands aside."""
    peer = peers(keys_dir, answer=lambda message: (before_ack(message), acknowledge(message))[1])
    client = clients(peer.endpoint, keys_dir)
    client.hello(10)
    _settle(client)
    return peer, client


def test_a_waiting_thread_reads_its_own_acknowledgement(keys_dir, peers, clients, reader_aside):
    _, client = _settled(keys_dir, peers, clients)
    readers = _readers(client)
    tickets = [client.submit(Op.MKDIR, (0o40755, 0, 0), (b"d%d" % i,)) for i in range(3)]
    for _ in range(50):   # a synchronous caller: submit, then wait
        tickets.append(client.submit(Op.PING))
        assert tickets[-1].wait(5)
    assert [t.error for t in tickets] == [None] * 53
    assert readers and set(readers) == {threading.current_thread().name}


def test_a_follower_takes_over_reading_when_the_leader_is_done(keys_dir, peers, clients, reader_aside):
    """Two waiters: whichever reads first gets its own ack; the other's comes 0.3 s later and
    the role passes to it (the background reader would look again only after 60 s)."""
    slow: list[int] = []
    _, client = _settled(keys_dir, peers, clients, lambda m: m.seq in slow and time.sleep(0.3))
    first = client.submit(Op.PING)
    slow.append(client._seq)
    second = client.submit(Op.PING)
    waited: dict[str, bool] = {}
    threads = [threading.Thread(target=lambda t=t, n=n: waited.__setitem__(n, t.wait(5)), name=n)
               for t, n in ((first, "first"), (second, "second"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert waited == {"first": True, "second": True} and first.error is None and second.error is None


def test_loss_seen_by_a_waiting_reader_calls_on_lost_before_any_waiter_wakes(keys_dir, peers, clients,
                                                                                reader_aside):
    seen = threading.Event()
    peer = peers(keys_dir, answer=_closing_at(9, seen, answered=3))
    lost: list[tuple[str, str, list[bool]]] = []
    client = clients(peer.endpoint, keys_dir, ack_timeout=60,
                     on_lost=lambda reason, failed: lost.append((reason, threading.current_thread().name,
                                                                 [t.done for t in failed])))
    client.hello(10)
    _settle(client)   # seq 1 to 3
    tickets = [client.submit(Op.MKDIR, (0o40755, 0, 0), (b"d%d" % i,), changes=((f"d{i}",),)) for i in range(6)]
    followers = [threading.Thread(target=tickets[i].wait, args=(10,), name=f"waiter-{i}") for i in (1, 3)]
    for thread in followers:
        thread.start()
    seen.set()
    assert tickets[-1].wait(10)
    for thread in followers:
        thread.join(10)
    reason = f"connection to peer {peer.endpoint} lost"
    assert [t.error for t in tickets] == [reason] * 6
    assert len(lost) == 1 and lost[0][0] == reason
    assert lost[0][1] in (threading.current_thread().name, "waiter-1", "waiter-3")   # a waiter read the loss
    assert lost[0][2] == [False] * 6   # and on_lost ran before any ticket completed


def test_a_submit_waiting_for_the_window_gets_the_background_reader_back(keys_dir, peers, clients, reader_aside):
    peer = peers(keys_dir)
    client = clients(peer.endpoint, keys_dir, window=4)
    client.hello(10)
    _settle(client)
    tickets: list[Ticket] = []
    sender = threading.Thread(target=lambda: tickets.extend(client.submit(Op.PING) for _ in range(20)))
    sender.start()   # nobody waits: the acks of the first four must be read for the fifth to go
    sender.join(10)
    assert not sender.is_alive() and len(tickets) == 20
    assert tickets[-1].wait(10) and all(t.done and t.error is None for t in tickets)


def test_a_held_message_leaves_on_time_with_no_other_traffic(keys_dir, peers, clients, slow_reader,
                                                                        monkeypatch):
    from hamirror.link import client as client_module
    monkeypatch.setattr(client_module, "HOLD", 0.05)
    peer = peers(keys_dir)
    client = clients(peer.endpoint, keys_dir)
    client.hello(10)
    transport = client._transport
    for offset in (0, 4096):   # no other traffic: only the timer (or a reader's look at the deadlines) sends it
        write = client.submit(Op.WRITE, (offset,), (b"f",), ((b"f", 1, 2),), b"page", hold=True)
        assert write.wait_completed(5) and write.error is None
    wait_for(lambda: transport._timer_parked, 5, what="the hold timer parked")
    write = client.submit(Op.WRITE, (8192,), (b"f",), ((b"f", 1, 2),), b"page", hold=True)
    assert write.wait_completed(5) and write.error is None
    assert peer.ops() == [Op.HELLO, Op.WRITE, Op.WRITE, Op.WRITE]


def test_every_thread_waiting_on_one_ticket_wakes(keys_dir, peers, clients, reader_aside):
    """A barrier's waiters all wait on the newest ticket: while one thread reads, the others
    follow on that one ticket, and its completion wakes each of them."""
    gate = threading.Event()
    _, client = _settled(keys_dir, peers, clients, lambda m: m.op == Op.STAT and gate.wait(10))
    ticket = client.submit(Op.STAT, (), (b"slow",))
    woken: list[bool] = []
    threads = [threading.Thread(target=lambda: woken.append(ticket.wait(60)), daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.2)   # all four in: one reads, three follow the same ticket
    gate.set()
    for thread in threads:
        thread.join(15)
    assert woken == [True] * 4 and ticket.error is None
