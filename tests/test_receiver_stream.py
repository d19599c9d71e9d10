"""The receiver's ``stream`` engine (replica/serve_stream.py): aead session records on a TCP
connection of its own, no ZeroMQ (docs/security.md, "The stream engine").

A real Receiver in this process (its own thread) on 127.0.0.1, and plain-socket clients
(``tests.mirror_fixtures.StreamClient``) that do the real handshake. First a session applies
bytes equal; then what an unauthenticated or hostile peer may try, each followed by a good client
that is still served: a wrong key (exact REFUSE text and audit line), garbage and oversized
lengths before the handshake, a stalled handshake, a flood of connections, replayed or altered
records, a peer that never reads its replies.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest
import zmq

from hamirror.link import keys, session, stream
from hamirror.link.protocol import OK, Op, Reply, decode_reply, encode
from hamirror.replica import serve_stream
from hamirror.replica.receiver import Receiver
from tests.mirror_fixtures import (HELLO_INTS, SESSION, MirrorPair, RawSender, StreamClient, break_once,
                                  receiver_thread, wait_for)

MESSAGES = 200
NOT_TRUSTED = ("this node's public key is not trusted by the receiver (is it in the receiver's keys "
               "directory?)")


@contextlib.contextmanager
def _serving(tmp_path):
    with receiver_thread(str(tmp_path), session.STREAM) as (receiver, _, _):
        yield receiver


def _client(receiver: Receiver, keys_dir: str, handshake: bool = True) -> StreamClient:
    own = keys.load_own(keys_dir)
    return StreamClient(receiver.endpoint, own, keys.peer_public_key(keys_dir, own), handshake)


def _exchange(client: StreamClient, frames: list[bytes]) -> Reply:
    client.send_multipart(frames)
    return decode_reply(client.recv_multipart())


def _still_serves(tmp_path, receiver: Receiver, name: bytes) -> None:
    """A new authenticated connection starts a session and creates a file."""
    client = _client(receiver, str(tmp_path / "keys"))
    try:
        assert _exchange(client, [encode(Op.HELLO, SESSION + 1, 0, HELLO_INTS)]).status == OK
        reply = _exchange(client, [encode(Op.CREATE, SESSION + 1, 1, (0o100644, 0, 0, 0), (name,))])
        assert reply.status == OK, reply
    finally:
        client.close()
    assert (tmp_path / "secondary" / name.decode()).exists()


def test_a_session_applies_in_order_and_the_bytes_match(tmp_path):
    with _serving(tmp_path) as receiver:
        host, port = receiver.endpoint.removeprefix("tcp://").rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0   # the real port, as ZeroMQ's LAST_ENDPOINT
        client = _client(receiver, str(tmp_path / "keys"))
        data = os.urandom(3 << 20)
        chunk = 1 << 20
        messages = [[encode(Op.HELLO, SESSION, 0, HELLO_INTS)],
                    [encode(Op.CREATE, SESSION, 1, (0o100644, 0, 0, 0), (b"f",))]]
        messages += [[encode(Op.WRITE, SESSION, 2 + i, (i * chunk,), (b"f",)), data[i * chunk:(i + 1) * chunk]]
                     for i in range(3)]
        try:
            for frames in messages:   # pipelined: every message sent before the first reply is read
                client.send_multipart(frames)
            replies = [decode_reply(client.recv_multipart()) for _ in messages]
        finally:
            client.close()
        assert [(r.seq, r.status) for r in replies] == [(i, OK) for i in range(5)]
        assert (tmp_path / "secondary" / "f").read_bytes() == data
        assert receiver.stats.applied == 4 and receiver.last_message is not None
        wait_for(lambda: receiver.connections == 0, 5, what="the closed connection to be counted")
        assert receiver.closed_at is not None


def test_a_wrong_key_is_refused_with_its_reason_and_audited(tmp_path, audit_lines):
    with _serving(tmp_path) as receiver:
        intruder = str(tmp_path / "intruder")
        keys.generate(intruder, "intruder")
        own = keys.load_own(intruder)
        client = StreamClient(receiver.endpoint, own, keys.load_own(str(tmp_path / "keys")).public, False)
        handshake = session.ClientHandshake(own.secret, own.public, client.server_public)
        client.send_record(handshake.init)
        assert session.refusal_text(client.read_record(10)) == NOT_TRUSTED
        assert client.wait_closed(5)
        assert audit_lines() == [f"audit: link-key from 127.0.0.1: replication link refused a client: "
                                 f"{NOT_TRUSTED} (public key {own.public.decode()})"]
        assert (receiver.stats.refused, receiver.stats.last_error) == (0, "")   # the status stays the peer's
        _still_serves(tmp_path, receiver, b"after-wrong-key")


@pytest.mark.parametrize("sent,why", [
    (b"\xff\x00\x00\x00\x00\x00\x00\x00\x01\x7f", f"a record of 4278190080 bytes (1 to {stream.MAX_HANDSHAKE} allowed here)"),
    (stream.LENGTH.pack(1 << 30) + b"x" * 1000, f"a record of 1073741824 bytes (1 to {stream.MAX_HANDSHAKE} allowed here)"),
    (stream.LENGTH.pack(0), f"a record of 0 bytes (1 to {stream.MAX_HANDSHAKE} allowed here)"),
    (stream.handshake_record(b"GET / HTTP/1.0\r\n\r\n"), "a message outside any session (the handshake comes first)"),
    (stream.handshake_record(b"hmK\x01\x01" + b"x" * 10), "malformed handshake message (expected type 1, version 1, 69 bytes)"),
], ids=["zeromq greeting", "oversized length", "empty record", "not a handshake", "short INIT"])
def test_garbage_before_the_handshake_closes_that_connection_only(tmp_path, sent, why, audit_lines):
    with _serving(tmp_path) as receiver:
        bystander = _client(receiver, str(tmp_path / "keys"))   # a session open meanwhile
        client = _client(receiver, str(tmp_path / "keys"), handshake=False)
        client.send_raw(sent)
        assert session.refusal_text(client.read_record(10)) == why
        assert client.wait_closed(5)
        assert audit_lines() == [f"audit: link-key from 127.0.0.1: replication link refused a client: {why}"]
        assert _exchange(bystander, [encode(Op.HELLO, SESSION, 0, HELLO_INTS)]).status == OK
        bystander.close()
        _still_serves(tmp_path, receiver, b"after-garbage")


def test_nothing_past_the_handshake_limit_is_read_before_the_session(tmp_path):
    """An INIT followed by 1 MiB at once: the receiver reads the INIT's record only, answers it,
    and judges what follows under the handshake's limit (a length of 1 MiB there: refused)."""
    with _serving(tmp_path) as receiver:
        client = _client(receiver, str(tmp_path / "keys"), handshake=False)
        handshake = session.ClientHandshake(client.own.secret, client.own.public, client.server_public)
        client.send_raw(stream.handshake_record(handshake.init) + stream.LENGTH.pack(1 << 20) + bytes(1 << 20))
        assert session.refusal_text(client.read_record(10)) is None   # ACCEPT
        assert session.refusal_text(client.read_record(10)) == \
            f"a record of {1 << 20} bytes (1 to {stream.MAX_HANDSHAKE} allowed here)"
        _still_serves(tmp_path, receiver, b"after-big")


def test_a_stalled_handshake_is_closed_at_its_deadline(tmp_path, monkeypatch, audit_lines):
    monkeypatch.setattr(serve_stream, "HANDSHAKE_DEADLINE", 0.5)
    with _serving(tmp_path) as receiver:
        client = _client(receiver, str(tmp_path / "keys"), handshake=False)
        handshake = session.ClientHandshake(client.own.secret, client.own.public, client.server_public)
        client.send_raw(stream.handshake_record(handshake.init)[:40])   # half an INIT, then nothing
        assert session.refusal_text(client.read_record(10)) == "no session within 0.5 s of connecting"
        assert client.wait_closed(5)
        assert audit_lines() == ["audit: link-key from 127.0.0.1: replication link refused a client: "
                                 "no session within 0.5 s of connecting"]
        _still_serves(tmp_path, receiver, b"after-stall")


def test_unauthenticated_connections_are_capped(tmp_path):
    with _serving(tmp_path) as receiver:
        idle = [_client(receiver, str(tmp_path / "keys"), handshake=False) for _ in range(20)]
        try:
            wait_for(lambda: receiver.connections == serve_stream.MAX_UNAUTHENTICATED, 10,
                     what=f"{serve_stream.MAX_UNAUTHENTICATED} connections left")
            assert [c.wait_closed(5) for c in idle[:12]] == [True] * 12   # the oldest went first
            assert not any(c.wait_closed(0.2) for c in idle[12:])
            _still_serves(tmp_path, receiver, b"after-flood")
        finally:
            for c in idle:
                c.close()


def test_sessions_are_capped_the_oldest_closed(tmp_path):
    with _serving(tmp_path) as receiver:
        clients = []
        try:
            for _ in range(session.MAX_SESSIONS + 1):
                clients.append(_client(receiver, str(tmp_path / "keys")))
                assert _exchange(clients[-1], [encode(Op.HELLO, SESSION, 0, HELLO_INTS)]).status == OK
            assert clients[0].wait_closed(5)
            assert receiver.connections == session.MAX_SESSIONS
            assert _exchange(clients[-1], [encode(Op.PING, SESSION, 1, (0,))]).status == OK
        finally:
            for c in clients:
                c.close()


@pytest.mark.parametrize("how", ["replayed", "altered", "bad layout"])
def test_a_replayed_or_altered_record_ends_that_session_only(tmp_path, how):
    with _serving(tmp_path) as receiver:
        client = _client(receiver, str(tmp_path / "keys"))
        record = b"".join(bytes(b) for b in stream.seal_record(client.channel.send, [encode(Op.HELLO, SESSION, 0,
                                                                                             HELLO_INTS)]))
        client.send_raw(record)
        assert decode_reply(client.recv_multipart()).status == OK
        if how == "altered":
            record = b"".join(bytes(b) for b in stream.seal_record(client.channel.send, [encode(Op.PING, SESSION, 1, (0,))]))
            record = record[:-1] + bytes([record[-1] ^ 1])
        elif how == "bad layout":
            record = stream.LENGTH.pack(6) + b"\x01\x00\x00\x00\x09x"
        client.send_raw(record)
        why = {"replayed": "frame counter 0, expected 1 (replayed, reordered or lost)",
               "altered": "frame 1 failed authentication (altered, or not from the peer)",
               "bad layout": "a record's frame runs past its end"}[how]
        assert not client.poll(10_000) and client.refusal == why
        assert client.wait_closed(5)
        assert receiver.stats.last_error == f"secure session ended: {why}"
        _still_serves(tmp_path, receiver, b"after-" + how.encode().replace(b" ", b"-"))


def test_a_client_that_never_reads_its_replies_does_not_wedge_the_receiver(tmp_path, monkeypatch, audit_lines):
    """100,000 pipelined PINGs, no reply read: the replies wait in the connection's queue (the
    receiver never blocks on its socket) until they pass the bound, then that connection closes."""
    monkeypatch.setattr(serve_stream, "MAX_QUEUED", 64 << 10)
    with _serving(tmp_path) as receiver:
        deaf = _client(receiver, str(tmp_path / "keys"))
        try:
            deaf.send_multipart([encode(Op.HELLO, SESSION, 0, HELLO_INTS)])
            pings = b"".join(b"".join(bytes(b) for b in stream.seal_record(deaf.channel.send,
                                                                           [encode(Op.PING, SESSION, n, (0,))]))
                             for n in range(1, 100_001))
            threading.Thread(target=deaf.send_raw, args=(pings,), daemon=True).start()
            wait_for(lambda: receiver.connections == 0, 20, what="the deaf connection to be closed")
            assert audit_lines() == ["audit: link-key from 127.0.0.1: replication link refused a client: "
                                     "more than 64 KiB of replies left unread"]
            _still_serves(tmp_path, receiver, b"after-deaf")
        finally:
            deaf.close()


@pytest.mark.parametrize("then", ["close", "stall"])
def test_a_large_record_cut_short_ends_or_holds_only_its_connection(tmp_path, then):
    """A session that sends the start of a 1 MiB record (its length, then 100 KiB) and closes, or
    sends nothing more: the receiver, asked to wake for the rest only (SO_RCVLOWAT), still sees
    the close (the connection ends) and serves every other connection meanwhile."""
    with _serving(tmp_path) as receiver:
        client = _client(receiver, str(tmp_path / "keys"))
        assert _exchange(client, [encode(Op.HELLO, SESSION, 0, HELLO_INTS)]).status == OK
        frames = [encode(Op.WRITE, SESSION, 1, (0,), (b"cut",)), os.urandom(1 << 20)]
        record = b"".join(bytes(b) for b in stream.seal_record(client.channel.send, frames))
        client.send_raw(record[:100_000])
        wait_for(lambda: receiver.connections == 1, 5, what="the session to be counted")
        if then == "close":
            client.close()
            wait_for(lambda: receiver.connections == 0, 5, what="the cut connection to be closed")
        _still_serves(tmp_path, receiver, b"after-" + then.encode())
        assert not (tmp_path / "secondary" / "cut").exists()
        client.close()


def test_a_bug_in_the_transport_ends_one_connection(tmp_path, monkeypatch):
    with _serving(tmp_path) as receiver:
        break_once(monkeypatch, receiver.sessions)
        client = _client(receiver, str(tmp_path / "keys"), handshake=False)
        client.send_record(b"anything")
        assert session.refusal_text(client.read_record(10)) == "internal error in the receiver's session layer"
        _still_serves(tmp_path, receiver, b"after-bug")


def test_a_failure_while_accepting_does_not_stop_the_receiver(tmp_path, monkeypatch):
    real, calls = serve_stream._Connection, []

    def failing_once(*args):
        calls.append(args)
        if len(calls) == 1:
            raise OSError("a socket call failed on a connection reset at once")
        return real(*args)
    monkeypatch.setattr(serve_stream, "_Connection", failing_once)
    with _serving(tmp_path) as receiver:
        host, port = receiver.endpoint.removeprefix("tcp://").rsplit(":", 1)
        socket.create_connection((host, int(port))).close()
        _still_serves(tmp_path, receiver, b"after-accept-failure")
        assert len(calls) == 2


class _ExhaustedListener:
    """The receiver's listener, whose ``accept`` fails with EMFILE while ``exhausted`` is set
    (what a process out of descriptors gets: the connection stays in the backlog)."""

    def __init__(self, real: socket.socket) -> None:
        self.real, self.exhausted, self.failures = real, True, 0

    def accept(self):
        if self.exhausted:
            self.failures += 1
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        return self.real.accept()

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_out_of_descriptors_the_listener_rests_instead_of_spinning_then_accepts_again(tmp_path, caplog):
    with _serving(tmp_path) as receiver:
        listener = receiver.link.listener = _ExhaustedListener(receiver.link.listener)
        host, port = receiver.endpoint.removeprefix("tcp://").rsplit(":", 1)
        waiting = socket.create_connection((host, int(port)))   # stays in the backlog meanwhile
        try:
            wait_for(lambda: listener.failures >= 1, timeout=5)
            time.sleep(2 * serve_stream.ACCEPT_PAUSE)
            # a level-triggered listener polled again at once fails thousands of times a second
            assert listener.failures <= 4, f"{listener.failures} failed accepts in {2 * serve_stream.ACCEPT_PAUSE} s"
            listener.exhausted = False
            _still_serves(tmp_path, receiver, b"after-emfile")
        finally:
            waiting.close()
    assert (f"cannot accept a connection: [Errno {errno.EMFILE}] Too many open files; accepting again in "
            f"{serve_stream.ACCEPT_PAUSE:g} s") in caplog.text


@pytest.mark.parametrize("mechanism", ["NULL", "CURVE"])
def test_a_zeromq_peer_gets_nothing_from_a_stream_receiver(tmp_path, mechanism, audit_lines):
    """Engines never mix: a DEALER's greeting, read as a record length, is above the handshake's limit."""
    with _serving(tmp_path) as receiver:
        context = zmq.Context()
        dealer = context.socket(zmq.DEALER)
        dealer.linger = 0
        if mechanism == "CURVE":
            own = keys.load_own(str(tmp_path / "keys"))
            keys.secure_client(dealer, own, own.public)
        # The receiver may refuse the greeting and close before the first send: a DEALER with no
        # connection then blocks in send (seen 2 times in 20 runs): give up on a send after 1 s.
        dealer.sndtimeo = 1000
        dealer.connect(receiver.endpoint)
        try:
            for frames in ([encode(Op.HELLO, SESSION, 0, HELLO_INTS)],
                           [encode(Op.CREATE, SESSION, 1, (0o100644, 0, 0, 0), (b"x",))]):
                with contextlib.suppress(zmq.Again):
                    dealer.send_multipart(frames)
            assert not dealer.poll(1000)
            wait_for(lambda: audit_lines(), 5, what="the refusal's audit line")
        finally:
            dealer.close(0)
            context.term()
        assert audit_lines()[0] == ("audit: link-key from 127.0.0.1: replication link refused a client: "
                                    f"a record of 4278190080 bytes (1 to {stream.MAX_HANDSHAKE} allowed here)")
        assert os.listdir(tmp_path / "secondary") == [] and receiver.last_message is None


@pytest.mark.parametrize("engine", [session.CURVE, session.AEAD])
def test_a_stream_client_gets_nothing_from_a_zeromq_receiver(tmp_path, engine):
    with receiver_thread(str(tmp_path), engine) as (receiver, _, keys_dir):
        own = keys.load_own(keys_dir)
        with pytest.raises((AssertionError, stream.RecordError)):   # closed, or its greeting read as a length
            StreamClient(receiver.endpoint, own, own.public)
    assert os.listdir(tmp_path / "secondary") == [] and receiver.last_message is None


def _receiver_calls(tmp_path, monkeypatch, talk) -> collections.Counter:
    """The system calls of a real receiver process (strace) while ``talk(sender)`` runs, after
    the HELLO; an idle wait that timed out (= 0) is not a message's."""
    monkeypatch.setenv(session.ENGINE_ENV, session.STREAM)
    pair = MirrorPair(str(tmp_path))
    pair.start_receiver()
    sender, strace, trace = RawSender(pair), None, str(tmp_path / "calls.trace")
    try:
        sender.hello()
        strace = subprocess.Popen(["strace", "-f", "-o", trace, "-p", str(pair.receiver.pid)],
                                  stderr=subprocess.PIPE, text=True)
        assert "attached" in strace.stderr.readline()
        talk(sender)
    finally:
        if strace is not None:
            strace.send_signal(signal.SIGINT)
            strace.wait(10)
        sender.close()
        pair.stop()
    with open(trace) as f:
        calls = collections.Counter(line.split()[1].split("(")[0] for line in f
                                    if "(" in line and not line.rstrip().endswith("= 0") and "resumed>" not in line)
    # strace's attach interrupts the wait the receiver is in; the kernel resumes it as
    # restart_syscall, which is that same epoll_wait
    calls["epoll_wait"] += calls.pop("restart_syscall", 0)
    return calls


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_one_message_costs_the_receiver_one_wait_one_read_one_send(tmp_path, monkeypatch):
    """No I/O thread and no wake-up between threads: the receiver's one thread waits, reads and
    answers each waited PING (counted by strace on a real receiver process)."""
    def pings(sender: RawSender) -> None:
        for _ in range(MESSAGES):
            assert sender.exchange([encode(Op.PING, SESSION, sender.seq)]).status == OK
            sender.seq += 1
    calls = _receiver_calls(tmp_path, monkeypatch, pings)
    for name in ("epoll_wait", "recvfrom", "sendmsg"):
        assert MESSAGES <= calls[name] <= MESSAGES * 1.05, (name, calls.most_common(8))


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_a_large_write_costs_the_receiver_two_wakeups_not_one_per_piece(tmp_path, monkeypatch):
    """A 1 MiB WRITE's record comes over TCP in pieces. Once its length is read the receiver asks
    to be woken when the rest is there (SO_RCVLOWAT) and reads the rest where the body stays:
    about two waits and two reads per message, where a read of 256 KiB per wake-up made five
    or more (docs/performance.md, "A large write's times in its message")."""
    writes = 40

    def large_writes(sender: RawSender) -> None:
        assert sender.exchange([encode(Op.CREATE, SESSION, sender.seq, (0o100644, 0, 0, 0), (b"big",))]).status == OK
        sender.seq += 1
        for n in range(writes):
            frames = [encode(Op.WRITE, SESSION, sender.seq, (n << 20,), (b"big",)), os.urandom(1 << 20)]
            assert sender.exchange(frames).status == OK
            sender.seq += 1
    calls = _receiver_calls(tmp_path, monkeypatch, large_writes)
    for name in ("epoll_wait", "recvfrom"):
        assert calls[name] <= 2 * writes + writes // 4, (name, calls.most_common(8))   # (5 per write before)


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_the_replies_held_for_the_unsynced_log_go_out_together(tmp_path, monkeypatch):
    """Pipelined CREATEs of new paths: their replies wait for one flush of the unsynced log per
    batch, then each batch leaves in one sendmsg (not one per reply), every reply OK and in order."""
    def creates(sender: RawSender) -> None:
        client = sender.socket
        client.send_raw(b"".join(bytes(b) for n in range(1, MESSAGES + 1) for b in stream.seal_record(
            client.channel.send, [encode(Op.CREATE, SESSION, n, (0o100644, 0, 0, 0), (b"f%d" % n,))])))
        assert [decode_reply(client.recv_multipart()) for _ in range(MESSAGES)] == \
            [Reply(n, OK, durable=None) for n in range(1, MESSAGES + 1)]
    calls = _receiver_calls(tmp_path, monkeypatch, creates)
    assert calls["sendmsg"] <= MESSAGES // 8, calls.most_common(8)
    assert sorted(os.listdir(tmp_path / "secondary")) == sorted(f"f{n}" for n in range(1, MESSAGES + 1))


@pytest.mark.parametrize("bind,expected", [
    ("tcp://*:5555", ("0.0.0.0", 5555)), ("tcp://127.0.0.1:*", ("127.0.0.1", 0)),
    ("tcp://[::1]:0", ("::1", 0)), ("tcp://node1.example:7000", ("node1.example", 7000))])
def test_endpoints_are_read_as_zeromq_binds_them(bind, expected):
    assert serve_stream.parse_endpoint(bind) == expected


@pytest.mark.parametrize("bind", ["127.0.0.1:5555", "tcp://127.0.0.1", "tcp://127.0.0.1:http", "tcp://h:70000"])
def test_a_bad_endpoint_is_named(bind):
    with pytest.raises(ValueError, match=bind.replace(".", r"\.")):
        serve_stream.parse_endpoint(bind)


def test_a_port_in_use_is_named(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        keys.generate(str(tmp_path / "keys"), "test")
        with pytest.raises(serve_stream.ListenError, match="Address already in use"):
            Receiver(str(tmp_path), f"tcp://127.0.0.1:{port}", str(tmp_path / "keys"), engine=session.STREAM)
