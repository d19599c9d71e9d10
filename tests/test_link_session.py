"""The link's ``aead`` engine attacked (docs/security.md, "The link's AEAD engine").

First the session layer alone (hamirror/link/session.py: real X25519 and AES-256-GCM, no
sockets): wrong keys, tampered, replayed, reordered, regrouped, truncated and oversized frames,
replayed handshakes, invalid keys, the rekey. Then a real LinkClient and Receiver over loopback:
bytes equal on both sides, a bit flipped in transit by a TCP proxy, a refused key (with its
audit line), and downgrades (an unsealed operation, a CURVE client, a CURVE receiver).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import tracemalloc

import pytest
import zmq

from hamirror.link import keys, session
from hamirror.link.client import LinkClient, PeerLost
from hamirror.link.protocol import OK, Op, decode_reply, encode
from hamirror.replica.receiver import Receiver
from hamirror.link.session import SessionError
from tests.conftest import run_cli
from tests.mirror_fixtures import break_once, receiver_thread

# -- the session layer alone ---------------------------------------------------------------------


def _pair(tmp_path, name: str) -> keys.KeyPair:
    keys.generate(str(tmp_path / name), name)
    return keys.load_own(str(tmp_path / name))


@pytest.fixture
def nodes(tmp_path):
    """(primary pair, receiver pair, the receiver's Sessions trusting the primary)."""
    primary, receiver = _pair(tmp_path, "primary"), _pair(tmp_path, "receiver")
    refusals: list[str] = []
    sessions = session.Sessions(receiver.secret, receiver.public, {"primary": primary.public},
                                on_refused=lambda identity, text, key, established: refusals.append(text))
    sessions.refusals = refusals
    return primary, receiver, sessions


def _connect(primary, receiver, sessions, identity=b"id-1"):
    """A full handshake; returns the primary's channel (the receiver's is in ``sessions``)."""
    handshake = session.ClientHandshake(primary.secret, primary.public, receiver.public)
    plain, accept = sessions.incoming(identity, [handshake.init])
    assert plain is None and session.refusal_text(accept) is None
    confirm, channel = handshake.accept(accept)
    assert sessions.incoming(identity, [confirm]) == (None, None)
    assert sessions.established(identity)
    return channel


def _refused(sessions, identity, frames, why: str) -> None:
    plain, answer = sessions.incoming(identity, frames)
    assert plain is None
    assert why in session.refusal_text(answer), session.refusal_text(answer)
    assert not sessions.established(identity)


def test_sealed_frames_round_trip_both_ways(nodes):
    primary, receiver, sessions = nodes
    channel = _connect(primary, receiver, sessions)
    data = os.urandom(1 << 20)
    plain, _ = sessions.incoming(b"id-1", channel.send.seal([b"header", data]))
    assert [bytes(p) for p in plain] == [b"header", data]
    sealed = sessions.seal(b"id-1", [b"reply", b"payload"])
    assert all(b"reply" not in bytes(f) for f in sealed)   # not in clear
    assert [bytes(p) for p in channel.recv.open(sealed)] == [b"reply", b"payload"]


@pytest.mark.parametrize("where", ["counter", "ciphertext", "tag"])
def test_a_tampered_frame_is_refused_and_ends_the_session(nodes, where):
    primary, receiver, sessions = nodes
    channel = _connect(primary, receiver, sessions)
    frame = channel.send.seal([b"a header of some length"])[0]
    at = {"counter": 7, "ciphertext": 12, "tag": len(frame) - 1}[where]
    frame[at] ^= 0x01
    _refused(sessions, b"id-1", [frame], "replayed, reordered" if where == "counter" else "failed authentication")
    _refused(sessions, b"id-1", channel.send.seal([b"next"]), "outside any session")   # the session is over


def test_a_replayed_frame_is_refused(nodes):
    primary, receiver, sessions = nodes
    channel = _connect(primary, receiver, sessions)
    first = channel.send.seal([b"first"])
    assert sessions.incoming(b"id-1", first)[0] is not None
    _refused(sessions, b"id-1", first, "frame counter 0, expected 1 (replayed")


def test_a_reordered_or_dropped_frame_is_refused(nodes):
    primary, receiver, sessions = nodes
    channel = _connect(primary, receiver, sessions)
    channel.send.seal([b"first"])                    # lost on the way (or held back by an attacker)
    _refused(sessions, b"id-1", channel.send.seal([b"second"]), "frame counter 1, expected 0")


def test_frames_moved_between_messages_are_refused(nodes):
    """ZeroMQ's "more" flags are not protected: each frame binds its index and the frame count."""
    primary, receiver, sessions = nodes
    channel = _connect(primary, receiver, sessions)
    header, data = channel.send.seal([b"header", b"data"])
    _refused(sessions, b"id-1", [header], "failed authentication")


def test_a_frame_from_another_connection_is_refused(nodes):
    primary, receiver, sessions = nodes
    channel = _connect(primary, receiver, sessions, b"id-1")
    _refused(sessions, b"id-2", channel.send.seal([b"x"]), "outside any session")


@pytest.mark.parametrize("size,why", [(0, "sealed frame of 0 bytes"), (session.OVERHEAD - 1, "of 23 bytes"),
                                      (session.MAX_SEALED + 1, f"of {session.MAX_SEALED + 1} bytes")])
def test_a_truncated_or_oversized_frame_is_refused_before_any_allocation(nodes, size, why):
    primary, receiver, sessions = nodes
    _connect(primary, receiver, sessions)
    frame = memoryview(bytearray(size))   # the buffer ZeroMQ holds already
    tracemalloc.start()
    try:
        _refused(sessions, b"id-1", [frame], why)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024, f"{peak} bytes allocated to refuse a frame of {size} bytes"


def test_too_many_frames_are_refused(nodes):
    primary, receiver, sessions = nodes
    channel = _connect(primary, receiver, sessions)
    with pytest.raises(SessionError):
        channel.send.seal([b"x"] * 5)
    _refused(sessions, b"id-1", [b"\0" * 30] * 5, "a message of 5 frames")


def test_a_primary_whose_key_is_not_trusted_is_refused_before_any_computation(tmp_path, nodes):
    _, receiver, sessions = nodes
    intruder = _pair(tmp_path, "intruder")
    handshake = session.ClientHandshake(intruder.secret, intruder.public, receiver.public)
    _refused(sessions, b"id-1", [handshake.init], "not trusted by the receiver")


def test_a_trusted_public_key_without_its_secret_gets_no_session(tmp_path, nodes):
    """Public keys are not secret: INIT with the primary's public key but another secret."""
    primary, receiver, sessions = nodes
    intruder = _pair(tmp_path, "intruder")
    handshake = session.ClientHandshake(intruder.secret, primary.public, receiver.public)
    plain, accept = sessions.incoming(b"id-1", [handshake.init])
    assert session.refusal_text(accept) is None   # ACCEPT: the receiver cannot tell yet...
    with pytest.raises(SessionError, match="did not prove"):
        handshake.accept(accept)                 # ...but the intruder cannot check the receiver's proof
    confirm = session.MAGIC + bytes((session.VERSION, session.CONFIRM)) + os.urandom(32)
    _refused(sessions, b"id-1", [confirm], "did not prove it holds the secret of key 'primary'")


def test_a_receiver_without_the_pinned_key_is_refused_by_the_primary(tmp_path, nodes):
    """A man in the middle with its own pair, trusting the primary's public key."""
    primary, receiver, _ = nodes
    mitm = _pair(tmp_path, "mitm")
    fake = session.Sessions(mitm.secret, receiver.public, {"primary": primary.public})   # claims to be S
    handshake = session.ClientHandshake(primary.secret, primary.public, receiver.public)
    _, accept = fake.incoming(b"id-1", [handshake.init])
    with pytest.raises(SessionError, match="did not prove it holds the pinned public key's secret"):
        handshake.accept(accept)


def test_a_replayed_handshake_gets_no_session(nodes):
    primary, receiver, sessions = nodes
    handshake = session.ClientHandshake(primary.secret, primary.public, receiver.public)
    _, accept = sessions.incoming(b"id-1", [handshake.init])
    confirm, channel = handshake.accept(accept)
    assert sessions.incoming(b"id-1", [confirm]) == (None, None)
    first = channel.send.seal([b"an operation"])
    # The same bytes again on a new connection: the receiver's fresh ephemeral key changes everything.
    _, accept2 = sessions.incoming(b"id-2", [handshake.init])
    assert accept2 != accept
    _refused(sessions, b"id-2", [confirm], "did not prove")
    _refused(sessions, b"id-2", first, "outside any session")


@pytest.mark.parametrize("point", ["00" * 32, "01" + "00" * 31,
                                   "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"])
def test_a_low_order_ephemeral_key_is_refused(nodes, point):
    primary, _, sessions = nodes
    init = session.MAGIC + bytes((session.VERSION, session.INIT)) + session.raw_key(primary.public) \
        + bytes.fromhex(point)
    _refused(sessions, b"id-1", [init], "not a valid X25519 public key")


@pytest.mark.parametrize("message,why", [
    (b"hmK", "outside any session"),
    (b"hmK\x01\x01" + b"x" * 10, "malformed handshake message"),
    (b"hmK\x01\x01" + b"x" * 200, "malformed handshake message"),
    (b"hmK\x02\x01" + b"x" * 64, "malformed handshake message"),   # another version
    (b"hmK\x01\x03" + b"x" * 32, "malformed handshake message"),   # CONFIRM before INIT
    (b"hmK\x01\x04no thanks", "ended the handshake: no thanks"),
    (b"", "outside any session"),
])
def test_handshake_garbage_is_refused(nodes, message, why):
    _refused(nodes[2], b"id-1", [message], why)


def test_a_forged_refusal_cannot_write_lines_into_a_log(nodes):
    _refused(nodes[2], b"id-1", [b"hmK\x01\x04bye\naudit: forged line\x1b[2J"], "ended the handshake: bye?audit")
    assert "\n" not in nodes[2].refusals[-1] and "\x1b" not in nodes[2].refusals[-1]


def test_a_handshake_message_inside_a_session_ends_it(nodes):
    primary, receiver, sessions = nodes
    _connect(primary, receiver, sessions)
    handshake = session.ClientHandshake(primary.secret, primary.public, receiver.public)
    _refused(sessions, b"id-1", [handshake.init], "inside an established session")


def test_the_rekey_changes_the_key_on_both_sides_at_the_same_frame(nodes, monkeypatch):
    monkeypatch.setattr(session, "REKEY_EVERY", 4)
    primary, receiver, sessions = nodes
    channel = _connect(primary, receiver, sessions)
    first_key = channel.send._key
    for i in range(9):   # 14 frames, across three rekeys, in messages of one and two frames
        parts = [b"h%d" % i] if i % 2 else [b"h%d" % i, b"d%d" % i]
        assert [bytes(p) for p in sessions.incoming(b"id-1", channel.send.seal(parts))[0]] == parts
    assert channel.send.counter == 14 and channel.send._key != first_key
    stale = session.Direction(first_key, session.TO_RECEIVER)   # a sender that never rekeyed
    stale.counter = 14
    _refused(sessions, b"id-1", stale.seal([b"x"]), "frame 14 failed authentication")


def test_a_bad_engine_setting_is_named_by_the_receiver(tmp_path):
    keys.generate(str(tmp_path / "keys"), "test")
    result = run_cli("mirror", "receive", "--dir", str(tmp_path), "--bind", "tcp://127.0.0.1:0",
                     "--keys", str(tmp_path / "keys"), env={**os.environ, session.ENGINE_ENV: "none"})
    assert result.returncode != 0
    assert "HAMIRROR_LINK_ENGINE='none': the replication link engine must be 'curve', 'aead' or 'stream'" in result.stderr
    assert "cannot listen" not in result.stderr, result.stderr


def test_the_engine_setting_is_checked(monkeypatch):
    monkeypatch.setenv(session.ENGINE_ENV, "null")
    with pytest.raises(ValueError, match="HAMIRROR_LINK_ENGINE='null': the replication link engine must be"):
        session.engine()
    monkeypatch.delenv(session.ENGINE_ENV)
    assert session.engine() == session.DEFAULT_ENGINE
    assert session.engine("aead") == session.AEAD
    assert session.engine("stream") == session.STREAM


# -- a real LinkClient and Receiver over loopback -------------------------------------------------

def _receiver(tmp_path, engine: str = session.AEAD, keys_dir: str | None = None):
    return receiver_thread(str(tmp_path), engine, keys_dir)


def _write_file(client: LinkClient, name: bytes, data: bytes):
    client.hello(10)
    client.submit(Op.CREATE, (0o100644, 0, 0, 0), (name,))
    return client.submit(Op.WRITE, (0,), (name,), data=data)


def test_a_real_link_replicates_bytes_equal_and_nothing_travels_in_clear(tmp_path):
    with _receiver(tmp_path) as (receiver, context, keys_dir):
        client = LinkClient(receiver.endpoint, keys_dir, context=context, engine=session.AEAD)
        try:
            data = os.urandom(3 << 20)
            ticket = _write_file(client, b"f", data)
            assert ticket.wait(20) and ticket.error is None, ticket.error
        finally:
            client.close()
        assert (tmp_path / "secondary" / "f").read_bytes() == data
        assert receiver.last_message is not None and receiver.stats.refused == 0


def _still_serves(tmp_path, receiver: Receiver, context: zmq.Context, keys_dir: str, name: bytes) -> None:
    """A new session with the real key applies a write."""
    client = LinkClient(receiver.endpoint, keys_dir, context=context, engine=session.AEAD)
    try:
        ticket = _write_file(client, name, b"still serving")
        assert ticket.wait(10) and ticket.error is None, ticket.error
    finally:
        client.close()
    assert (tmp_path / "secondary" / name.decode()).read_bytes() == b"still serving"


class _FlippingProxy:
    """A TCP proxy that flips one bit of the primary -> receiver stream at byte ``offset``."""

    def __init__(self, target: str, offset: int) -> None:
        host, port = target.removeprefix("tcp://").rsplit(":", 1)
        self.target, self.offset = (host, int(port)), offset
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"tcp://127.0.0.1:{self.listener.getsockname()[1]}"
        self.flipped = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        client, _ = self.listener.accept()
        server = socket.create_connection(self.target)
        threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()
        self._pump(client, server, True)

    def _pump(self, src: socket.socket, dst: socket.socket, flip: bool) -> None:
        seen = 0
        with contextlib.suppress(OSError):
            while chunk := src.recv(65536):
                if flip and seen <= self.offset < seen + len(chunk):
                    chunk = bytearray(chunk)
                    chunk[self.offset - seen] ^= 0x10
                    self.flipped = True
                seen += len(chunk)
                dst.sendall(chunk)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def test_a_bit_flipped_in_transit_is_refused_and_the_primary_loses_the_link(tmp_path):
    with _receiver(tmp_path) as (receiver, context, keys_dir):
        proxy = _FlippingProxy(receiver.endpoint, 600_000)   # inside the WRITE's 1 MiB data frame
        lost: list[str] = []
        client = LinkClient(proxy.endpoint, keys_dir, context=context, engine=session.AEAD,
                            on_lost=lambda reason, tickets: lost.append(reason))
        try:
            ticket = _write_file(client, b"f", os.urandom(1 << 20))
            assert ticket.wait(20)
        finally:
            client.close()
        assert proxy.flipped
        assert ticket.error and "failed authentication" in ticket.error, ticket.error
        assert lost == [ticket.error]
        assert (tmp_path / "secondary" / "f").read_bytes() == b""   # CREATE applied, the WRITE not
        assert "failed authentication" in receiver.stats.last_error
        _still_serves(tmp_path, receiver, context, keys_dir, b"g")


@pytest.mark.parametrize("engine", [session.AEAD, session.STREAM])
def test_a_primary_with_an_untrusted_key_is_refused_and_audited(tmp_path, audit_lines, engine):
    with _receiver(tmp_path, engine) as (receiver, context, _):
        intruder = str(tmp_path / "intruder")
        keys.generate(intruder, "intruder")
        shutil_copy(tmp_path / "keys" / "test.key", intruder)   # it knows the receiver's public key
        client = LinkClient(receiver.endpoint, intruder, context=context, engine=engine, peer_key_name="test")
        try:
            with pytest.raises(PeerLost) as refused:
                client.hello(10)
            assert str(refused.value) == (f"secure session with peer {receiver.endpoint} ended: the receiver "
                                          "refused the session: this node's public key is not trusted by the "
                                          "receiver (is it in the receiver's keys directory?)")
        finally:
            client.close()
        public = keys.load_own(intruder).public.decode()
        assert audit_lines() == [f"audit: link-key from 127.0.0.1: replication link refused a client: this node's "
                                 f"public key is not trusted by the receiver (is it in the receiver's keys "
                                 f"directory?) (public key {public})"]
        assert receiver.last_message is None and os.listdir(tmp_path / "secondary") == []
        assert (receiver.stats.refused, receiver.stats.last_error) == (0, "")   # the status stays the peer's


def test_unsealed_operations_are_refused_and_do_not_count_as_a_live_primary(tmp_path):
    """A downgrade to NULL: a plain DEALER sends valid operations without any handshake."""
    with _receiver(tmp_path) as (receiver, context, _):
        plain = context.socket(zmq.DEALER)
        plain.linger = 0
        plain.connect(receiver.endpoint)
        try:
            for frames in ([encode(Op.HELLO, 77, 0, (1, 0))], [encode(Op.CREATE, 77, 1, (0o100644, 0, 0, 0), (b"x",))]):
                plain.send_multipart(frames)
                assert plain.poll(5000)
                answer = plain.recv_multipart()
                assert session.refusal_text(answer[0]) == "a message outside any session (the handshake comes first)"
        finally:
            plain.close(0)
        assert os.listdir(tmp_path / "secondary") == []
        assert receiver.last_message is None   # the agent must not read garbage as the primary's life


def test_a_bug_in_the_session_layer_does_not_stop_the_receiver(tmp_path, monkeypatch):
    with _receiver(tmp_path) as (receiver, context, keys_dir):
        break_once(monkeypatch, receiver.sessions)
        plain = context.socket(zmq.DEALER)
        plain.linger = 0
        plain.connect(receiver.endpoint)
        try:
            plain.send(b"anything")
            assert plain.poll(5000)
            assert session.refusal_text(plain.recv()) == "internal error in the receiver's session layer"
        finally:
            plain.close(0)
        _still_serves(tmp_path, receiver, context, keys_dir, b"f")


@pytest.mark.parametrize("client_engine,receiver_engine", [("curve", "aead"), ("aead", "curve")])
def test_engines_never_mix(tmp_path, client_engine, receiver_engine):
    """Downgrade from either side: a pair whose engines differ fails; nothing is applied."""
    with _receiver(tmp_path, receiver_engine) as (receiver, context, keys_dir):
        client = LinkClient(receiver.endpoint, keys_dir, context=context, engine=client_engine, ack_timeout=2)
        try:
            with pytest.raises(PeerLost) as refused:
                _write_file(client, b"x", b"data")
        finally:
            client.close()
        assert os.listdir(tmp_path / "secondary") == []
        if client_engine == "aead":
            assert "HAMIRROR_LINK_ENGINE" in str(refused.value), refused.value


def shutil_copy(src, dst) -> None:
    import shutil

    shutil.copy(src, dst)
