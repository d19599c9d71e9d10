"""Wire format of the replication link: pure encoding and validation, no sockets.

A message is one ZeroMQ multipart message: a header frame and, for operations that carry bytes
(write, setxattr), a data frame that travels as is (never re-encoded). The header frame is::

    magic "hm" | version u8 | opcode u8 | session u64 | seq u64
    n_ints u8  | n_ints x i64
    n_strs u8  | n_strs x (u16 length + bytes)
    n_times u8 | n_times x (u16 length + path bytes + i64 atime_ns + i64 mtime_ns)

``times`` carry the primary's resulting atime/mtime for every inode the operation touched (the
file and its parent directories), so both trees end with the same mtimes to the nanosecond.
Everything coming from the network goes through :func:`decode`, which refuses anything that is
not exactly one of the operations below with well-formed, bounded fields and safe paths.
"""

from __future__ import annotations

import enum
import json
import stat
import struct
from dataclasses import dataclass
from typing import Callable, NamedTuple

from hamirror import versions

MAGIC = b"hm"
VERSION = versions.LINK_PROTOCOL   # the header's version byte and HELLO's first integer
PATH_MAX = 4096
NAME_MAX = 255
MAX_DATA = 16 * 1024 * 1024        # the kernel hands us at most 1 MiB per write; leave room
MAX_XATTR_VALUE = 64 * 1024        # Linux's own limit (XATTR_SIZE_MAX)
MAX_HEADER = 64 * 1024
MAX_TIMES = 4
INT64_MAX = 2**63 - 1
# ZeroMQ drops a peer that sends a bigger frame before buffering it (ZMQ_MAXMSGSIZE): the largest
# legitimate frame is a WRITE's data, plus room for the header and CURVE's envelope.
MAX_FRAME = MAX_DATA + MAX_HEADER
# A query's answer is one payload frame of at most this many bytes: a longer list (CHANGES, LISTDIR)
# comes in pages, one cursor per page (hamirror/resync/pages.py).
MAX_ANSWER = MAX_DATA

CONFLICT_DIR = b".hamirror-conflicts"
"""Reserved top-level name: split-brain keep-aside moves the losing side's versions here, on the
directory's own filesystem. No operation may name a path inside it, the interception layer hides
it from the application and the resync never compares or copies it (see docs/resync.md)."""

_HEAD = struct.Struct("<2sBBQQ")
_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_I64 = struct.Struct("<q")
_TIMES = struct.Struct("<qq")
_REPLY = struct.Struct("<2sBBQi")
_DURABLE = struct.Struct("<Q")   # a reply's optional trailing field: the durable sequence number


class Op(enum.IntEnum):
    HELLO = 1
    CREATE = 2        # ints: mode, uid, gid, rdev        strs: path
    MKDIR = 3         # ints: mode, uid, gid              strs: path
    SYMLINK = 4       # ints: uid, gid                    strs: path, target
    LINK = 5          #                                   strs: existing path, new path
    UNLINK = 6        #                                   strs: path
    RMDIR = 7         #                                   strs: path
    RENAME = 8        # ints: flags (RENAME_NOREPLACE/EXCHANGE)  strs: old, new
    WRITE = 9         # ints: offset                      strs: path   + data frame
    TRUNCATE = 10     # ints: length                      strs: path
    FALLOCATE = 11    # ints: mode, offset, length        strs: path
    CHMOD = 12        # ints: mode                        strs: path
    CHOWN = 13        # ints: uid, gid (-1 = unchanged)   strs: path
    UTIMENS = 14      # (times only)                      strs: path
    SETXATTR = 15     # ints: flags                       strs: path, name  + data frame (value)
    REMOVEXATTR = 16  #                                   strs: path, name
    FSYNC = 17        # ints: datasync                    strs: path
    PING = 18         # a barrier: its ack means everything before it was applied
    # Resync (see hamirror/resync/): queries answer with a payload and change nothing.
    STAT = 19         # query                             strs: path
    LISTDIR = 20      # query [ints: cursor]              strs: path
    BLOCKSUMS = 21    # query ints: offset, length, block  strs: path
    CHANGES = 22      # query [ints: cursor]: the receiver's own changed set and generation history
    REMOVE = 23       # ints: keep_aside                  strs: path (a file or a whole tree)
    RESYNC_DONE = 24  # data frame: the primary's generation history (JSON): adopt it, up to date
    WRITE_FSYNC = 25  # ints: offset, datasync            strs: path   + data frame: WRITE then FSYNC

HELLO_RESYNC = 1      # HELLO flag: a resync follows; the receiver is not up to date until DONE
HELLO_TOKEN = 2       # HELLO flag: a third integer is the sender's fencing token (link/fencing.py)
# PING's optional integer (sent only to a receiver whose HELLO answer offers "durable"): bits.
PING_DELEGATE = 1     # from here on the primary records what is not durable here: no fsync per new
                      # path; every reply carries the durable sequence number (docs/journal.md)
PING_SYNC = 2         # sync the filesystem before replying (a clean unmount's last barrier)
QUERIES = frozenset({Op.STAT, Op.LISTDIR, Op.BLOCKSUMS, Op.CHANGES})


# Field kinds of the string fields, checked by decode().
PATH, NAME, TARGET = "path", "name", "target"


@dataclass(frozen=True)
class OpSpec:
    n_ints: int
    strs: tuple[str, ...]
    has_data: bool = False
    optional_ints: int = 0   # trailing integers a sender may leave out (added in a later release)


SPECS: dict[Op, OpSpec] = {
    Op.HELLO: OpSpec(2, (), optional_ints=1),   # version, flags [, fencing token with HELLO_TOKEN]
    Op.CREATE: OpSpec(4, (PATH,)),
    Op.MKDIR: OpSpec(3, (PATH,)),
    Op.SYMLINK: OpSpec(2, (PATH, TARGET)),
    Op.LINK: OpSpec(0, (PATH, PATH)),
    Op.UNLINK: OpSpec(0, (PATH,)),
    Op.RMDIR: OpSpec(0, (PATH,)),
    Op.RENAME: OpSpec(1, (PATH, PATH)),
    Op.WRITE: OpSpec(1, (PATH,), has_data=True),
    Op.TRUNCATE: OpSpec(1, (PATH,)),
    Op.FALLOCATE: OpSpec(3, (PATH,)),
    Op.CHMOD: OpSpec(1, (PATH,)),
    Op.CHOWN: OpSpec(2, (PATH,)),
    Op.UTIMENS: OpSpec(0, (PATH,)),
    Op.SETXATTR: OpSpec(1, (PATH, NAME), has_data=True),
    Op.REMOVEXATTR: OpSpec(0, (PATH, NAME)),
    Op.FSYNC: OpSpec(1, (PATH,)),
    Op.PING: OpSpec(0, (), optional_ints=1),   # [PING_DELEGATE | PING_SYNC]
    Op.STAT: OpSpec(0, (PATH,)),
    Op.LISTDIR: OpSpec(0, (PATH,), optional_ints=1),   # [cursor: paged, to a receiver offering "pages"]
    Op.BLOCKSUMS: OpSpec(3, (PATH,)),
    Op.CHANGES: OpSpec(0, (), optional_ints=1),        # [cursor: paged, likewise]
    Op.REMOVE: OpSpec(1, (PATH,)),
    Op.RESYNC_DONE: OpSpec(0, (), has_data=True),
    Op.WRITE_FSYNC: OpSpec(2, (PATH,), has_data=True),
}

# Operations whose paths must not be the replicated directory itself.
_NO_ROOT = {Op.CREATE, Op.MKDIR, Op.SYMLINK, Op.LINK, Op.UNLINK, Op.RMDIR, Op.RENAME, Op.REMOVE}
MAX_BLOCKSUMS = 4096   # blocks per BLOCKSUMS query
MAX_SUMS_BYTES = 4 * MAX_DATA   # bytes read and hashed per BLOCKSUMS query (the engine asks 4 MiB)
MAX_RDEV = 2**32 - 1   # the kernel's dev_t fits 32 bits (FUSE's mknod carries a u32)
RENAME_FLAGS = 0b111   # RENAME_NOREPLACE | RENAME_EXCHANGE | RENAME_WHITEOUT
XATTR_FLAGS = 0b11     # XATTR_CREATE | XATTR_REPLACE
FALLOC_MODES = 0x7F    # every FALLOC_FL_* bit Linux defines
_CREATE_KINDS = frozenset({stat.S_IFREG, stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK})


class ProtocolError(ValueError):
    """A message that is not well formed; the text says what is wrong with it."""


Times = tuple[bytes, int, int]


class Message(NamedTuple):
    """One decoded operation. A named tuple (immutable, as a frozen dataclass): :func:`decode`
    makes one per message, and a frozen dataclass's ``__init__`` alone cost more than the rest
    of the decode (docs/performance.md, "The stream receiver's CPU per message")."""

    op: Op
    session: int
    seq: int
    ints: tuple[int, ...]
    strs: tuple[bytes, ...]
    times: tuple[Times, ...]
    data: memoryview | bytes | None = None


def is_reserved(path: bytes) -> bool:
    """True for hamirror's own conflict folder and anything beneath it (relative path)."""
    return path == CONFLICT_DIR or path.startswith(_CONFLICT_PREFIX)


_CONFLICT_PREFIX = CONFLICT_DIR + b"/"


def check_path(path: bytes) -> bytes:
    """A relative path that stays inside the replicated directory ("." is the directory) and out
    of hamirror's reserved conflict folder."""
    if path == b".":
        return path
    if not path:
        raise ProtocolError("empty path")
    if is_reserved(path):
        raise ProtocolError(f"path inside the reserved folder {CONFLICT_DIR.decode()!r}")
    if len(path) > PATH_MAX:
        raise ProtocolError(f"path longer than {PATH_MAX} bytes")
    if path.startswith(b"/"):
        raise ProtocolError("absolute path")
    if b"\0" in path:
        raise ProtocolError("NUL byte in path")
    for part in path.split(b"/"):
        if part in (b"", b".", b".."):
            raise ProtocolError(f"path component {part.decode(errors='replace')!r} not allowed")
        if len(part) > NAME_MAX:
            raise ProtocolError(f"path component longer than {NAME_MAX} bytes")
    return path


def _check_string(kind: str, value: bytes) -> None:
    if kind == PATH:
        check_path(value)
    elif kind == NAME:
        if not value or len(value) > NAME_MAX or b"\0" in value:
            raise ProtocolError("bad xattr name")
    elif not value or len(value) >= PATH_MAX or b"\0" in value:
        raise ProtocolError("bad symlink target")


def encode(op: Op, session: int, seq: int, ints: tuple[int, ...] = (), strs: tuple[bytes, ...] = (),
           times: tuple[Times, ...] = ()) -> bytes:
    """The header frame of one operation (the data frame, if any, is sent as it is)."""
    parts = [_HEAD.pack(MAGIC, VERSION, op, session, seq), _U8.pack(len(ints))]
    parts.extend(_I64.pack(i) for i in ints)
    parts.append(_U8.pack(len(strs)))
    for s in strs:
        parts.append(_U16.pack(len(s)))
        parts.append(s)
    parts.append(_U8.pack(len(times)))
    for path, atime, mtime in times:
        parts.append(_U16.pack(len(path)))
        parts.append(path)
        parts.append(_TIMES.pack(atime, mtime))
    return b"".join(parts)


_OPS = {int(op): op for op in Op}
_SPEC_OF = {int(op): spec for op, spec in SPECS.items()}
_INTS = tuple(struct.Struct(f"<{n}q") for n in range(max(s.n_ints + s.optional_ints for s in SPECS.values()) + 1))
_TIME_SIZE = _TIMES.size


def _truncated() -> ProtocolError:
    return ProtocolError("truncated header frame")


def _string(header: bytes, pos: int) -> tuple[bytes, int]:
    """The u16-length-prefixed bytes at ``pos``, and the offset after them."""
    start = pos + 2
    end = start + (header[pos] | header[pos + 1] << 8) if start <= len(header) else start
    if end > len(header):
        raise _truncated()
    return header[start:end], end


def decode(frames: list) -> Message:
    """Parse and validate one message from the network; raise ProtocolError on anything wrong.

    Reads at offsets with ``unpack_from`` (no reader object, no slice per field): the receiver
    runs this once per message (docs/performance.md, "The receiver's CPU per message")."""
    if not frames:
        raise ProtocolError("empty message")
    header = bytes(frames[0])
    size = len(header)
    if size > MAX_HEADER:
        raise ProtocolError("header frame too large")
    if size < _HEAD.size:
        raise _truncated()
    magic, version, opcode, session, seq = _HEAD.unpack_from(header)
    if magic != MAGIC:
        raise ProtocolError("bad magic")
    if version > VERSION:
        raise ProtocolError(versions.newer_protocol("link", version, VERSION, None))
    if version != VERSION:
        raise ProtocolError(f"unsupported protocol version {version}")
    op = _OPS.get(opcode)
    if op is None:
        raise ProtocolError(f"unknown operation {opcode}")
    spec = _SPEC_OF[opcode]
    pos = _HEAD.size
    if pos >= size:
        raise _truncated()
    n_ints = header[pos]
    if not spec.n_ints <= n_ints <= spec.n_ints + spec.optional_ints:
        expected = f"{spec.n_ints}" + (f" to {spec.n_ints + spec.optional_ints}" if spec.optional_ints else "")
        raise ProtocolError(f"{op.name}: expected {expected} integers, got {n_ints}")
    pos += 1
    end = pos + 8 * n_ints
    if end > size:
        raise _truncated()
    ints = _INTS[n_ints].unpack_from(header, pos)
    pos = end
    if pos >= size:
        raise _truncated()
    n_strs = header[pos]
    pos += 1
    if n_strs != len(spec.strs):
        raise ProtocolError(f"{op.name}: expected {len(spec.strs)} strings, got {n_strs}")
    strs = []
    for kind in spec.strs:
        value, pos = _string(header, pos)
        if kind == PATH:
            check_path(value)
        else:
            _check_string(kind, value)
        strs.append(value)
    if pos >= size:
        raise _truncated()
    n_times = header[pos]
    pos += 1
    if n_times > MAX_TIMES:
        raise ProtocolError(f"too many time updates ({n_times})")
    times = []
    for _ in range(n_times):
        path, end = _string(header, pos)
        check_path(path)
        pos = end + _TIME_SIZE
        if pos > size:
            raise _truncated()
        atime, mtime = _TIMES.unpack_from(header, end)
        times.append((path, atime, mtime))
    if pos != size:
        raise ProtocolError("trailing bytes in header frame")
    data = None
    expected_frames = 2 if spec.has_data else 1
    if len(frames) != expected_frames:
        raise ProtocolError(f"{op.name}: expected {expected_frames} frame(s), got {len(frames)}")
    if spec.has_data:
        data = frames[1]
        limit = MAX_XATTR_VALUE if op in (Op.SETXATTR, Op.RESYNC_DONE) else MAX_DATA
        if len(data) > limit:
            raise ProtocolError(f"{op.name}: data frame larger than {limit} bytes")
    msg = Message(op, session, seq, ints, tuple(strs), tuple(times), data)
    _check_ints(msg)
    return msg


def _check_ints(msg: Message) -> None:
    """Range checks that would otherwise surface as odd errors deep in the apply code: the
    operation's own checks only (one table lookup: a test of ``op == Op.X`` per rule cost more
    than the rest of the decode)."""
    op = msg.op
    if op in _NO_ROOT and b"." in msg.strs[: 2 if op in _TWO_PATHS else 1]:
        raise ProtocolError(f"{op.name}: not allowed on the replicated directory itself")
    for check in _INT_CHECKS.get(op, ()):
        check(op, msg.ints)


def _mode(op: Op, ints: tuple[int, ...]) -> None:
    if not 0 <= ints[0] <= 0o177777:
        raise ProtocolError(f"{op.name}: mode out of range")


def _offset(op: Op, ints: tuple[int, ...]) -> None:
    if not 0 <= ints[0] <= INT64_MAX - MAX_DATA:
        raise ProtocolError(f"{op.name}: offset out of range")


def _datasync(op: Op, ints: tuple[int, ...]) -> None:
    if ints[1] not in (0, 1):
        raise ProtocolError("WRITE_FSYNC: datasync must be 0 or 1")


def _fallocate(op: Op, ints: tuple[int, ...]) -> None:
    if ints[1] < 0 or ints[2] <= 0 or ints[1] > INT64_MAX - ints[2]:
        raise ProtocolError("FALLOCATE: range out of bounds")
    if not 0 <= ints[0] <= FALLOC_MODES:
        raise ProtocolError("FALLOCATE: unknown mode bits")


def _create(op: Op, ints: tuple[int, ...]) -> None:
    if stat.S_IFMT(ints[0]) not in _CREATE_KINDS:
        raise ProtocolError("CREATE: file type must be regular, fifo, socket or device (MKDIR and "
                            "SYMLINK make the others)")
    if not 0 <= ints[3] <= MAX_RDEV:
        raise ProtocolError("CREATE: device number out of range")


def _flags(allowed: int) -> Callable[[Op, tuple[int, ...]], None]:
    def check(op: Op, ints: tuple[int, ...]) -> None:
        if ints and ints[0] & ~allowed:   # PING's flags are optional
            raise ProtocolError(f"{op.name}: unknown flags")
    return check


def _ids(first: int, low: int) -> Callable[[Op, tuple[int, ...]], None]:
    def check(op: Op, ints: tuple[int, ...]) -> None:
        if not all(low <= i < 2**32 - 1 for i in ints[first:first + 2]):
            raise ProtocolError(f"{op.name}: id out of range")
    return check


def _blocksums(op: Op, ints: tuple[int, ...]) -> None:
    offset, length, block = ints
    if offset < 0 or length < 0 or not 4096 <= block <= MAX_DATA or offset > INT64_MAX - length \
            or length > min(block * MAX_BLOCKSUMS, MAX_SUMS_BYTES):
        raise ProtocolError("BLOCKSUMS: range out of bounds")


def _cursor(op: Op, ints: tuple[int, ...]) -> None:
    if ints and ints[0] < 0:
        raise ProtocolError(f"{op.name}: negative cursor")


_TWO_PATHS = frozenset({Op.LINK, Op.RENAME})
_INT_CHECKS: dict[Op, tuple[Callable[[Op, tuple[int, ...]], None], ...]] = {
    Op.CREATE: (_mode, _create, _ids(1, 0)),
    Op.MKDIR: (_mode, _ids(1, 0)),
    Op.CHMOD: (_mode,),
    Op.WRITE: (_offset,),
    Op.TRUNCATE: (_offset,),
    Op.WRITE_FSYNC: (_offset, _datasync),
    Op.FALLOCATE: (_fallocate,),
    Op.RENAME: (_flags(RENAME_FLAGS),),
    Op.SETXATTR: (_flags(XATTR_FLAGS),),
    Op.CHOWN: (_ids(0, -1),),
    Op.SYMLINK: (_ids(0, 0),),
    Op.PING: (_flags(PING_DELEGATE | PING_SYNC),),
    Op.BLOCKSUMS: (_blocksums,),
    Op.LISTDIR: (_cursor,),
    Op.CHANGES: (_cursor,),
}


# Replies ---------------------------------------------------------------------------------------

OK, ERROR = 0, 1


@dataclass(frozen=True)
class Reply:
    """An acknowledgement; ``payload`` is a query's answer, or the error text."""

    seq: int
    status: int
    errno: int = 0
    payload: bytes = b""
    durable: int | None = None   # the session's newest seq whose effects are on the peer's disk

    @property
    def message(self) -> str:
        return self.payload.decode("utf-8", "replace") if self.status == ERROR else ""


def encode_reply(seq: int, status: int = OK, err: int = 0, message: str = "",
                 payload: bytes = b"") -> list[bytes]:
    frames = [_REPLY.pack(MAGIC, VERSION, status, seq, err)]
    if message:
        frames.append(message.encode("utf-8", "replace")[:1024])
    elif payload:
        frames.append(payload)
    return frames


def with_durable(frames: list[bytes], durable: int) -> list[bytes]:
    """An OK reply with the durable field added (only in a session the primary delegated: an
    older primary refuses a longer header)."""
    head = frames[0]
    if len(head) != _REPLY.size or head[_STATUS_AT] != OK:
        return frames
    return [bytes(head) + _DURABLE.pack(durable), *frames[1:]]


_STATUS_AT = 3   # a reply header's status byte (after the magic and the version)


def decode_reply(frames: list) -> Reply:
    if not 1 <= len(frames) <= 2 or len(frames[0]) not in (_REPLY.size, _REPLY.size + _DURABLE.size):
        raise ProtocolError("malformed reply")
    head = bytes(frames[0])
    magic, version, status, seq, err = _REPLY.unpack_from(head)
    if magic == MAGIC and version > VERSION:
        raise ProtocolError(versions.newer_protocol("link", version, VERSION, None))
    if magic != MAGIC or version != VERSION or status not in (OK, ERROR):
        raise ProtocolError("malformed reply")
    durable = _DURABLE.unpack_from(head, _REPLY.size)[0] if len(head) > _REPLY.size else None
    return Reply(seq, status, err, bytes(frames[1]) if len(frames) == 2 else b"", durable)


# The HELLO's answer -----------------------------------------------------------------------------
# Since the release after 0.2.0: the receiver answers a HELLO with its versions (JSON); 0.2.0
# answered nothing, and a 0.2.0 sender ignores the payload. The HELLO itself keeps 0.2.0's form (ints: version, flags),
# which a 0.2.0 receiver checks exactly.
MAX_HELLO_ANSWER = 256


def hello_answer() -> bytes:
    """What a receiver says of itself in its answer to a HELLO."""
    return json.dumps({"link": VERSION, "software": versions.SOFTWARE, "durable": 1, "pages": 1},
                      separators=(",", ":")).encode()


def _offers(payload: bytes, feature: str) -> bool:
    """Whether a receiver's HELLO answer offers ``feature`` (value 1). Never raises."""
    try:
        doc = json.loads(payload) if 0 < len(payload) <= MAX_HELLO_ANSWER else None
    except (ValueError, RecursionError):
        return False
    return isinstance(doc, dict) and doc.get(feature) == 1


def offers_delegation(payload: bytes) -> bool:
    """Whether a receiver's HELLO answer offers PING_DELEGATE (an older one does not: it keeps
    its own record of every path, one fsync per new path)."""
    return _offers(payload, "durable")


def offers_pages(payload: bytes) -> bool:
    """Whether a receiver answers CHANGES and LISTDIR in pages when asked with a cursor (an older
    one refuses the cursor: it is asked without, and answers in one message)."""
    return _offers(payload, "pages")


def parse_hello_answer(payload: bytes) -> tuple[int, str]:
    """``(link protocol, software)`` of the receiver from its HELLO answer; an empty or unreadable
    answer is a 0.2.0 receiver's (protocol 1). Never raises: the payload comes from the network."""
    if not payload:
        return 1, versions.PREVIOUS_RELEASE
    try:
        doc = json.loads(payload) if len(payload) <= MAX_HELLO_ANSWER else None
    except (ValueError, RecursionError):
        doc = None
    if not isinstance(doc, dict):
        return 1, "unknown"
    link = doc.get("link")
    return (link if type(link) is int and 0 < link < 256 else 1,
            versions.valid_text(doc.get("software")) or "unknown")


def kept(data: bytes | memoryview | None) -> bytes | None:
    """A message's data as something that may be kept past the call that handed it over.

    Why: the mount's writes hand the link a view of the FUSE worker's receive buffer, valid only
    until the write returns (the worker reads its next request into it; the view is released
    then), which saves a copy of every write when the message is sealed at once. Whatever keeps
    the data longer (a message held back, queued for another thread, or waiting for a session)
    keeps it through this: bytes as they are, a view copied."""
    return data if data is None or type(data) is bytes else bytes(data)
