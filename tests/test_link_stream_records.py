"""The stream engine's record layer (link/stream.py): framing, sealing, and the bounds an
unauthenticated or hostile peer runs into before anything is allocated."""

import os
import socket
import threading

import pytest

from hamirror.link import session, stream


def _pair() -> tuple[session.Direction, session.Direction]:
    key = os.urandom(32)
    return session.Direction(key, session.TO_RECEIVER), session.Direction(key, session.TO_RECEIVER)


def _wire(records: list[list]) -> bytes:
    return b"".join(bytes(buffer) for record in records for buffer in record)


def test_records_survive_any_split_and_keep_their_bytes():
    sealer, opener = _pair()
    messages = [[b"header %d" % i, os.urandom(i * 997)] if i % 3 else [b"header %d" % i] for i in range(40)]
    wire = _wire([stream.seal_record(sealer, list(m)) for m in messages])
    records = stream.Records(stream.MAX_MESSAGE)
    opened = []
    for offset in range(0, len(wire), 613):
        opened += [stream.open_record(opener, body) for body in records.feed(wire[offset:offset + 613])]
    assert [[bytes(f) for f in frames] for frames in opened] == messages
    assert records.buffered == 0


def test_a_large_record_is_read_to_its_end_into_the_same_buffer_and_never_moved():
    """The receiver's way in: recv_into ``space()``, then ``filled()``. A record larger than
    READ_SIZE is asked for exactly to its end, so nothing of the next one is read with it; the
    next record starts at the buffer's beginning again, in the same buffer (no copy, no new
    memory per record)."""
    sealer, opener = _pair()
    payloads = [os.urandom(1 << 20), os.urandom(1 << 20), b"small", os.urandom(3 * stream.READ_SIZE)]
    wire = memoryview(_wire([stream.seal_record(sealer, [p]) for p in payloads]))
    records = stream.Records(stream.MAX_MESSAGE)
    opened, buffers, asked = [], set(), []
    while wire:
        room = records.space()
        asked.append(len(room))
        taken = min(len(room), len(wire), stream.READ_SIZE)   # as recv: at most what the socket holds
        room[:taken] = wire[:taken]
        wire = wire[taken:]
        for body in records.filled(taken):
            buffers.add(id(body.obj))
            opened.append(bytes(stream.open_record(opener, body)[0]))
    assert opened == payloads
    assert records.buffered == 0
    assert len(buffers) == 1, "one buffer for every record, grown once for the first large one"
    first_rest = (1 << 20) + session.OVERHEAD + 1 + 4 - (stream.READ_SIZE - 4)
    assert asked[:2] == [stream.READ_SIZE, first_rest], "the rest of a large record, exactly"


def test_records_received_in_place_from_a_socket_keep_their_bytes():
    sealer, opener = _pair()
    sizes = [0, 1, 4093, stream.READ_SIZE - 40, stream.READ_SIZE + 7, 1 << 20, 17, 2 << 20, 5]
    payloads = [os.urandom(n) for n in sizes * 3]
    wire = _wire([stream.seal_record(sealer, [b"h", p]) for p in payloads])
    left, right = socket.socketpair()
    sender = threading.Thread(target=left.sendall, args=(wire,))
    sender.start()
    records = stream.Records(stream.MAX_MESSAGE)
    opened = []
    try:
        while len(opened) < len(payloads):
            count = right.recv_into(records.space())
            assert count > 0
            opened += [bytes(stream.open_record(opener, body)[1]) for body in records.filled(count)]
    finally:
        sender.join()
        left.close()
        right.close()
    assert opened == payloads and records.buffered == 0


def test_a_record_is_one_buffer_and_the_same_bytes_as_its_sealed_frames():
    """seal_record seals each frame in place behind the record's head: one buffer to send,
    byte for byte what sealing the frames and adding the head gives."""
    key = os.urandom(32)
    in_place, apart = session.Direction(key, session.TO_PRIMARY), session.Direction(key, session.TO_PRIMARY)
    for parts in ([b"a reply"], [b"a reply", b"its payload"], [b"h", b"", b"x" * 70_000]):
        record = stream.seal_record(in_place, parts)
        assert len(record) == 1
        assert bytes(record[0]) == _wire([stream.sealed_record(apart.seal(parts))])


def test_rest_gives_the_buffer_back_only_when_nothing_is_half_received():
    sealer, _ = _pair()
    wire = _wire([stream.seal_record(sealer, [os.urandom(1 << 20)])])
    records = stream.Records(stream.MAX_MESSAGE)
    records.feed(wire[:-1])
    records.rest()   # a record half received: kept
    assert records.buffered == len(wire) - 1
    assert len(records.feed(wire[-1:])) == 1
    records.rest()
    assert records.buffered == 0 and len(records._buffer) == 0


def test_a_length_above_the_limit_is_refused_before_it_is_buffered():
    records = stream.Records()   # before the handshake: handshake messages only
    with pytest.raises(stream.RecordError, match=rf"a record of 1048576 bytes \(1 to {stream.MAX_HANDSHAKE} allowed here\)"):
        records.feed(stream.LENGTH.pack(1 << 20) + b"x")
    with pytest.raises(stream.RecordError, match="a record of 0 bytes"):
        stream.Records().feed(stream.LENGTH.pack(0))


def test_a_handshake_message_fits_the_handshake_limit():
    init = session.ClientHandshake(os.urandom(32), os.urandom(32), os.urandom(32)).init
    assert [bytes(b) for b in stream.Records().feed(stream.handshake_record(init))] == [init]
    with pytest.raises(stream.RecordError):
        stream.handshake_record(b"x" * (stream.MAX_HANDSHAKE + 1))


@pytest.mark.parametrize("body, message", [
    (b"", "an empty record"),
    (b"\x00", "a record of 0 frames"),
    (b"\x05" + b"\x00" * 20, "a record of 5 frames"),
    (b"\x02\x00\x00\x00\x01", "a record shorter than its frame table"),
    (b"\x01\x00\x00\x00\x09" + b"x" * 8, "a record's frame runs past its end"),
    (b"\x01\x00\x00\x00\x01" + b"xy", "1 bytes after a record's last frame"),
])
def test_malformed_sealed_records_end_the_session(body, message):
    _, opener = _pair()
    with pytest.raises(session.SessionError, match=message):
        stream.open_record(opener, memoryview(body))


def test_a_replayed_or_altered_record_is_refused():
    sealer, opener = _pair()
    first = b"".join(bytes(b) for b in stream.seal_record(sealer, [b"one"]))
    second = bytearray(b"".join(bytes(b) for b in stream.seal_record(sealer, [b"two"])))
    assert bytes(stream.open_record(opener, memoryview(first)[4:])[0]) == b"one"
    with pytest.raises(session.SessionError, match="frame counter 0, expected 1"):
        stream.open_record(opener, memoryview(first)[4:])
    second[-1] ^= 1
    with pytest.raises(session.SessionError, match="failed authentication"):
        stream.open_record(opener, memoryview(bytes(second))[4:])


def test_wanted_asks_for_the_rest_of_the_next_record_only():
    records = stream.Records()
    assert records.wanted() == stream.LENGTH.size
    record = stream.handshake_record(b"hmK\x01\x03" + bytes(32))
    assert records.feed(record[:2]) == [] and records.wanted() == 2
    assert records.feed(record[2:10]) == [] and records.wanted() == len(record) - 10
    assert [bytes(b) for b in records.feed(record[10:])] == [record[4:]]
    assert records.wanted() == stream.LENGTH.size
