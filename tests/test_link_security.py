"""The replication link refuses what it must: untrusted keys, hostile and malformed messages.

(a) a receiver that does not trust the mount's key: the mount fails clearly, nothing arrives;
(b) a trusted but hostile sender (raw DEALER with the shared CURVE pair): every bad message gets
    an error reply, nothing outside the secondary directory changes, the receiver still serves;
(c) the codec alone, under hypothesis: decode never raises anything but ProtocolError, and every
    valid message round-trips.
"""

from __future__ import annotations

import os
import shutil
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hamirror.link import protocol
from hamirror.link.protocol import ERROR, OK, Op, ProtocolError, decode, decode_reply, encode
from tests.conftest import needs_root, run_cli
from tests.mirror_fixtures import (HELLO_INTS, SESSION, MirrorPair, diff_snapshots, hostile_receiver, is_fuse_mounted,
                                  tree_snapshot, wait_for)


# (a) untrusted key -----------------------------------------------------------------------------

@needs_root
@pytest.mark.parametrize("case", ["receiver does not trust the mount", "mount expects another server key"])
def test_mount_refused_by_a_receiver_that_does_not_trust_its_key(tmp_path, case):
    pair = MirrorPair(str(tmp_path))           # receiver keys: the pair's own "test" key only
    mount_keys = str(tmp_path / "mount-keys")
    run_cli("keygen", "--keys", mount_keys, "--name", "intruder", check=True)
    if case == "receiver does not trust the mount":
        shutil.copy(os.path.join(pair.keys, "test.key"), mount_keys)   # it knows the server's key
    else:
        run_cli("keygen", "--keys", str(tmp_path / "other"), "--name", "other", check=True)
        shutil.copy(tmp_path / "other" / "other.key", mount_keys)
        shutil.copy(os.path.join(mount_keys, "intruder.key"), pair.keys)  # the receiver trusts it
    try:
        pair.start_receiver()
        result = run_cli("mirror", "mount", "--dir", pair.primary, "--peer", pair.endpoint,
                         "--keys", mount_keys, "--state-dir", pair.state, "--timeout", "2", timeout=60)
        assert result.returncode == 1, result
        message = result.stderr
        assert pair.endpoint in message, message
        assert "key" in message, message
        assert "Traceback" not in message and message.count("\n") == 1, message
        assert not is_fuse_mounted(pair.primary)
        with open(f"{pair.primary}/after", "wb") as f:   # the plain directory: nothing replicates
            f.write(b"x")
        assert os.listdir(pair.secondary) == []
        assert pair.receiver.poll() is None
    finally:
        pair.stop()


# (b) hostile messages from a trusted sender ----------------------------------------------------

def _header(op: int, *, magic=b"hm", version=1, session=SESSION, seq=1, rest=b"") -> bytes:
    return struct.pack("<2sBBQQ", magic, version, op, session, seq) + rest


@pytest.fixture
def hostile(tmp_path):
    with hostile_receiver(str(tmp_path)) as planted:
        yield planted


def _outside_state(outside: str) -> tuple:
    st_ = os.lstat(outside)
    return tree_snapshot(outside, with_atime=False), st_.st_mtime_ns, st_.st_ctime_ns


def _assert_refused(reply: protocol.Reply, what: str) -> None:
    assert reply.status == ERROR, f"{what}: accepted ({reply})"
    assert "out of order" not in reply.message, f"{what}: refused only for its order: {reply.message}"


Msg = tuple  # (what, op, ints, strs, times, data)


def _bad_path_messages() -> list[Msg]:
    traversal = [b"../x", b"a/../../x", b"sub/../../x", b"..", b"/tmp/hamirror-abs-x", b"/etc/passwd",
                 b"./x", b"sub//x", b"x/", b"x\0y", b"", b"a" * 256, (b"a/" * 2100)[:-1]]
    messages = []
    for path in traversal:
        short = repr(path[:30])
        messages += [
            (f"CREATE {short}", Op.CREATE, (0o100644, 0, 0, 0), (path,), (), None),
            (f"WRITE {short}", Op.WRITE, (0,), (path,), (), b"pwned"),
            (f"WRITE_FSYNC {short}", Op.WRITE_FSYNC, (0, 0), (path,), (), b"pwned"),
            (f"MKDIR {short}", Op.MKDIR, (0o755, 0, 0), (path,), (), None),
            (f"CHMOD {short}", Op.CHMOD, (0o777,), (path,), (), None),
            (f"SETXATTR {short}", Op.SETXATTR, (0,), (path, b"user.x"), (), b"1"),
            (f"RENAME ok -> {short}", Op.RENAME, (0,), (b"ok", path), (), None),
            (f"RENAME {short} -> ok", Op.RENAME, (0,), (path, b"ok"), (), None),
            (f"LINK ok -> {short}", Op.LINK, (), (b"ok", path), (), None),
            (f"SYMLINK {short}", Op.SYMLINK, (0, 0), (path, b"/etc"), (), None),
            (f"UTIMENS times {short}", Op.UTIMENS, (), (b"ok",), ((path, 1, 1),), None),
        ]
    return messages


def _symlink_messages() -> list[Msg]:
    """Operations that would act outside if the secondary followed its own symlinks."""
    return [
        ("WRITE evil/x", Op.WRITE, (0,), (b"evil/x",), (), b"pwned"),
        ("WRITE evil/secret", Op.WRITE, (0,), (b"evil/secret",), (), b"pwned"),
        ("WRITE evilfile", Op.WRITE, (0,), (b"evilfile",), (), b"pwned"),
        ("WRITE_FSYNC evil/secret", Op.WRITE_FSYNC, (0, 1), (b"evil/secret",), (), b"pwned"),
        ("TRUNCATE evil/secret", Op.TRUNCATE, (0,), (b"evil/secret",), (), None),
        ("TRUNCATE evilfile", Op.TRUNCATE, (0,), (b"evilfile",), (), None),
        ("FALLOCATE evilfile", Op.FALLOCATE, (0, 0, 1 << 20), (b"evilfile",), (), None),
        ("CREATE evil/x", Op.CREATE, (0o100644, 0, 0, 0), (b"evil/x",), (), None),
        ("MKDIR evil/x", Op.MKDIR, (0o755, 0, 0), (b"evil/x",), (), None),
        ("SYMLINK evil/x", Op.SYMLINK, (0, 0), (b"evil/x", b"/etc/passwd"), (), None),
        ("CHMOD evil/secret", Op.CHMOD, (0o777,), (b"evil/secret",), (), None),
        ("CHMOD evil", Op.CHMOD, (0o777,), (b"evil",), (), None),
        ("CHMOD evilfile", Op.CHMOD, (0o777,), (b"evilfile",), (), None),
        ("CHOWN evil/secret", Op.CHOWN, (4321, 4321), (b"evil/secret",), (), None),
        ("SETXATTR evil/x", Op.SETXATTR, (0,), (b"evil/x", b"user.pwned"), (), b"1"),
        ("SETXATTR evil/secret", Op.SETXATTR, (0,), (b"evil/secret", b"user.pwned"), (), b"1"),
        ("SETXATTR evilfile", Op.SETXATTR, (0,), (b"evilfile", b"user.pwned"), (), b"1"),
        ("REMOVEXATTR evil/secret", Op.REMOVEXATTR, (), (b"evil/secret", b"user.keep"), (), None),
        ("RENAME ok -> evil/x", Op.RENAME, (0,), (b"ok", b"evil/x"), (), None),
        ("RENAME evil/secret -> stolen", Op.RENAME, (0,), (b"evil/secret", b"stolen"), (), None),
        ("LINK ok -> evil/x", Op.LINK, (), (b"ok", b"evil/x"), (), None),
        ("LINK evil/secret -> stolen", Op.LINK, (), (b"evil/secret", b"stolen"), (), None),
        ("UNLINK evil/secret", Op.UNLINK, (), (b"evil/secret",), (), None),
        ("RMDIR evil/x", Op.RMDIR, (), (b"evil/x",), (), None),
        ("FSYNC evil/secret", Op.FSYNC, (0,), (b"evil/secret",), (), None),
        ("UTIMENS times evil/secret", Op.UTIMENS, (), (b"ok",), ((b"evil/secret", 1, 1),), None),
        ("UTIMENS times evil/x", Op.UTIMENS, (), (b"ok",), ((b"evil/x", 1, 1),), None),
    ]


def _malformed_frames() -> list[tuple[str, list[bytes]]]:
    good_unlink = encode(Op.UNLINK, SESSION, 1, (), (b"ok",))
    good_write = encode(Op.WRITE, SESSION, 1, (0,), (b"ok",))
    cases = [
        ("empty frame", [b""]),
        ("garbage", [b"\xff" * 40]),
        ("wrong magic", [_header(Op.UNLINK, magic=b"HM") + good_unlink[20:]]),
        ("wrong version", [_header(Op.UNLINK, version=2) + good_unlink[20:]]),
        ("version 0", [_header(Op.UNLINK, version=0) + good_unlink[20:]]),
        ("unknown opcode 0", [_header(0) + b"\0\0\0"]),
        ("unknown opcode 99", [_header(99) + b"\0\0\0"]),
        ("unknown opcode 255", [_header(255) + b"\0\0\0"]),
        ("WRITE without data frame", [good_write]),
        ("UNLINK with a data frame", [good_unlink, b"extra"]),
        ("WRITE with three frames", [good_write, b"a", b"b"]),
        ("trailing bytes", [good_unlink + b"\0"]),
        ("too many ints", [_header(Op.UNLINK) + b"\x01" + b"\0" * 8 + good_unlink[21:]]),
        ("string length past the end", [_header(Op.UNLINK) + b"\x00\x01" + struct.pack("<H", 500) + b"ok\x00"]),
        ("oversized WRITE data", [good_write, b"\0" * (protocol.MAX_DATA + 1)]),
        ("oversized xattr value", [encode(Op.SETXATTR, SESSION, 1, (0,), (b"ok", b"user.a")),
                                   b"v" * (protocol.MAX_XATTR_VALUE + 1)]),
        ("oversized header", [good_unlink + b"\0" * protocol.MAX_HEADER]),
        ("path longer than PATH_MAX", [encode(Op.UNLINK, SESSION, 1, (), ((b"a/" * 2100)[:-1],))]),
        ("xattr name too long", [encode(Op.REMOVEXATTR, SESSION, 1, (), (b"ok", b"user." + b"n" * 300))]),
        ("negative WRITE offset", [encode(Op.WRITE, SESSION, 1, (-1,), (b"ok",)), b"x"]),
        ("WRITE_FSYNC datasync 2", [encode(Op.WRITE_FSYNC, SESSION, 1, (0, 2), (b"ok",)), b"x"]),
        ("huge TRUNCATE", [encode(Op.TRUNCATE, SESSION, 1, (2**63 - 1,), (b"ok",))]),
        ("CHMOD mode out of range", [encode(Op.CHMOD, SESSION, 1, (1 << 20,), (b"ok",))]),
        ("FALLOCATE zero length", [encode(Op.FALLOCATE, SESSION, 1, (0, 0, 0), (b"ok",))]),
        ("UNLINK of the directory itself", [encode(Op.UNLINK, SESSION, 1, (), (b".",))]),
        ("RMDIR of the directory itself", [encode(Op.RMDIR, SESSION, 1, (), (b".",))]),
        ("too many time updates", [encode(Op.UTIMENS, SESSION, 1, (), (b"ok",), ((b"ok", 1, 1),) * 5)]),
    ]
    for cut in (1, 2, 3, 4, 12, 20, 21, len(good_unlink) - 1):
        cases.append((f"header truncated to {cut} bytes", [good_unlink[:cut]]))
    return cases


@needs_root
def test_hostile_and_malformed_messages_are_refused(hostile):
    pair, sender, outside = hostile
    before_outside = _outside_state(outside)
    before_base = sorted(os.listdir(pair.base))
    for what, op, ints, strs, times, data in _symlink_messages() + _bad_path_messages():
        _assert_refused(sender.op(op, ints, strs, times, data), what)
    for what, frames in _malformed_frames():
        sender.hello()
        _assert_refused(sender.exchange(frames), what)
    assert _outside_state(outside) == before_outside
    assert sorted(os.listdir(pair.base)) == before_base
    assert not os.path.exists("/tmp/hamirror-abs-x")
    assert not os.path.exists(f"{pair.secondary}/stolen")
    with open(f"{pair.secondary}/ok", "rb") as f:
        assert f.read() == b"fine"
    assert pair.receiver.poll() is None


@needs_root
def test_stream_order_and_hello_are_enforced(hostile):
    pair, sender, _ = hostile
    # HELLO with an unsupported version, with session 0
    _assert_refused(sender.exchange([encode(Op.HELLO, SESSION, 0, (2,) + HELLO_INTS[1:])]), "HELLO version 2")
    _assert_refused(sender.exchange([encode(Op.HELLO, 0, 0, HELLO_INTS)]), "HELLO session 0")
    # no session yet: an operation is refused for its order
    reply = sender.exchange([encode(Op.CREATE, SESSION + 2, 1, (0o100644, 0, 0, 0), (b"nosession",))])
    assert reply.status == ERROR
    sender.hello()
    create = lambda seq, name, session=SESSION: [encode(Op.CREATE, session, seq, (0o100644, 0, 0, 0), (name,))]  # noqa: E731
    for seq, what in ((5, "skipped ahead"), (0, "replayed HELLO seq"), (2**63, "far future")):
        reply = sender.exchange(create(seq, b"gap"))
        assert reply.status == ERROR and "out of order" in reply.message, (what, reply)
    reply = sender.exchange(create(1, b"other", session=SESSION ^ 1))
    assert reply.status == ERROR and "out of order" in reply.message, reply
    assert sender.exchange(create(1, b"first")).status == OK
    assert sender.exchange(create(1, b"again")).status == ERROR            # a duplicate
    assert sender.exchange(create(2, b"second")).status == OK
    assert sorted(os.listdir(pair.secondary)) == ["evil", "evilfile", "first", "ok", "second", "sub"]


@needs_root
def test_receiver_still_serves_a_real_mount_after_the_attack(hostile):
    pair, sender, outside = hostile
    for what, frames in _malformed_frames()[:10]:
        sender.exchange(frames)
    for what, op, ints, strs, times, data in _symlink_messages()[:6]:
        sender.op(op, ints, strs, times, data)
    # the secondary's own oddities (the planted symlinks) are not the mount's business: remove them
    for name in ("evil", "evilfile", "sub", "ok"):
        path = f"{pair.secondary}/{name}"
        os.rmdir(path) if name == "sub" else os.unlink(path)
    pair.mount()
    with open(f"{pair.primary}/after-attack", "wb") as f:
        f.write(b"still mirrored")
    os.symlink("after-attack", f"{pair.primary}/link")
    assert diff_snapshots(tree_snapshot(pair.primary), tree_snapshot(pair.secondary)) == []
    wait_for(lambda: pair.status()["state"] == "PRIM", 5, what="PRIM")


# (c) the codec alone ----------------------------------------------------------------------------

_segment = st.binary(min_size=1, max_size=20).filter(lambda b: b"/" not in b and b"\0" not in b
                                                     and b not in (b".", b".."))
_path = st.lists(_segment, min_size=1, max_size=4).map(b"/".join).filter(lambda p: not protocol.is_reserved(p))
_name = st.binary(min_size=1, max_size=40).filter(lambda b: b"\0" not in b)
_target = st.binary(min_size=1, max_size=100).filter(lambda b: b"\0" not in b)
_i64 = st.integers(-(2**63), 2**63 - 1)
_id = st.integers(0, 2**32 - 2)
_mode = st.integers(0, 0o177777)
_create_mode = st.sampled_from([0o100000, 0o010000, 0o140000, 0o020000, 0o060000]).flatmap(
    lambda kind: st.integers(0, 0o7777).map(lambda perm: kind | perm))
_offset = st.integers(0, protocol.INT64_MAX - protocol.MAX_DATA)
_times = st.lists(st.tuples(_path | st.just(b"."), _i64, _i64), max_size=protocol.MAX_TIMES).map(tuple)

_ARGS = {
    Op.CREATE: (st.tuples(_create_mode, _id, _id, st.integers(0, protocol.MAX_RDEV)), st.tuples(_path)),
    Op.MKDIR: (st.tuples(_mode, _id, _id), st.tuples(_path)),
    Op.SYMLINK: (st.tuples(_id, _id), st.tuples(_path, _target)),
    Op.LINK: (st.tuples(), st.tuples(_path, _path)),
    Op.UNLINK: (st.tuples(), st.tuples(_path)),
    Op.RMDIR: (st.tuples(), st.tuples(_path)),
    Op.RENAME: (st.tuples(st.integers(0, protocol.RENAME_FLAGS)), st.tuples(_path, _path)),
    Op.WRITE: (st.tuples(_offset), st.tuples(_path)),
    Op.TRUNCATE: (st.tuples(_offset), st.tuples(_path)),
    Op.FALLOCATE: (st.tuples(st.integers(0, protocol.FALLOC_MODES), st.integers(0, 2**40), st.integers(1, 2**40)),
                   st.tuples(_path)),
    Op.CHMOD: (st.tuples(_mode), st.tuples(_path | st.just(b"."))),
    Op.CHOWN: (st.tuples(st.integers(-1, 2**32 - 2), st.integers(-1, 2**32 - 2)), st.tuples(_path)),
    Op.UTIMENS: (st.tuples(), st.tuples(_path | st.just(b"."))),
    Op.SETXATTR: (st.tuples(st.integers(0, protocol.XATTR_FLAGS)), st.tuples(_path, _name)),
    Op.REMOVEXATTR: (st.tuples(), st.tuples(_path, _name)),
    Op.FSYNC: (st.tuples(_i64), st.tuples(_path)),
    Op.PING: (st.tuples(), st.tuples()),
    Op.WRITE_FSYNC: (st.tuples(_offset, st.integers(0, 1)), st.tuples(_path)),
}


_STRING_KINDS = {protocol.PATH: _path, protocol.NAME: _name, protocol.TARGET: _target}
if hasattr(Op, "BLOCKSUMS"):
    _ARGS[Op.BLOCKSUMS] = (st.integers(4096, protocol.MAX_DATA).flatmap(lambda block: st.tuples(
        st.integers(0, 2**40), st.integers(0, min(block * protocol.MAX_BLOCKSUMS, protocol.MAX_SUMS_BYTES)),
        st.just(block))), None)


def _strategies(op: Op):
    """Arguments the codec must accept: specific ranges where decode checks them, else any."""
    spec = protocol.SPECS[op]
    ints, strs = _ARGS.get(op, (None, None))
    if ints is None:
        ints = st.tuples(*[_i64] * spec.n_ints)
    if strs is None:
        strs = st.tuples(*[_STRING_KINDS[kind] for kind in spec.strs])
    return ints, strs


@st.composite
def valid_messages(draw):
    op = draw(st.sampled_from(list(Op)))
    ints_strategy, strs_strategy = _strategies(op)
    data = draw(st.binary(max_size=200)) if protocol.SPECS[op].has_data else None
    return (op, draw(st.integers(0, 2**64 - 1)), draw(st.integers(0, 2**64 - 1)),
            draw(ints_strategy), draw(strs_strategy), draw(_times), data)


@settings(max_examples=400, deadline=None)
@given(valid_messages())
def test_every_valid_message_round_trips(message):
    op, session, seq, ints, strs, times, data = message
    frames = [encode(op, session, seq, ints, strs, times)] + ([data] if data is not None else [])
    decoded = decode(frames)
    assert (decoded.op, decoded.session, decoded.seq) == (op, session, seq)
    assert (decoded.ints, decoded.strs, decoded.times) == (ints, strs, times)
    assert decoded.data == data


def _decode_only_protocol_errors(frames) -> None:
    try:
        decode(frames)
    except ProtocolError:
        pass


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=120), max_size=4))
def test_random_frames_raise_only_protocol_errors(frames):
    _decode_only_protocol_errors(frames)


@settings(max_examples=500, deadline=None)
@given(valid_messages(), st.data())
def test_mutated_valid_messages_raise_only_protocol_errors(message, data):
    """Flip, cut or extend bytes of a valid header: far more likely to reach the deep checks."""
    op, session, seq, ints, strs, times, payload = message
    header = bytearray(encode(op, session, seq, ints, strs, times))
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = data.draw(st.integers(0, len(header)))
        if kind == "flip" and pos < len(header):
            header[pos] = data.draw(st.integers(0, 255))
        elif kind == "cut":
            del header[pos:pos + data.draw(st.integers(1, 8))]
        else:
            header[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
    frames = [bytes(header)] + data.draw(st.lists(st.binary(max_size=16), max_size=2))
    if payload is not None and data.draw(st.booleans()):
        frames = [bytes(header), payload]
    _decode_only_protocol_errors(frames)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=3))
def test_random_replies_raise_only_protocol_errors(frames):
    try:
        decode_reply(frames)
    except ProtocolError:
        pass


def test_decode_accepts_memoryviews_and_rejects_a_wrong_magic_version_or_op():
    header = encode(Op.UNLINK, 1, 2, (), (b"a/b",))
    assert decode([memoryview(header)]).strs == (b"a/b",)
    for bad in (b"xx" + header[2:], header[:2] + b"\x02" + header[3:], header[:3] + b"\x63" + header[4:]):
        with pytest.raises(ProtocolError):
            decode([bad])
