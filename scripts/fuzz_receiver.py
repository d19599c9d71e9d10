#!/usr/bin/env python3
"""Fuzz the replication receiver with a *trusted* key, for a bounded time (issue 8).

    .venv/bin/python scripts/fuzz_receiver.py --seconds 600 [--seed N] [--json]

A real receiver process serves a directory that is its own small tmpfs (``nodev,nosuid``: nothing
it is made to write can fill a real disk, and no device node made there can be opened), inside a
sandbox with bait: symlinks from the directory to a sentinel folder outside it and to the sandbox.
Over CURVE, with the key pair the receiver trusts, the fuzzer sends every message type with random
field values (paths from a small vocabulary so operations meet each other, plus hostile ones;
integers from the edges of their types), in-order streams and pipelined bursts, stale and replayed
sequence numbers, new sessions, resync sessions, mutated frames, and now and then a frame above
ZeroMQ's size limit. Every message must be answered in time (the oversized frame must not be).
With ``HAMIRROR_LINK_ENGINE=aead`` the same stream goes through a sealed session, and a second,
unauthenticated connection sends handshake garbage (random bytes, truncated or padded INITs,
untrusted and invalid keys, bad confirmations, unsealed operations) and, after a real handshake,
tampered, replayed, reordered and out-of-bounds sealed frames: each must be refused (REFUSE or
ACCEPT only, never a sealed reply), and nothing it sent may be applied. With
``HAMIRROR_LINK_ENGINE=stream`` the same, as records on plain TCP connections (the receiver closes
a connection after each refusal: the garbage sender connects again); the frame above the size
limit is then refused with REFUSE, never answered.

Afterwards: the receiver is alive and applies a valid operation, the sandbox and the sentinel are
exactly as before, and the receiver's log shows no unexpected exception. It prints a summary;
the exit status is 0 only if all of that held. Same seed, same messages.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import random
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import zmq  # noqa: E402

from hamirror.link import keys, protocol, session  # noqa: E402
from hamirror.link.protocol import ERROR, HELLO_RESYNC, OK, SPECS, Op, decode_reply, encode  # noqa: E402
from hamirror.link import stream  # noqa: E402
from tests.mirror_fixtures import StreamClient, hostile_receiver, own_filesystem, tree_snapshot  # noqa: E402

REPLY_TIMEOUT_MS = 20_000
OVERSIZE_EVERY = 40.0   # seconds between frames above MAX_FRAME (each allocates ~17 MB here)
NAMES = [b"a", b"b", b"ka", b"d", b"evil", b"evilfile", b"abs", b"up", b"sub", b"ok", b"f", b"x"]
HOSTILE = [b"..", b"../x", b"/etc/passwd", b"a//b", b"a/./b", b"x\0y", b"", b"a" * 256,
           protocol.CONFLICT_DIR, protocol.CONFLICT_DIR + b"/x", b"evil/x", b"up/m", b"abs/ghost"]
EDGES = [0, 1, -1, 2, 3, 4, 7, 0o777, 0o4755, 0o7777, 2**31 - 1, 2**31, 2**32 - 2, 2**32 - 1, 2**32,
         2**40, 2**62, 2**63 - 1, -2**63, -2]
MODES = [0o100644, 0o100666, 0o104755, 0o010666, 0o012660, 0o140755, 0o020666, 0o060660,
         0o040755, 0o041777, 0o120777, 0o170000, 0o000644, 0]
IDS = [-1, 0, 0, 1000, 65534, 2**32 - 2]
XATTRS = [b"user.x", b"user.y", b"trusted.t", b"security.capability", b"system.posix_acl_access",
          b"nonamespace", b"user." + b"n" * 250]
SIZES = [0, 1, 7, 100, 4096, 65536, 1 << 20]


def _history(rnd: random.Random) -> bytes:
    """RESYNC_DONE data: a valid history or one of many wrong shapes."""
    gen = {"id": f"{rnd.getrandbits(64):016x}", "created_at": time.time()}
    return rnd.choice([
        lambda: json.dumps({"current": gen, "history": [], "changes_base": None}),
        lambda: json.dumps({"current": gen, "history": [gen] * rnd.choice([1, 32, 33]), "changes_base": gen["id"]}),
        lambda: json.dumps([1, 2, 3]), lambda: "not json {", lambda: "[" * 50000, lambda: "null",
        lambda: json.dumps({"current": {"id": 5}}), lambda: json.dumps({"current": gen, "extra": 1}),
        lambda: json.dumps({"current": {"id": "x", "created_at": "now"}}), lambda: "\udcff",
        lambda: json.dumps({"history": "abc"}), lambda: json.dumps({"current": gen, "changes_base": 7}),
    ])().encode("utf-8", "surrogateescape")


class Fuzzer:
    """Draws messages from a seeded generator and sends them to one receiver."""

    def __init__(self, pair, sender, outside: str, rnd: random.Random) -> None:
        self.pair, self.sender, self.socket, self.rnd = pair, sender, sender.socket, rnd
        self.outside = outside
        self.session, self.next_seq = 0, 0
        self.counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.recent: collections.deque = collections.deque(maxlen=12)
        self.failure: str | None = None
        self.wild = False   # this message may carry edge values, hostile paths, mutated bytes
        self.made: collections.deque = collections.deque(maxlen=40)   # paths created (so they meet)
        self.sent: list[tuple[Op, tuple[bytes, ...]]] = []

    # fields ---------------------------------------------------------------------------------

    def path(self, root_ok: bool = True) -> bytes:
        r = self.rnd.random()
        if r < 0.08 and root_ok:
            return b"."
        if r < 0.15 and self.wild:
            return self.rnd.choice(HOSTILE)
        if r < 0.18 and self.wild:
            return bytes(self.rnd.getrandbits(8) for _ in range(self.rnd.randint(1, 12)))
        if r < 0.6 and self.made:
            return self.rnd.choice(self.made)
        return b"/".join(self.rnd.choice(NAMES) for _ in range(self.rnd.choice([1, 1, 1, 2, 2, 3])))

    def edge(self) -> int:
        return self.rnd.choice(EDGES) if self.rnd.random() < 0.7 else self.rnd.randint(-2**63, 2**63 - 1)

    def ints(self, op: Op) -> tuple[int, ...]:
        c = self.rnd.choice
        plausible = {
            Op.CREATE: lambda: (c([0o100644, 0o100644, 0o104755, 0o010666, 0o140755, 0o020666, 0o060660] + MODES),
                                c(IDS[1:]), c(IDS[1:]), c([0, 0, os.makedev(1, 3), os.makedev(8, 0), 7])),
            Op.MKDIR: lambda: (c(MODES), c(IDS), c(IDS)), Op.SYMLINK: lambda: (c(IDS), c(IDS)),
            Op.RENAME: lambda: (c([0, 0, 0, 1, 2, 3, 4]),),
            Op.WRITE: lambda: (c([0, 0, 1, 4095, 4096, 1 << 20, 2**40, protocol.INT64_MAX - protocol.MAX_DATA]),),
            Op.TRUNCATE: lambda: (c([0, 1, 4096, 1 << 20, 1 << 30, 2**40]),),
            Op.FALLOCATE: lambda: (c([0, 1, 3, 8, 0x10, 0x20, 0x40]), c([0, 4096, 1 << 20]),
                                   c([1, 4096, 1 << 20, 32 << 20, 2**40])),
            Op.CHMOD: lambda: (c(MODES) & 0o7777,), Op.CHOWN: lambda: (c(IDS), c(IDS)),
            Op.SETXATTR: lambda: (c([0, 0, 1, 2, 3]),), Op.FSYNC: lambda: (c([0, 1]),),
            Op.WRITE_FSYNC: lambda: (c([0, 1, 4096, 1 << 20, 2**40]), c([0, 1, 1, 2])),
            Op.BLOCKSUMS: lambda: (c([0, 4096, 1 << 20, 2**40]), c([0, 1, 4096, 4 << 20, 64 << 20]),
                                   c([4096, 65536, 1 << 20, protocol.MAX_DATA])),
            Op.REMOVE: lambda: (c([0, 1, 1]),),
            # Paged answers (resync/pages.py): no cursor (one message), the first page, later or wild ones.
            Op.LISTDIR: lambda: c([(), (0,), (0,), (1,), (3,), (2**40,), (-1,)]),
            Op.CHANGES: lambda: c([(), (0,), (0,), (1,), (3,), (2**40,), (-1,)]),
        }.get(op, lambda: ())()
        return tuple(v if not self.wild or self.rnd.random() < 0.7 else self.edge() for v in plausible)

    def strs(self, op: Op) -> tuple[bytes, ...]:
        kinds = SPECS[op].strs
        out = []
        for kind in kinds:
            if kind == protocol.NAME:
                out.append(self.rnd.choice(XATTRS))
            elif kind == protocol.TARGET:
                out.append(self.rnd.choice([b"a", b"../../..", b"/etc/passwd", self.outside.encode(),
                                            b"sub/../..", b"x" * 4000]))
            else:
                out.append(self.path())
        return tuple(out)

    def data(self, op: Op) -> bytes | None:
        if not SPECS[op].has_data:
            return None
        if op == Op.RESYNC_DONE:
            return _history(self.rnd)
        limit = protocol.MAX_XATTR_VALUE if op == Op.SETXATTR else 1 << 20
        size = min(self.rnd.choice(SIZES + [limit + 1]), limit + 1)
        return self.rnd.randbytes(size) if self.rnd.random() < 0.5 else b"z" * size

    def times(self, strs: tuple[bytes, ...]) -> tuple:
        """Mostly none, or the operation's own path and its parent (what a real sender sends)."""
        n = self.rnd.choice([0] * 6 + [1, 2, protocol.MAX_TIMES])
        own = [s for s in strs[:1] if s] + [b"."]
        return tuple((self.rnd.choice(own) if self.rnd.random() < 0.8 else self.path(),
                      self.rnd.choice([0, 10**18, time.time_ns()]) if self.rnd.random() < 0.7 else self.edge(),
                      self.rnd.choice([0, 10**18, time.time_ns()]) if self.rnd.random() < 0.7 else self.edge())
                     for _ in range(n))

    # messages -------------------------------------------------------------------------------

    def message(self, op: Op, seq: int) -> list[bytes]:
        self.wild = self.rnd.random() < 0.4
        strs = self.strs(op)
        self.sent.append((op, strs))
        frames = [encode(op, self.session, seq, self.ints(op), strs, self.times(strs))]
        data = self.data(op)
        if data is not None:
            frames.append(data)
        if self.wild and self.rnd.random() < 0.2:
            frames = self.mutate(frames)
        return frames

    def mutate(self, frames: list[bytes]) -> list[bytes]:
        header = bytearray(frames[0])
        for _ in range(self.rnd.randint(1, 4)):
            pos = self.rnd.randrange(len(header) + 1)
            kind = self.rnd.choice(["flip", "cut", "insert", "frame"])
            if kind == "flip" and pos < len(header):
                header[pos] = self.rnd.getrandbits(8)
            elif kind == "cut":
                del header[pos:pos + self.rnd.randint(1, 8)]
            elif kind == "insert":
                header[pos:pos] = self.rnd.randbytes(self.rnd.randint(1, 8))
            else:
                frames = frames[:1] if len(frames) > 1 else frames + [b"extra"]
        return [bytes(header)] + frames[1:]

    def hello(self) -> None:
        self.session = self.rnd.getrandbits(64) or 1
        if self.rnd.random() < 0.1:
            self.sender.reconnect()   # aead: a new connection and handshake now and then
        flags = self.rnd.choice([0, 0, 0, HELLO_RESYNC, HELLO_RESYNC, 4])
        version = 1 if self.rnd.random() < 0.97 else self.rnd.choice([0, 2])
        reply = self.exchange([[encode(Op.HELLO, self.session, 0, (version, flags))]], "HELLO")
        self.next_seq = 1 if reply and reply[0].status == OK else 0

    def exchange(self, batch: list[list[bytes]], label: str) -> list[protocol.Reply] | None:
        """Send the messages, then read one reply per message; None (and a failure) if one is late."""
        for frames in batch:
            self.recent.append((label, [f[:120] for f in frames]))
            self.socket.send_multipart(frames)
        replies = []
        for _ in batch:
            if not self.socket.poll(REPLY_TIMEOUT_MS):
                state = "died" if self.pair.receiver.poll() is not None else "stopped answering"
                self.failure = f"the receiver {state} after {label}"
                return None
            replies.append(decode_reply(self.socket.recv_multipart()))
        for reply in replies:
            self.counts[label]["ok" if reply.status == OK else "error"] += 1
            if reply.status == ERROR and "internal error" in reply.message:
                self.counts["internal errors"][reply.message[:200]] += 1
        return replies

    def step(self) -> None:
        r = self.rnd.random()
        if self.next_seq == 0 or r < 0.03:
            self.hello()
            return
        op = self.rnd.choice([o for o in Op if o != Op.HELLO])
        if r < 0.08:   # out of order: a replay, a gap, or another session
            seq = self.rnd.choice([self.next_seq - 1, self.next_seq + 3, 2**64 - 1])
            self.exchange([self.message(op, seq)], f"{op.name} (out of order)")
            return
        count = self.rnd.randint(2, 30) if r < 0.15 else 1   # a pipelined burst
        ops = [op] + [self.rnd.choice(list(SPECS)) for _ in range(count - 1)]
        ops = [o if o != Op.HELLO else Op.PING for o in ops]
        batch = [self.message(o, self.next_seq + i) for i, o in enumerate(ops)]
        self.sent = self.sent[-count:]
        replies = self.exchange(batch, op.name if count == 1 else "burst")
        if replies is not None:
            for (sent_op, strs), reply in zip(self.sent, replies):
                if reply.status == OK and sent_op in (Op.CREATE, Op.MKDIR, Op.SYMLINK, Op.LINK, Op.RENAME):
                    self.made.append(strs[-1])
                if reply.status != OK:
                    self.next_seq = 0   # the session may be closed: start a new one
                    return
            self.next_seq += count

    def oversize(self) -> None:
        """A frame above MAX_FRAME: ZeroMQ drops the connection, nothing must come back."""
        self.recent.append(("oversize", []))
        huge = bytes(protocol.MAX_FRAME + (1 << 20))
        self.socket.send_multipart([encode(Op.WRITE, self.session, self.next_seq, (0,), (b"a",)), huge])
        if self.socket.poll(2000):
            self.failure = "the receiver answered a frame above MAX_FRAME"
        self.counts["oversize"]["dropped"] += 1
        self.next_seq = 0
        self.sender.reconnect()


class HandshakeFuzzer:
    """(aead) An unauthenticated connection beside the trusted one: handshake garbage and, after a
    real handshake, broken sealed frames. Every message gets REFUSE (or ACCEPT for a good INIT)."""

    UNSEALED = b"unsealed-op"   # a plain CREATE of this name must never be applied

    def __init__(self, fuzzer: Fuzzer, keys_dir: str) -> None:
        self.fuzzer, self.rnd = fuzzer, fuzzer.rnd
        self.own = keys.load_own(keys_dir)
        self.server = keys.peer_public_key(keys_dir, self.own)
        if session.engine() == session.STREAM:
            self.socket = StreamGarbage(fuzzer.pair.endpoint, self.own, self.server)
            return
        self.socket = fuzzer.sender.context.socket(zmq.DEALER)
        self.socket.linger = 0
        self.socket.connect(fuzzer.pair.endpoint)

    def close(self) -> None:
        self.socket.close(0)

    def _answer(self, frames: list[bytes], label: str) -> bytes | None:
        """Send one message; its answer must be a single handshake message (None: failure noted)."""
        self.fuzzer.recent.append((f"handshake: {label}", [f[:120] for f in frames]))
        self.socket.send_multipart(frames)
        if not self.socket.poll(REPLY_TIMEOUT_MS):
            state = "died" if self.fuzzer.pair.receiver.poll() is not None else "stopped answering"
            self.fuzzer.failure = f"the receiver {state} after handshake garbage ({label})"
            return None
        answer = self.socket.recv_multipart()
        if len(answer) != 1 or not session.is_handshake(answer[0]):
            self.fuzzer.failure = f"an unauthenticated peer got something else than a handshake answer: {answer!r:.200}"
            return None
        kind = "refused" if session.refusal_text(answer[0]) is not None else "accepted"
        self.fuzzer.counts[f"handshake {label}"][kind] += 1
        return answer[0]

    def _refused(self, frames: list[bytes], label: str) -> None:
        answer = self._answer(frames, label)
        if answer is not None and session.refusal_text(answer) is None:
            self.fuzzer.failure = f"handshake garbage was not refused ({label}): {answer!r:.200}"

    def _init(self, ephemeral: bytes | None = None, client: bytes | None = None) -> bytes:
        own = session.raw_key(self.own.public) if client is None else client
        return session.MAGIC + bytes((session.VERSION, session.INIT)) + own + (ephemeral or os.urandom(32))

    def step(self) -> None:
        rnd, head = self.rnd, session.MAGIC + bytes((session.VERSION,))
        r = rnd.random()
        if r < 0.15:
            self._refused([rnd.randbytes(rnd.randint(0, 120))], "random bytes")
        elif r < 0.25:
            good = session.ClientHandshake(self.own.secret, self.own.public, self.server).init
            cut = rnd.randint(0, len(good) - 1)
            self._refused([good[:cut] if rnd.random() < 0.5 else good + rnd.randbytes(rnd.randint(1, 64))],
                          "truncated or padded INIT")
        elif r < 0.35:
            self._refused([self._init(client=os.urandom(32))], "untrusted key")
        elif r < 0.45:   # low-order points and other invalid public keys
            bad = rnd.choice([bytes(32), b"\x01" + bytes(31), bytes.fromhex(
                "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")])
            self._refused([self._init(ephemeral=bad)], "invalid ephemeral key")
        elif r < 0.55:
            self._refused([head + bytes((rnd.choice([0, 2, 3, 4, 5, 255]),)) + rnd.randbytes(rnd.randint(0, 80))],
                          "unexpected handshake type")
        elif r < 0.62:
            self._refused([encode(Op.CREATE, 0x5EED, 1, (0o100644, 0, 0, 0), (self.UNSEALED,))], "unsealed operation")
        elif r < 0.7:
            self._refused([session.MAGIC + bytes((rnd.choice([0, 2, 255]),)) + self._init()[4:]], "other version")
        elif r < 0.8:   # a good INIT, then a bad CONFIRM
            if self._answer([self._init()], "INIT") is None:
                return
            bad = rnd.choice([head + bytes((session.CONFIRM,)) + os.urandom(32), head + bytes((session.CONFIRM,)),
                              head + bytes((session.INIT,)) + os.urandom(64), os.urandom(37)])
            self._refused([bad], "bad CONFIRM")
        else:
            self._broken_session()

    def _broken_session(self) -> None:
        """A real handshake with the trusted pair, then one broken sealed message."""
        handshake = session.ClientHandshake(self.own.secret, self.own.public, self.server)
        accept = self._answer([handshake.init], "INIT")
        if accept is None:
            return
        confirm, channel = handshake.accept(accept)
        self.socket.send(confirm)
        rnd = self.rnd
        first = channel.send.seal([encode(Op.PING, 0x5EED, 0)])
        r = rnd.random()
        if r < 0.25:   # one byte flipped
            frame = bytearray(first[0])
            frame[rnd.randrange(len(frame))] ^= 1 << rnd.randrange(8)
            self._refused([bytes(frame)], "tampered frame")
        elif r < 0.45:   # replay: the same frame twice (the first is refused at the link level, no HELLO)
            self.socket.send_multipart(first)
            if not self.socket.poll(REPLY_TIMEOUT_MS):
                self.fuzzer.failure = "no reply to a sealed PING"
                return
            channel.recv.open(self.socket.recv_multipart())
            self._refused(first, "replayed frame")
        elif r < 0.65:   # reordered: the second frame before the first
            second = channel.send.seal([encode(Op.PING, 0x5EED, 1)])
            self._refused(second, "reordered frame")
        elif r < 0.8:
            self._refused(channel.send.seal([b"x"] * 4) + [b"y" * 30], "too many frames")
        else:
            self._refused([bytes(first[0][:rnd.randint(0, session.OVERHEAD - 1)])], "truncated sealed frame")


class StreamGarbage:
    """(stream) What HandshakeFuzzer asks of its DEALER, on plain TCP: one message is one record
    (a handshake message before CONFIRM, sealed frames after); a connection the receiver closed
    (after a refusal) is replaced by a new one at the next send."""

    def __init__(self, endpoint: str, own: keys.KeyPair, server: bytes) -> None:
        self.endpoint, self.own, self.server = endpoint, own, server
        self.conn: StreamClient | None = None
        self.sealed = False      # CONFIRM sent: what follows is sealed records
        self.answer: bytes | None = None

    def send(self, frame: bytes) -> None:
        self.send_multipart([frame])

    def send_multipart(self, frames: list) -> None:
        if self.conn is None or self.conn.closed:
            if self.conn is not None:
                self.conn.close()
            self.conn = StreamClient(self.endpoint, self.own, self.server, handshake=False)
            self.sealed, self.answer = False, None
        if self.sealed:
            self.conn.send_raw(b"".join(bytes(b) for b in stream.sealed_record(frames)))
            return
        for frame in frames:
            self.conn.send_record(bytes(frame))
        self.sealed = len(frames) == 1 and bytes(frames[0][:5]) == session.MAGIC + bytes((session.VERSION,
                                                                                           session.CONFIRM))

    def poll(self, timeout_ms: int) -> bool:
        if self.answer is None and self.conn is not None:
            self.answer = self.conn.read_record(timeout_ms / 1000)
        return self.answer is not None

    def recv_multipart(self) -> list:
        body, self.answer = self.answer, None
        if session.refusal_text(body) is not None:   # the receiver closes the connection after it
            self.close()
            self.conn = None
        if session.is_handshake(body):
            return [body]
        return [bytes(f) for f in stream.record_frames(memoryview(body))]

    def close(self, linger: int = 0) -> None:
        if self.conn is not None:
            self.conn.close()


def _sandbox_state(sandbox: str, pair, outside: str) -> dict:
    """What must not change: every name beside the directory, and the sentinel's contents."""
    return {"sandbox": sorted(os.listdir(sandbox)), "pair": sorted(os.listdir(pair.base)),
            "primary": sorted(os.listdir(pair.primary)), "keys": sorted(os.listdir(pair.keys)),
            "outside": tree_snapshot(outside)}


def _final_checks(fuzzer: Fuzzer, before: dict, sandbox: str) -> list[str]:
    pair, problems = fuzzer.pair, []
    if pair.receiver.poll() is not None:
        return [f"the receiver exited with status {pair.receiver.returncode}"]
    # Make room first (a full tmpfs would fail the check for the wrong reason): the set-aside
    # versions locally (no message may touch them), then the vocabulary's names through the link.
    shutil.rmtree(os.path.join(pair.secondary, protocol.CONFLICT_DIR.decode()), ignore_errors=True)
    for name in NAMES:
        fuzzer.exchange([[encode(Op.HELLO, 0x5EED, 0, (1, 0))], [encode(Op.REMOVE, 0x5EED, 1, (0,), (name,))]],
                        "final cleanup")
    msgs = [[encode(Op.HELLO, 0x5EED, 0, (1, 0))],
            [encode(Op.CREATE, 0x5EED, 1, (0o100644, 0, 0, 0), (b"final-check",))],
            [encode(Op.WRITE, 0x5EED, 2, (0,), (b"final-check",)), b"still serving"]]
    replies = fuzzer.exchange(msgs, "final check")
    if replies is None or any(r.status != OK for r in replies):
        problems.append(f"a valid operation failed at the end: {replies}")
    else:
        with open(f"{pair.secondary}/final-check", "rb") as f:
            if f.read() != b"still serving":
                problems.append("the final write did not arrive")
    if os.path.lexists(os.path.join(pair.secondary, HandshakeFuzzer.UNSEALED.decode())):
        problems.append("an unsealed operation from an unauthenticated connection was applied")
    after = _sandbox_state(sandbox, pair, fuzzer.outside)
    for key in before:
        if after[key] != before[key]:
            problems.append(f"outside the directory, {key} changed: {before[key]!r:.300} -> {after[key]!r:.300}")
    with open(pair.log("receiver"), errors="replace") as f:
        log = f.read()
    for marker in ("Traceback", "unexpected error", "internal error", "decoder error"):
        if marker in log:
            at = log.index(marker)
            problems.append(f"receiver log has {marker!r}: {log[max(0, at - 300):at + 1500]}")
    if fuzzer.counts.get("internal errors"):
        problems.append(f"internal errors replied: {dict(fuzzer.counts['internal errors'])}")
    return problems


def run(seconds: float, seed: int) -> dict:
    """One bounded fuzz run in a fresh sandbox; returns the summary (``ok`` says if all held)."""
    rnd = random.Random(seed)
    sandbox = tempfile.mkdtemp(prefix="hamirror-fuzz-")
    started = time.monotonic()
    try:
        with contextlib.ExitStack() as stack:
            os.makedirs(os.path.join(sandbox, "m", "secondary"))
            stack.enter_context(own_filesystem(os.path.join(sandbox, "m", "secondary"), "64m", "nodev,nosuid"))
            pair, sender, outside = stack.enter_context(hostile_receiver(sandbox))
            os.symlink(os.path.join(outside, "ghost"), f"{pair.secondary}/abs")
            os.symlink(sandbox, f"{pair.secondary}/up")
            before = _sandbox_state(sandbox, pair, outside)
            fuzzer = Fuzzer(pair, sender, outside, rnd)
            garbage = HandshakeFuzzer(fuzzer, pair.keys) if session.engine() != session.CURVE else None
            if garbage is not None:
                stack.callback(garbage.close)
            deadline = started + seconds
            next_oversize = started + min(5.0, seconds / 3)
            messages = 0
            while time.monotonic() < deadline and fuzzer.failure is None:
                if time.monotonic() >= next_oversize:
                    fuzzer.oversize()
                    next_oversize += OVERSIZE_EVERY
                elif garbage is not None and rnd.random() < 0.1:
                    garbage.step()
                else:
                    fuzzer.step()
                messages += 1
            problems = [fuzzer.failure] if fuzzer.failure else _final_checks(fuzzer, before, sandbox)
            if fuzzer.failure:
                problems.append("last messages: " + "\n".join(repr(m) for m in fuzzer.recent))
                with open(pair.log("receiver"), errors="replace") as f:
                    problems.append("receiver log tail: " + f.read()[-3000:])
            counts = {k: dict(v) for k, v in sorted(fuzzer.counts.items())}
    finally:
        shutil.rmtree(sandbox, ignore_errors=True)
    return {"seed": seed, "seconds": round(time.monotonic() - started, 1), "steps": messages,
            "messages": sum(sum(v.values()) for k, v in counts.items() if k != "internal errors"),
            "ok": not problems, "problems": problems, "counts": counts}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to fuzz (default 60)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: time-based, printed)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root (a tmpfs for the directory, files owned by other users)")
    seed = args.seed if args.seed is not None else int(time.time())
    summary = run(args.seconds, seed)
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print(f"seed {seed}: {summary['messages']} messages in {summary['seconds']} s, "
              f"{'no problem found' if summary['ok'] else 'PROBLEMS FOUND'}")
        for label, count in summary["counts"].items():
            print(f"  {label:28} {count}")
        for problem in summary["problems"]:
            print(f"PROBLEM: {problem}")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
