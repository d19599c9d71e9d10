"""The link's ``aead`` engine: a session layer over ZeroMQ's NULL mechanism (docs/security.md).

Why: CURVE costs about 1.1 ms of CPU per MiB; AES-256-GCM from OpenSSL about a quarter of that
(docs/performance.md; per small message the Python around each call costs more than CURVE). The nodes' existing CURVE key pairs (X25519) authenticate a Noise-KK-like handshake (built
from ``cryptography``'s primitives, documented as such, not Noise itself) that gives each
direction its own key; every frame is then sealed with a counter nonce that is never reused and
must be exactly the next one. Any failure raises :class:`SessionError`: the session is over.

Pure apart from the keys: no sockets here. The primary's :class:`ClientHandshake` and the
receiver's :class:`Sessions` turn messages into messages.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from hamirror.link import z85
from hamirror.link.protocol import MAX_FRAME

# ``unfilled(size)``: a bytearray not zeroed first, for a buffer written whole before it is read
# (docs/performance.md, "Link buffers not zeroed"); the extension is optional (link/native.py),
# and bytearray is the same, zeroed.
try:
    from hamirror.link._native import unfilled
except ImportError:
    unfilled = bytearray

ENGINE_ENV = "HAMIRROR_LINK_ENGINE"
CURVE, AEAD = "curve", "aead"
STREAM = "stream"   # aead records on a TCP connection of their own, no ZeroMQ (link/stream.py)
DEFAULT_ENGINE = CURVE   # a previous-release peer speaks CURVE only (docs/upgrade.md)

MAGIC = b"hmK"
_MAGIC_0 = MAGIC[0]
VERSION = 1
INIT, ACCEPT, CONFIRM, REFUSE = 1, 2, 3, 4
KEY = 32
INIT_SIZE = ACCEPT_SIZE = 5 + 2 * KEY
CONFIRM_SIZE = 5 + KEY
MAX_REFUSE_TEXT = 200
PROLOGUE = b"hamirror link aead v1"
KEYS_INFO = PROLOGUE + b" keys"
REKEY_INFO = PROLOGUE + b" rekey"
TO_RECEIVER, TO_PRIMARY = 1, 2     # the nonce's direction
COUNTER = struct.Struct(">Q")
NONCE = struct.Struct(">IQ")
TAG = 16
OVERHEAD = COUNTER.size + TAG
MAX_PARTS = 4                      # frames in one message: a header, a data frame, a reply's payload
MAX_SEALED = MAX_FRAME + OVERHEAD
REKEY_EVERY = 1 << 16              # frames per key: at most ~2^40 bytes under one AES-GCM key
LAST_COUNTER = 1 << 62             # a session ends long before a counter could wrap
MAX_PENDING = 64                   # handshakes in progress on the receiver (oldest dropped)
MAX_SESSIONS = 8                   # established sessions on the receiver (oldest dropped)


class SessionError(Exception):
    """The session is over; the text says why (for the log and the REFUSE message)."""


def engine(value: str | None = None) -> str:
    """The link engine: ``value``, else ``$HAMIRROR_LINK_ENGINE``, else the default."""
    chosen = value if value is not None else os.environ.get(ENGINE_ENV, DEFAULT_ENGINE)
    if chosen not in (CURVE, AEAD, STREAM):
        raise ValueError(f"{ENGINE_ENV}={chosen!r}: the replication link engine must be {CURVE!r}, {AEAD!r} "
                         f"or {STREAM!r}")
    return chosen


def raw_key(key: bytes) -> bytes:
    """32 raw bytes from a key as pyzmq loads it (Z85 text) or raw."""
    raw = z85.decode(key) if len(key) == 40 else bytes(key)
    if len(raw) != KEY:
        raise ValueError("a link key must be 32 bytes (or 40 characters of Z85)")
    return raw


def is_handshake(frame: memoryview | bytes) -> bool:
    """A handshake message (never a sealed frame: its counter would be above 2^62)."""
    return len(frame) >= 5 and bytes(frame[:3]) == MAGIC


def refuse_message(text: str) -> bytes:
    return MAGIC + bytes((VERSION, REFUSE)) + text.encode()[:MAX_REFUSE_TEXT]


def refusal_text(message: bytes) -> str | None:
    """The text of a REFUSE message, or None if ``message`` is not one. Unauthenticated: only
    printable characters are kept, so a forged one cannot write lines of its own into a log."""
    if len(message) >= 5 and bytes(message[:3]) == MAGIC and message[4] == REFUSE:
        text = bytes(message[5:5 + MAX_REFUSE_TEXT]).decode("utf-8", "replace")
        return "".join(c if c.isprintable() else "?" for c in text)
    return None


class Direction:
    """One direction's key and counter: seals (sender) or opens (receiver) frames in order."""

    __slots__ = ("_key", "_aead", "_direction", "counter")

    def __init__(self, key: bytes, direction: int) -> None:
        self._key, self._aead, self._direction, self.counter = key, AESGCM(key), direction, 0

    def _rekey(self) -> None:
        """Every REKEY_EVERY frames: both sides at the same frame; the old key is gone."""
        self._key = _hkdf(self._key, b"", REKEY_INFO, KEY)
        self._aead = AESGCM(self._key)

    def seal(self, parts: list) -> list[bytearray]:
        """Each frame: counter || AES-256-GCM(frame), its index and the message's frame count bound."""
        if not 1 <= len(parts) <= MAX_PARTS:
            raise SessionError(f"a message of {len(parts)} frames cannot be sealed")
        sealed = [unfilled(OVERHEAD + len(part)) for part in parts]   # seal_into writes every byte
        self.seal_into(parts, sealed)
        return sealed

    def seal_into(self, parts: list, frames: list) -> None:
        """:meth:`seal` into buffers the caller made: ``frames[i]`` is writable, ``OVERHEAD``
        bytes longer than ``parts[i]`` (a stream record seals its frames in place, behind its
        head: one buffer, no copy after the encryption)."""
        count = len(parts)
        if not 1 <= count <= MAX_PARTS:
            raise SessionError(f"a message of {count} frames cannot be sealed")
        aad = _AADS[count]
        for index, part in enumerate(parts):
            counter = self.counter
            if counter >= LAST_COUNTER:
                raise SessionError("frame counter exhausted: a new session is needed")
            frame = frames[index]
            COUNTER.pack_into(frame, 0, counter)
            self._aead.encrypt_into(NONCE.pack(self._direction, counter), part, aad[index],
                                    memoryview(frame)[COUNTER.size:])
            self.counter = counter = counter + 1
            if not counter % REKEY_EVERY:
                self._rekey()

    def open(self, parts: list) -> list[bytes]:
        """The plaintext frames; SessionError for anything but the next frames, intact, in order.
        Counts, sizes and counters are checked before anything is allocated.

        Per frame one ``AESGCM.decrypt`` straight from the sealed frame's view (its plaintext is
        the one allocation: no buffer to fill and no view of it, and ``protocol.decode`` takes
        the bytes as they are): the receiver opens every message on its critical path
        (docs/performance.md, "The stream receiver's CPU per message")."""
        count = len(parts)
        if not 1 <= count <= MAX_PARTS:
            raise SessionError(f"a message of {count} frames (1 to {MAX_PARTS} expected)")
        expected = self.counter
        for part in parts:
            size = len(part)
            if not OVERHEAD <= size <= MAX_SEALED:
                raise SessionError(f"a sealed frame of {size} bytes ({OVERHEAD} to {MAX_SEALED} expected)")
            counter = _COUNTER_AT(part)[0]
            if counter != expected:
                raise SessionError(f"frame counter {counter}, expected {expected} "
                                   "(replayed, reordered or lost)")
            expected += 1
        plain = []
        aad = _AADS[count]
        for index, part in enumerate(parts):
            counter = self.counter
            try:
                plain.append(self._aead.decrypt(NONCE.pack(self._direction, counter),
                                                memoryview(part)[COUNTER.size:], aad[index]))
            except InvalidTag:
                raise SessionError(f"frame {counter} failed authentication (altered, or not from the peer)") \
                    from None
            self.counter = counter = counter + 1
            if not counter % REKEY_EVERY:
                self._rekey()
        return plain


@dataclass
class Channel:
    """An established session: what this side sends and what it receives."""

    send: Direction
    recv: Direction


class ClientHandshake:
    """The primary's side: ``init`` to send first; :meth:`accept` checks the receiver's ACCEPT."""

    def __init__(self, own_secret: bytes, own_public: bytes, server_public: bytes) -> None:
        self._static = X25519PrivateKey.from_private_bytes(raw_key(own_secret))
        self._server = raw_key(server_public)
        self._ephemeral: X25519PrivateKey | None = X25519PrivateKey.generate()
        self.init = MAGIC + bytes((VERSION, INIT)) + raw_key(own_public) + _public(self._ephemeral)

    def accept(self, message: bytes) -> tuple[bytes, Channel]:
        """(CONFIRM to send, the channel) once the receiver proved it holds the pinned key."""
        text = refusal_text(message)
        if text is not None:
            raise SessionError(f"the receiver refused the session: {text}")
        _expect(message, ACCEPT, ACCEPT_SIZE)
        if self._ephemeral is None:
            raise SessionError("a second ACCEPT in one handshake")
        their_ephemeral, proof = message[5:5 + KEY], message[5 + KEY:]
        transcript = _transcript(self._server, self.init, their_ephemeral)
        server, ephemeral = _peer(self._server), _peer(their_ephemeral)
        secrets = _exchange((self._ephemeral, server), (self._static, server),
                            (self._ephemeral, ephemeral), (self._static, ephemeral))
        self._ephemeral = None
        to_receiver, to_primary, server_proof, client_proof = _split(secrets, transcript)
        if not hmac.compare_digest(proof, _mac(server_proof, transcript + b"receiver")):
            raise SessionError("the receiver did not prove it holds the pinned public key's secret "
                               "(a wrong key for the peer, or someone posing as it)")
        confirm = MAGIC + bytes((VERSION, CONFIRM)) + _mac(client_proof, transcript + b"primary")
        return confirm, Channel(Direction(to_receiver, TO_RECEIVER), Direction(to_primary, TO_PRIMARY))


@dataclass
class _Pending:
    expected: bytes
    channel: Channel
    name: str


class Sessions:
    """The receiver's side: one handshake or session per ZeroMQ peer (its routing id).

    :meth:`incoming` returns the plaintext frames to handle (or None) and a message to answer at
    once (or None); it never raises. A failure ends that peer's session and answers REFUSE; the
    reason goes to ``on_refused(identity, text, key, established)`` for the log and the audit
    line (``established``: it ended an authenticated session, not a handshake)."""

    def __init__(self, own_secret: bytes, own_public: bytes, trusted: dict[str, bytes], on_refused=None) -> None:
        self._static = X25519PrivateKey.from_private_bytes(raw_key(own_secret))
        self._public = raw_key(own_public)
        self._trusted = {raw_key(key): name for name, key in trusted.items()}
        self._pending: collections.OrderedDict[bytes, _Pending] = collections.OrderedDict()
        self._sessions: collections.OrderedDict[bytes, Channel] = collections.OrderedDict()
        self.on_refused = on_refused
        self.refused = 0

    def incoming(self, identity: bytes, frames: list) -> tuple[list[memoryview] | None, bytes | None]:
        first = frames[0] if frames else b""
        channel = self._sessions.get(identity)
        try:
            # a sealed frame starts with its counter (below 2^62): never MAGIC's first byte
            if channel is not None and (not first or first[0] != _MAGIC_0 or not is_handshake(first)):
                return channel.recv.open(frames), None
            if len(frames) != 1 or not is_handshake(first):
                raise SessionError("a message outside any session (the handshake comes first)")
            message = bytes(first[:INIT_SIZE + 1])
            if channel is not None:
                raise SessionError("a handshake message inside an established session")
            if refusal_text(message) is not None:
                raise SessionError(f"the primary ended the handshake: {refusal_text(message)}")
            pending = self._pending.pop(identity, None)
            if pending is None:
                return None, self._init(identity, message)
            _expect(message, CONFIRM, CONFIRM_SIZE)
            if not hmac.compare_digest(message[5:], pending.expected):
                raise SessionError(f"the primary did not prove it holds the secret of key {pending.name!r}")
            self._sessions[identity] = pending.channel
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
            return None, None
        except SessionError as exc:
            self.close(identity)
            self.refused += 1
            key = bytes(first[5:5 + KEY]) if len(first) >= INIT_SIZE and bytes(first[:5]) == MAGIC + bytes((VERSION, INIT)) else b""
            if self.on_refused is not None:
                self.on_refused(identity, str(exc), key, channel is not None)
            return None, refuse_message(str(exc))

    def _init(self, identity: bytes, message: bytes) -> bytes:
        _expect(message, INIT, INIT_SIZE)
        client = message[5:5 + KEY]
        name = self._trusted.get(client)
        if name is None:   # before any computation: an unknown key costs a dict lookup
            raise SessionError("this node's public key is not trusted by the receiver (is it in the "
                               "receiver's keys directory?)")
        ephemeral = X25519PrivateKey.generate()
        their_ephemeral = message[5 + KEY:INIT_SIZE]
        transcript = _transcript(self._public, message, _public(ephemeral))
        client_key, ephemeral_key = _peer(client), _peer(their_ephemeral)
        secrets = _exchange((self._static, ephemeral_key), (self._static, client_key),
                            (ephemeral, ephemeral_key), (ephemeral, client_key))
        to_receiver, to_primary, server_proof, client_proof = _split(secrets, transcript)
        self._pending[identity] = _Pending(_mac(client_proof, transcript + b"primary"),
                                           Channel(Direction(to_primary, TO_PRIMARY),
                                                   Direction(to_receiver, TO_RECEIVER)), name)
        while len(self._pending) > MAX_PENDING:
            self._pending.popitem(last=False)
        return MAGIC + bytes((VERSION, ACCEPT)) + _public(ephemeral) + _mac(server_proof, transcript + b"receiver")

    def seal(self, identity: bytes, parts: list) -> list[bytearray] | None:
        """A reply for ``identity``, sealed; None if its session is gone (the reply is dropped)."""
        channel = self._sessions.get(identity)
        return channel.send.seal(parts) if channel is not None else None

    def sender(self, identity: bytes) -> Direction | None:
        """What seals replies to ``identity``; None if its session is gone (the reply is dropped)."""
        channel = self._sessions.get(identity)
        return channel.send if channel is not None else None

    def established(self, identity: bytes) -> bool:
        return identity in self._sessions

    def close(self, identity: bytes) -> None:
        self._pending.pop(identity, None)
        self._sessions.pop(identity, None)


def _expect(message: bytes, kind: int, size: int) -> None:
    if len(message) != size or message[:3] != MAGIC or message[3] != VERSION or message[4] != kind:
        raise SessionError(f"malformed handshake message (expected type {kind}, version {VERSION}, "
                           f"{size} bytes)")


# A frame's associated data (its index and the message's frame count), by count then index.
_AADS = [tuple(b"hmF1" + bytes((i, n)) for i in range(n)) for n in range(MAX_PARTS + 1)]
_COUNTER_AT = COUNTER.unpack_from


def _public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def _peer(raw: bytes) -> X25519PublicKey:
    return X25519PublicKey.from_public_bytes(bytes(raw))


def _exchange(*pairs: tuple[X25519PrivateKey, X25519PublicKey]) -> bytes:
    try:
        return b"".join(own.exchange(theirs) for own, theirs in pairs)
    except ValueError:   # OpenSSL refuses an all-zero shared secret (a low-order point)
        raise SessionError("a handshake key that is not a valid X25519 public key") from None


def _transcript(server_public: bytes, init: bytes, server_ephemeral: bytes) -> bytes:
    return hashlib.sha256(PROLOGUE + server_public + init + server_ephemeral).digest()


def _split(secrets: bytes, transcript: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    okm = _hkdf(secrets, transcript, KEYS_INFO, 4 * KEY)
    return okm[:KEY], okm[KEY:2 * KEY], okm[2 * KEY:3 * KEY], okm[3 * KEY:]


def _hkdf(secret: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    return HKDF(hashes.SHA256(), length, salt or None, info).derive(secret)


def _mac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def warm_up() -> None:
    """One handshake and one sealed round trip between throwaway keys, in this process.

    The spawner calls it before it forks the daemons: OpenSSL (inside ``cryptography``)
    initialises its providers, tables and random generator on first use, a few MB of pages per
    process; done once in the spawner, every forked mount and receiver shares them copy-on-write
    instead of making its own (docs/performance.md, "Idle memory of the data path"). OpenSSL 3
    reseeds its random generator in a forked child by itself. Nothing here outlives the call.
    """
    def pair() -> tuple[bytes, bytes]:
        secret = X25519PrivateKey.generate()
        return secret.private_bytes_raw(), _public(secret)

    server_secret, server_public = pair()
    client_secret, client_public = pair()
    receiver = Sessions(server_secret, server_public, {"warm-up": client_public})
    client = ClientHandshake(client_secret, client_public, server_public)
    _, accept = receiver.incoming(b"warm-up", [client.init])
    confirm, channel = client.accept(accept)
    receiver.incoming(b"warm-up", [confirm])
    opened, _ = receiver.incoming(b"warm-up", channel.send.seal([b"warm-up"]))
    if opened != [b"warm-up"]:
        raise SessionError("the warm-up round trip did not open what it sealed")
