"""The ``stream`` engine's wire format: the ``aead`` session's messages as records on one TCP
connection, with no ZeroMQ in between (docs/security.md, "The stream engine").

Why: a round trip through ZeroMQ costs four I/O-thread wake-ups and ~89 µs of CPU per small
message on each side (docs/native.md, "Not native yet: the link"); on a socket of its own the
thread that submits writes the record, and the thread that waits reads it.

A record is a 4-byte big-endian length, then that many bytes:

- **before the session is established**, one handshake message of ``session.py`` (INIT, ACCEPT,
  CONFIRM or REFUSE), unsealed, at most :data:`MAX_HANDSHAKE` bytes: an unauthenticated peer can
  make the other side hold no more than that;
- **after**, one link message (1 to ``session.MAX_PARTS`` frames): a count byte, one 4-byte
  big-endian length per sealed frame, then the sealed frames, each as :meth:`session.Direction.seal`
  makes it (its counter, then AES-256-GCM of the frame, bound to its index and the count).

Pure: no sockets here. :class:`Records` splits received bytes into record bodies and checks
every length before anything is allocated for it.
"""

from __future__ import annotations

import struct

from hamirror.link import session

LENGTH = struct.Struct(">I")
COUNT = struct.Struct(">B")
MAX_HANDSHAKE = session.INIT_SIZE + session.MAX_REFUSE_TEXT   # the largest handshake message
MAX_MESSAGE = COUNT.size + session.MAX_PARTS * (LENGTH.size + session.MAX_SEALED)
READ_SIZE = 256 * 1024   # bytes asked of one recv: many small records, or a good piece of a large one
DIRECT_MIN = 64 * 1024   # missing bytes of a record from which its rest is received in place (Records.reserve)


_LENGTH_AT = LENGTH.unpack_from


class RecordError(Exception):
    """The byte stream is not a valid record stream; the connection must be closed."""


def handshake_record(message: bytes) -> bytes:
    """One handshake message as a record."""
    if not 0 < len(message) <= MAX_HANDSHAKE:
        raise RecordError(f"a handshake message of {len(message)} bytes (1 to {MAX_HANDSHAKE})")
    return LENGTH.pack(len(message)) + message


def seal_record(direction: session.Direction, parts: list) -> list:
    """One link message as a record, sealed: a list of buffers for ``socket.sendmsg``. One
    buffer: the head, then each frame sealed in place behind it (no copy after the encryption)."""
    count = len(parts)
    if not 1 <= count <= session.MAX_PARTS:
        return sealed_record(direction.seal(parts))   # (seal refuses it, with its message)
    sizes = [session.OVERHEAD + len(part) for part in parts]
    head = _HEADS[count]
    record = session.unfilled(head.size + sum(sizes))   # every byte written below: the head, then the frames
    head.pack_into(record, 0, len(record) - LENGTH.size, count, *sizes)
    view, offset, frames = memoryview(record), head.size, []
    for size in sizes:
        frames.append(view[offset:offset + size])
        offset += size
    direction.seal_into(parts, frames)
    return [record]


def sealed_record(sealed: list) -> list:
    """Frames already sealed (``session.Sessions.seal``) as one record: its head (one ``pack``
    of the record's length, the count and the frame lengths), then the frames."""
    count = len(sealed)
    sizes = [len(frame) for frame in sealed]
    head = _HEADS[count] if count < len(_HEADS) else struct.Struct(f">IB{count}I")   # (a fuzzer's: too many)
    return [head.pack(COUNT.size + LENGTH.size * count + sum(sizes), count, *sizes), *sealed]


def open_record(direction: session.Direction, body: memoryview) -> list[memoryview]:
    """The plaintext frames of one sealed record body; SessionError if anything is off (a bad
    layout, a frame out of order or not from the peer)."""
    return direction.open(record_frames(body))


def record_frames(body: memoryview) -> list[memoryview]:
    """The sealed frames of one record body, unopened (``session.Sessions.incoming`` opens them);
    SessionError for a bad layout."""
    size = len(body)
    if size < COUNT.size:
        raise session.SessionError("an empty record")
    count = body[0]
    if not 1 <= count <= session.MAX_PARTS:
        raise session.SessionError(f"a record of {count} frames (1 to {session.MAX_PARTS} expected)")
    offset = COUNT.size + LENGTH.size * count
    if size < offset:
        raise session.SessionError("a record shorter than its frame table")
    frames = []
    for length in _TABLES[count].unpack_from(body, COUNT.size):
        if length > size - offset:
            raise session.SessionError("a record's frame runs past its end")
        frames.append(body[offset:offset + length])
        offset += length
    if offset != size:
        raise session.SessionError(f"{size - offset} bytes after a record's last frame")
    return frames


# By frame count: a record's head (length, count, frame lengths) and its frame table, one struct each.
_HEADS = [struct.Struct(f">IB{n}I") for n in range(session.MAX_PARTS + 1)]
_TABLES = [struct.Struct(f">{n}I") for n in range(session.MAX_PARTS + 1)]


class Records:
    """Splits a connection's bytes into record bodies.

    ``limit`` is the largest body accepted now: :data:`MAX_HANDSHAKE` until the session is
    established, then :data:`MAX_MESSAGE`. A length above it raises :class:`RecordError` before
    any buffer is grown for it."""

    def __init__(self, limit: int = MAX_HANDSHAKE) -> None:
        self.limit = limit
        self._buffer = bytearray()
        self._direct: bytearray | None = None   # the record being received in place (reserve)
        self._filled = 0

    def feed(self, data: bytes | memoryview) -> list[memoryview]:
        """The complete record bodies that ``data`` ends (in order); the rest is kept. The bodies
        are views of a buffer this object no longer touches: the caller may keep them. With
        nothing kept from before and ``data`` a ``bytes`` (as ``recv`` returns it), the bodies
        are views of ``data`` itself: its bytes are not copied (only an unfinished tail is)."""
        buffer = self._buffer
        if buffer or type(data) is not bytes:
            buffer += data
        else:
            buffer = data
        bodies: list[memoryview] = []
        start, end, limit = 0, len(buffer), self.limit
        view = memoryview(buffer)
        while end - start >= LENGTH.size:
            size = _LENGTH_AT(buffer, start)[0]
            if not 0 < size <= limit:
                raise RecordError(f"a record of {size} bytes (1 to {limit} allowed here)")
            if end - start - LENGTH.size < size:
                break
            start += LENGTH.size
            bodies.append(view[start:start + size])
            start += size
        if buffer is data:   # nothing was kept (self._buffer is empty): only an unfinished tail is
            if start < end:
                self._buffer = bytearray(view[start:])
        elif bodies:   # the views pin this buffer: the unfinished tail moves to a new one
            self._buffer = bytearray(view[start:])
        return bodies

    def reserve(self) -> memoryview | None:
        """Room for the rest of the record the buffer has begun, once its length is known (and
        checked by :meth:`feed`) and at least :data:`DIRECT_MIN` bytes of it are missing: the
        caller receives into it (``recv_into``), then calls :meth:`commit`, until the record is
        whole; :meth:`feed` is not called meanwhile. None: receive as usual.

        Why: a 1 MiB write's record came in four or more receives, each copied into the buffer
        as it grew; here its bytes go once, from the socket to where its body stays."""
        return memoryview(self._direct)[self._filled:] if self._in_place() else None

    def _in_place(self) -> bool:
        """Whether the record begun is received in place: its room is made here, once."""
        if self._direct is None:
            buffered = len(self._buffer)
            if buffered < LENGTH.size:
                return False
            total = LENGTH.size + _LENGTH_AT(self._buffer, 0)[0]
            if total - buffered < DIRECT_MIN:
                return False
            self._direct = session.unfilled(total)   # read only once received whole (commit)
            self._direct[:buffered] = self._buffer
            self._filled, self._buffer = buffered, bytearray()
        return True

    def commit(self, received: int) -> list[memoryview]:
        """``received`` more bytes are in the room :meth:`reserve` gave: the record's body once
        it is whole (a view of a buffer this object no longer touches), else nothing."""
        direct = self._direct
        if direct is None or not 0 <= received <= len(direct) - self._filled:
            raise ValueError("commit without a reserved record, or past its end")
        self._filled += received
        if self._filled < len(direct):
            return []
        self._direct = None
        return [memoryview(direct)[LENGTH.size:]]

    def missing(self) -> int:
        """Bytes still to come of the record received in place; 0 when none is."""
        return 0 if self._direct is None else len(self._direct) - self._filled

    def awaited(self) -> int:
        """After a read: the bytes still to come of a record that will be received in place
        (its room is reserved here once its length is known), 0 when the next read is an
        ordinary one. What the reader asks the kernel to wait for (``SO_RCVLOWAT``)."""
        return self.missing() if self._in_place() else 0

    def wanted(self) -> int:
        """Bytes that would complete the next record (its length first): what a reader asks of
        ``recv`` before the session is established, so that nothing sent after the handshake's
        last message is read, or judged, under the handshake's limit."""
        buffered = len(self._buffer)
        if buffered < LENGTH.size:
            return LENGTH.size - buffered
        return max(1, LENGTH.size + LENGTH.unpack_from(self._buffer)[0] - buffered)

    @property
    def buffered(self) -> int:
        """Bytes received and not yet part of a returned record."""
        return len(self._buffer) if self._direct is None else self._filled
