"""The stream engine's record layer (link/stream.py): framing, sealing, and the bounds an
unauthenticated or hostile peer runs into before anything is allocated."""

import os

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


def test_whole_records_in_received_bytes_are_not_copied():
    """What recv returns is split in place: the bodies are views of those bytes; only an
    unfinished tail is kept (copied), and completes with the next bytes."""
    sealer, opener = _pair()
    wire = _wire([stream.seal_record(sealer, [b"first"]), stream.seal_record(sealer, [b"second"]),
                  stream.seal_record(sealer, [b"third"])])
    records = stream.Records(stream.MAX_MESSAGE)
    received = wire[:-7]
    bodies = records.feed(received)
    assert len(bodies) == 2 and all(body.obj is received for body in bodies)
    assert records.buffered == len(wire) - 7 - sum(len(body) + stream.LENGTH.size for body in bodies)
    bodies += records.feed(wire[-7:])
    assert [bytes(stream.open_record(opener, body)[0]) for body in bodies] == [b"first", b"second", b"third"]
    assert records.buffered == 0


def test_a_record_is_one_buffer_and_the_same_bytes_as_its_sealed_frames():
    """seal_record seals each frame in place behind the record's head: one buffer to send,
    byte for byte what sealing the frames and adding the head gives."""
    key = os.urandom(32)
    in_place, apart = session.Direction(key, session.TO_PRIMARY), session.Direction(key, session.TO_PRIMARY)
    for parts in ([b"a reply"], [b"a reply", b"its payload"], [b"h", b"", b"x" * 70_000]):
        record = stream.seal_record(in_place, parts)
        assert len(record) == 1
        assert bytes(record[0]) == _wire([stream.sealed_record(apart.seal(parts))])


def test_a_body_stays_valid_after_the_next_feed():
    sealer, _ = _pair()
    wire = _wire([stream.seal_record(sealer, [b"a"]), stream.seal_record(sealer, [b"b"])])
    records = stream.Records(stream.MAX_MESSAGE)
    first = records.feed(wire[:len(wire) // 2 + 20])
    kept = bytes(first[0])
    records.feed(wire[len(wire) // 2 + 20:])
    assert bytes(first[0]) == kept


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


def test_the_rest_of_a_large_record_is_received_in_place():
    """Records.reserve: once a record's length is known and 64 KiB or more of it are missing, its
    rest goes straight into the buffer its body stays in (recv_into), however the bytes come; a
    small record, or a small rest, is fed as before; the records after it are split as before."""
    sealer, opener = _pair()
    big = [b"write header", os.urandom(1 << 20)]
    wire = _wire([stream.seal_record(sealer, [b"before"]), stream.seal_record(sealer, list(big)),
                  stream.seal_record(sealer, [b"after"])])
    first = len(_wire([stream.seal_record(_pair()[0], [b"before"])]))
    records = stream.Records(stream.MAX_MESSAGE)
    assert records.reserve() is None                         # nothing begun
    bodies = records.feed(wire[:first + 3])                  # "before", and 3 bytes of a length
    assert [stream.open_record(opener, b)[0] == b"before" for b in bodies] == [True]
    assert records.reserve() is None                         # the length is not known yet
    assert records.awaited() == 0                            # nor here: the next read is an ordinary one
    assert records.feed(wire[first + 3:first + 5000]) == []
    end = len(wire) - len(_wire([stream.seal_record(_pair()[0], [b"after"])]))
    assert records.awaited() == end - first - 5000           # what the reader waits for (SO_RCVLOWAT)
    room = records.reserve()
    assert room is not None and len(room) == end - first - 5000 == records.missing()
    assert records.buffered == 5000
    offset = first + 5000
    for piece in (70_000, 1, 300_000):
        room = records.reserve()
        room[:piece] = wire[offset:offset + piece]
        assert records.commit(piece) == []
        offset += piece
    room = records.reserve()
    room[:] = wire[offset:end]
    with pytest.raises(ValueError):
        records.commit(len(room) + 1)                        # past the record's end
    (body,) = records.commit(len(room))
    assert [bytes(f) for f in stream.open_record(opener, body)] == big
    assert records.reserve() is None and records.missing() == 0
    (after,) = records.feed(wire[end:])
    assert bytes(stream.open_record(opener, after)[0]) == b"after"
    with pytest.raises(ValueError):
        records.commit(1)                                    # nothing reserved
    small = stream.Records(stream.MAX_MESSAGE)
    record = _wire([stream.seal_record(sealer, [os.urandom(60_000)])])
    assert small.feed(record[:100]) == [] and small.reserve() is None   # less than 64 KiB missing


def test_buffers_not_zeroed_first_are_written_whole_before_they_are_read(monkeypatch):
    """session.unfilled (the native extension's bytearray, not zeroed) for a sealed record, a
    sealed frame and a record received in place: with buffers full of other bytes, everything
    sent and received is the same as with zeroed ones, so no byte an allocator left goes out."""
    native = pytest.importorskip("hamirror.link._native")
    assert len(native.unfilled(1 << 20)) == 1 << 20 and native.unfilled(0) == bytearray()
    with pytest.raises(ValueError, match="^unfilled: a negative size$"):
        native.unfilled(-1)
    key = os.urandom(32)
    parts = [b"write header", os.urandom(1 << 20), b"x"]

    def sealed() -> tuple[bytes, list[bytes]]:
        one, two = (session.Direction(key, session.TO_RECEIVER) for _ in range(2))
        return _wire([stream.seal_record(one, list(parts))]), [bytes(f) for f in two.seal(list(parts))]

    monkeypatch.setattr(session, "unfilled", bytearray)
    zeroed = sealed()
    monkeypatch.setattr(session, "unfilled", lambda size: bytearray(b"\xa5") * size)
    assert sealed() == zeroed
    records, opener = stream.Records(stream.MAX_MESSAGE), session.Direction(key, session.TO_RECEIVER)
    wire = zeroed[0]
    assert records.feed(wire[:1000]) == []
    room = records.reserve()
    room[:] = wire[1000:]
    (body,) = records.commit(len(room))
    assert [bytes(f) for f in stream.open_record(opener, body)] == parts
