"""The secondary's end of the link: receives operations, applies them in order, acknowledges.

One thread. The transport of the link engine (replica/transport.py) hands it authenticated
plaintext messages: a ZeroMQ ROUTER (``curve``: ZeroMQ's I/O thread decrypts the next messages
while this thread applies the current one; ``aead``: NULL, and this thread opens each sealed
frame) or, with ``stream``, TCP connections of the receiver's own (replica/serve_stream.py).
Either way a pipelining sender is never idle. A session starts with HELLO; after that only the
next sequence number of that session is applied, so a stale or replayed stream (a primary that
restarted, a duplicate) is refused, not merged.

Nothing one message does may stop the receiver (a dead receiver leaves the primary unprotected):
the transport drops a peer that sends a frame above ``MAX_FRAME`` before buffering it, the codec
refuses what is malformed, and *any* exception while applying becomes an error reply that closes
the session (the primary then resyncs), logged, while the receiver keeps serving.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Hashable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from hamirror import audit, versions
from hamirror.journal import unsynced
from hamirror.journal.durability import Epochs
from hamirror.journal.journal import Journal
from hamirror.link import fencing, keys, session, z85
from hamirror.link.apply import Applier, changed_paths, moved_paths
from hamirror.link.protocol import (ERROR, HELLO_RESYNC, HELLO_TOKEN, PING_DELEGATE, PING_SYNC, QUERIES,
                                    VERSION, Message, Op, ProtocolError, decode, decode_reply, encode_reply,
                                    hello_answer, with_durable)
from hamirror.mirror import record
from hamirror.mirror import status as status_file
from hamirror.replica import transport
from hamirror.resync.answers import ResyncAnswers

if TYPE_CHECKING:
    import zmq

log = logging.getLogger(__name__)

EPROTO_STREAM = errno.EPROTO
STATUS_INTERVAL = 0.5   # seconds: the agent reads last_message from status.json
BATCH = 32              # messages applied before the new paths among them are made durable at once
IDLE_MS = 50            # a receive waits this long before the loop looks at stop(), status, connections


_HELLO, _PING = Op.HELLO, Op.PING   # an Enum member looked up on its class costs ~0.14 us, per message
_ANSWERED = QUERIES | {Op.REMOVE, Op.RESYNC_DONE}   # handled by ResyncAnswers, not the applier
_NAMES = {op: op.name for op in Op}


@dataclass
class ReceiverStats:
    applied: int = 0
    bytes_applied: int = 0
    refused: int = 0
    errors: int = 0
    last_error: str = ""
    session: int = 0
    next_seq: int = 0
    by_op: dict[str, int] = field(default_factory=dict)


class Receiver:
    """Serves one replicated directory on one endpoint until stop() is called."""

    def __init__(self, directory: str, bind: str, keys_dir: str, context: zmq.Context | None = None,
                 state_dir: str | None = None, engine: str | None = None) -> None:
        self.applier = Applier(directory)
        self.state_dir = state_dir
        self.journal: Journal | None = None
        self.unsynced: unsynced.UnsyncedLog | None = None
        if state_dir is not None:
            os.makedirs(state_dir, mode=0o700, exist_ok=True)
            self.journal = Journal(os.path.join(state_dir, "journal.db"))
            # Before anything is applied: what an unclean stop may have lost is recorded first.
            self._lock_fd = unsynced.hold(state_dir)
            unsynced.recover(self.journal, state_dir, self.applier.root_fd)
            self.unsynced = unsynced.UnsyncedLog(os.path.join(state_dir, unsynced.UNSYNCED_LOG),
                                                 Epochs(self.applier.root_fd))
        self.answers = ResyncAnswers(self.applier, self.journal)
        self.resyncing = False
        self.last_message: float | None = None   # wall clock of the last message from a primary
        self.stats = ReceiverStats()
        self._stop = threading.Event()
        own = keys.load_own(keys_dir)
        self.engine = session.engine(engine)   # never negotiated: see docs/security.md
        self.sessions: session.Sessions | None = None
        if self.engine != session.CURVE:
            self.sessions = session.Sessions(own.secret, own.public, keys.trusted_public_keys(keys_dir),
                                             on_refused=self._session_refused)
        if context is None and self.engine != session.STREAM:
            import zmq   # only here: a stream daemon never maps libzmq (link/z85.py)

            context = zmq.Context.instance()
        self.context = context
        self.link = transport.listen(self.engine, bind, keys_dir, own, self.sessions, self.context, IDLE_MS)
        self.endpoint = self.link.endpoint
        log.info("receiver on %s, link engine %s", self.endpoint, self.engine)

    @property
    def connections(self) -> int:
        """TCP connections open on the replication port. A primary whose processes all died has
        its connection closed by its kernel at once, which lets the agent tell a dead peer from a
        silent one (a frozen or cut-off peer closes nothing)."""
        return self.link.connections

    @property
    def closed_at(self) -> float | None:
        """Wall clock the last connection closed."""
        return self.link.closed_at

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self.link.close()
        if self.unsynced is not None:
            self.unsynced.close(clean=True)   # synced and emptied, unless the sync fails
            os.close(self._lock_fd)
        self.applier.close()
        self.write_status()
        if self.journal is not None:
            self.journal.close()

    @property
    def uptodate(self) -> bool:
        return self.journal is not None and record.UPTODATE.get(self.journal)

    def write_status(self) -> None:
        """``status.json`` in the state directory, for the agent and ``mirror status``."""
        if self.state_dir is None:
            return
        status = {"role": "receiver", "pid": os.getpid(), "dir": self.applier.directory,
                  "endpoint": self.endpoint, "uptodate": self.uptodate, "resyncing": self.resyncing,
                  "running": not self._stop.is_set(), "updated": time.time(),
                  "last_message": self.last_message, "connections": self.connections,
                  "closed_at": self.closed_at, **asdict(self.stats),
                  "unsynced_paths": len(self.unsynced) if self.unsynced is not None else None}
        status["session"] = f"{self.stats.session:x}"
        try:
            status_file.write(self.state_dir, status)
        except OSError as exc:   # e.g. a full disk: report it, but keep serving
            log.warning("cannot write %s: %s", status_file.path(self.state_dir), exc)

    def serve_forever(self) -> None:
        """Receive, handle, reply, until stop().

        One receive per message, waiting at most ``IDLE_MS`` (the transport's own wait: no
        poller over two sockets and no receive that fails with EAGAIN after each message, which
        cost about 20 system calls and a Python exception per message; docs/performance.md, "The
        receiver's CPU per message"). Connection events are read when the link is idle (a closed
        connection makes it idle at once) and with each status write. Replies held for the
        unsynced log's flush are sent as soon as no message is waiting."""
        receive, handle, unsynced = self.link.receive, self.handle, self.unsynced
        last_status = 0.0
        held: list[tuple[Hashable, list[bytes]]] = []
        while not self._stop.is_set():
            now = time.monotonic()
            if now - last_status > STATUS_INTERVAL:
                self.link.connection_events()
                self.write_status()
                last_status = now
            message = receive(not held)
            if message is None:
                if held:
                    self._acknowledge(held)
                    held = []
                    self.applier.start_writeback()   # after its reply (apply.py)
                elif self.link.connection_events():
                    self.write_status()           # a closed connection is news for the agent now
                    last_status = now
                continue
            identity, plain = message
            if plain is None:   # a handshake message or a refusal, dealt with by the transport
                continue
            self.last_message = time.time()   # authenticated: the primary's data path is alive
            try:
                reply = handle(plain)
            except Exception:   # a bug in handle() itself: still one reply, still serving
                log.exception("receiver error")
                reply = self._refuse(0, errno.EIO, "internal error in the receiver (see its log)")
            held.append((identity, reply))
            if len(held) >= BATCH or unsynced is None or not unsynced.pending:
                self._acknowledge(held)
                held = []
                self.applier.start_writeback()   # after its reply (apply.py)
        self._acknowledge(held)

    def _acknowledge(self, replies: list[tuple[Hashable, list[bytes]]]) -> None:
        """Send replies, once the paths they acknowledge are durable in the unsynced log: a path new
        to the log holds back the replies of its batch until one fdatasync covers them all."""
        if not replies:
            return
        if self.unsynced is not None:
            try:
                self.unsynced.flush()
            except OSError as exc:   # cannot promise durability: acknowledge nothing, close the session
                replies = [(identity, self._unrecorded(reply, exc)) for identity, reply in replies]
            if self.unsynced.delegated:   # the primary keeps each path until this disk has it
                durable = self.unsynced.durable_seq
                replies = [(identity, with_durable(reply, durable)) for identity, reply in replies]
        self.link.send_all(replies)

    def _session_refused(self, identity: Hashable, reason: str, key: bytes, established: bool) -> None:
        """(aead, stream) A handshake refused or a session ended by a bad frame: logged and
        audited; only the end of an authenticated session is the receiver's error (an
        unauthenticated peer must not overwrite what status shows, as it could not with CURVE)."""
        text = f"secure session {'ended' if established else 'refused'}: {reason}"
        if established:
            self.stats.refused += 1
            self.stats.last_error = text
        log.warning("%s", text)
        shown = f" (public key {z85.encode(key).decode()})" if len(key) == session.KEY else ""
        audit.refused("link-key", self.link.peer_address(identity),
                      f"replication link refused a client: {reason}{shown}")

    def _unrecorded(self, reply: list[bytes], exc: OSError) -> list[bytes]:
        self.stats.session = 0
        seq = decode_reply(reply).seq
        return self._refuse(seq, exc.errno or errno.EIO, f"cannot record the applied paths: {exc.strerror or exc}")

    def handle(self, frames: list) -> list[bytes]:
        """Decode, check the session order, apply; always return a reply, never raise."""
        try:
            msg = decode(frames)
        except ProtocolError as exc:
            return self._refuse(0, errno.EINVAL, f"malformed message: {exc}")
        except Exception as exc:   # the codec promises ProtocolError only; a slip is still a refusal
            log.exception("decoder error")
            return self._refuse(0, errno.EINVAL, f"malformed message: {exc!r}")
        op = msg.op
        if op is _HELLO:
            return self._hello(msg)
        if msg.session != self.stats.session or msg.seq != self.stats.next_seq:
            return self._refuse(msg.seq, EPROTO_STREAM,
                                f"out of order: session {msg.session:x} seq {msg.seq}, "
                                f"expected session {self.stats.session:x} seq {self.stats.next_seq}")
        if op is _PING:   # a barrier in the stream: it takes its sequence number too
            self.stats.next_seq += 1
            if msg.ints and self.unsynced is not None:
                self._durability(msg)
            return encode_reply(msg.seq)
        payload = b""
        try:
            if op in _ANSWERED:
                payload = self.answers.handle(msg) or b""
                if op == Op.RESYNC_DONE:
                    self.resyncing = False
                    if self.unsynced is not None:   # synced: the resync's copies leave the log
                        self.unsynced.syncer.sync_once()
                    self.write_status()
            else:
                self.applier.apply(msg)
        except Exception as exc:   # noqa: BLE001 - whatever one message does, keep serving
            self._note(msg)          # a failed apply may have changed something too
            return self._failed(msg, exc)
        self._note(msg)
        self._count(msg)
        return encode_reply(msg.seq, payload=payload)

    def _failed(self, msg: Message, exc: Exception) -> list[bytes]:
        """Applying failed: this copy may no longer match the primary. Refuse the rest of the
        session so the primary stops streaming over it and asks for a resync."""
        what = f"{msg.op.name} {msg.strs[0]!r}" if msg.strs else msg.op.name
        if isinstance(exc, OSError):
            err, text = exc.errno or errno.EIO, exc.strerror or str(exc)
        elif isinstance(exc, ValueError):   # ProtocolError included: a value the apply refuses
            err, text = errno.EINVAL, str(exc)
        else:   # not expected: a bug to fix, so keep the traceback
            log.error("unexpected error applying %s", what, exc_info=exc)
            err, text = errno.EIO, f"internal error: {exc!r}"
        self.stats.errors += 1
        self.stats.last_error = f"{what}: {text}"
        self.stats.session = 0
        log.warning("apply failed, session closed: %s", self.stats.last_error)
        self.answers.apply_failed()   # this copy may now differ: stale until a resync completes
        return encode_reply(msg.seq, ERROR, err, self.stats.last_error)

    def _hello(self, msg: Message) -> list[bytes]:
        version, flags = msg.ints[:2]
        if version > VERSION:     # a newer sender: say so plainly (docs/upgrade.md), never guess
            return self._refuse(msg.seq, errno.EPROTONOSUPPORT,
                                versions.newer_protocol("link", version, VERSION, None))
        if version != VERSION or msg.session == 0 or flags & ~(HELLO_RESYNC | HELLO_TOKEN) \
                or (len(msg.ints) == 3) != bool(flags & HELLO_TOKEN) or (flags & HELLO_TOKEN and msg.ints[2] <= 0):
            return self._refuse(msg.seq, errno.EPROTONOSUPPORT, "unsupported HELLO")
        if flags & HELLO_TOKEN and self.state_dir is not None:
            # Before the session exists: a stale holder's session is never started, so nothing
            # it sends next is applied (its sequence numbers belong to no session here).
            token = msg.ints[2]
            why = fencing.stale(token, fencing.read(os.path.join(self.state_dir, fencing.FLOOR_FILE)))
            if why is not None:
                return self._refuse(msg.seq, errno.EPERM, why)
            fencing.raise_floor(self.state_dir, token)
        if flags & HELLO_RESYNC:
            self.answers.resync_started()   # durable before anything of the resync is applied
            self.resyncing = True
        self.stats.session = msg.session
        self.stats.next_seq = msg.seq + 1
        if self.unsynced is not None:
            self.unsynced.begin_session()
        log.info("session %x started%s", msg.session, " for a resync" if flags & HELLO_RESYNC else "")
        self.write_status()
        return encode_reply(msg.seq, payload=hello_answer())

    def _durability(self, msg: Message) -> None:
        """PING's flags: the primary takes over the record of what is not durable here
        (PING_DELEGATE), or wants everything applied so far on the disk first (PING_SYNC)."""
        assert self.unsynced is not None
        if msg.ints[0] & PING_DELEGATE:
            self.unsynced.delegate(msg.seq)
            log.info("session %x: the primary records what is not durable here (no fsync per new path)",
                     msg.session)
        if msg.ints[0] & PING_SYNC:
            self.unsynced.syncer.sync_once()

    def _note(self, msg: Message) -> None:
        """Record the paths an operation changed (acknowledged only once durable: _acknowledge)."""
        if self.unsynced is not None and msg.op not in QUERIES:
            self.unsynced.note(changed_paths(msg), msg.seq, moved_paths(msg))

    def _count(self, msg: Message) -> None:
        stats = self.stats
        stats.next_seq += 1
        stats.applied += 1
        name = _NAMES[msg.op]   # not msg.op.name: an Enum's name is a Python-level property
        stats.by_op[name] = stats.by_op.get(name, 0) + 1
        if msg.data is not None:
            stats.bytes_applied += len(msg.data)

    def _refuse(self, seq: int, err: int, message: str) -> list[bytes]:
        self.stats.refused += 1
        self.stats.last_error = message
        log.warning("refused: %s", message)
        return encode_reply(seq, ERROR, err, message)
