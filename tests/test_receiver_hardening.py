"""Findings of the security review (issue 8) against a real receiver, through a trusted raw sender.

- keep-aside never follows a symlink the peer planted (finding 1);
- keep-aside works when the directory is its own filesystem: the conflict folder lives inside it,
  under a reserved name that no operation may touch and no listing shows (finding 3);
- no single message kills the receiver, and a huge frame is dropped before it is buffered (2);
- every kind of inode is created with its exact mode whatever the receiver's umask (7).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import stat

import pytest

from hamirror.link import protocol
from hamirror.link.protocol import ERROR, OK, Op, encode
from tests.conftest import needs_root
from tests.mirror_fixtures import SESSION, hostile_receiver, own_filesystem, tree_snapshot

CONFLICTS = protocol.CONFLICT_DIR.decode()


def _vm_hwm(pid: int) -> int:
    """Peak resident memory of a process, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        line = next(line for line in f if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def _still_serves(pair, sender) -> None:
    """The receiver is alive and applies a valid operation."""
    assert pair.receiver.poll() is None, "the receiver died"
    reply = sender.op(Op.CREATE, (0o100644, 0, 0, 0), (b"alive",))
    assert reply.status == OK, reply
    assert os.path.exists(f"{pair.secondary}/alive")
    os.unlink(f"{pair.secondary}/alive")


@pytest.fixture
def on_own_fs(tmp_path):
    """A hostile receiver whose directory is its own filesystem (bait planted on it)."""
    with contextlib.ExitStack() as stack:
        base = tmp_path / "m"
        (base / "secondary").mkdir(parents=True)
        stack.enter_context(own_filesystem(str(base / "secondary")))
        yield stack.enter_context(hostile_receiver(str(tmp_path)))


# finding 1 -------------------------------------------------------------------------------------

@needs_root
def test_keep_aside_never_follows_a_planted_symlink(tmp_path):
    """The review's sequence: a symlink set aside, then a file set aside "through" it."""
    with hostile_receiver(str(tmp_path)) as (pair, sender, outside):
        before = sorted(os.listdir(pair.base)), tree_snapshot(outside)
        steps = [(Op.SYMLINK, (0, 0), (b"ka", outside.encode())),
                 (Op.REMOVE, (1,), (b"ka",)),
                 (Op.MKDIR, (0o755, 0, 0), (b"ka",)),
                 (Op.CREATE, (0o100644, 0, 0, 0), (b"ka/ESCAPED",)),
                 (Op.WRITE, (0,), (b"ka/ESCAPED",), b"#!/bin/sh\necho owned\n"),
                 (Op.CHMOD, (0o4755,), (b"ka/ESCAPED",))]
        for op, ints, strs, *data in steps:
            reply = sender.op(op, ints, strs, data=data[0] if data else None)
            assert reply.status == OK, (op, reply)
        reply = sender.op(Op.REMOVE, (1,), (b"ka/ESCAPED",))
        assert not os.path.exists(os.path.join(outside, "ESCAPED")), "keep-aside wrote outside the directory"
        assert (sorted(os.listdir(pair.base)), tree_snapshot(outside)) == before
        assert reply.status == ERROR and "symlink" in reply.message, reply   # refused, not redirected
        _still_serves(pair, sender)


# finding 3 -------------------------------------------------------------------------------------

@needs_root
def test_keep_aside_on_a_directory_that_is_its_own_filesystem(on_own_fs):
    pair, sender, _ = on_own_fs
    assert os.stat(pair.secondary).st_dev != os.stat(pair.base).st_dev
    os.makedirs(f"{pair.secondary}/d/e")
    for path, data in (("lost", b"B's version"), ("d/e/deep", b"deep")):
        with open(f"{pair.secondary}/{path}", "wb") as f:
            f.write(data)
    for path in (b"lost", b"d/e/deep", b"sub"):
        reply = sender.op(Op.REMOVE, (1,), (path,))
        assert reply.status == OK, (path, reply)
    sender.op(Op.CREATE, (0o100644, 0, 0, 0), (b"lost",))             # the winner's, then lost again
    assert sender.op(Op.REMOVE, (1,), (b"lost",)).status == OK

    assert glob.glob(f"{pair.secondary}.hamirror-conflict*") == []      # nothing beside the directory
    (stamp,) = os.listdir(f"{pair.secondary}/{CONFLICTS}")
    aside = f"{pair.secondary}/{CONFLICTS}/{stamp}"
    assert sorted(os.listdir(aside)) == ["d", "lost", "lost.1", "sub"]
    with open(f"{aside}/lost", "rb") as f:
        assert f.read() == b"B's version"
    with open(f"{aside}/d/e/deep", "rb") as f:
        assert f.read() == b"deep"
    for folder in (f"{pair.secondary}/{CONFLICTS}", aside, f"{aside}/d"):
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700, folder   # root-only
    assert not os.path.exists(f"{pair.secondary}/lost")

    # reserved: no operation may name it, and the resync's listing does not show it
    for op, ints, strs in ((Op.STAT, (), (protocol.CONFLICT_DIR,)),
                           (Op.REMOVE, (0,), (protocol.CONFLICT_DIR,)),
                           (Op.WRITE, (0,), (protocol.CONFLICT_DIR + b"/" + stamp.encode() + b"/lost",))):
        reply = sender.op(op, ints, strs, data=b"x" if op == Op.WRITE else None)
        assert reply.status == ERROR and "reserved" in reply.message, (op, reply)
    reply = sender.op(Op.LISTDIR, (), (b".",))
    assert reply.status == OK and CONFLICTS not in json.loads(reply.payload), reply.payload
    _still_serves(pair, sender)


# finding 2 -------------------------------------------------------------------------------------

_KILLERS = {
    "CREATE of a FIFO with rdev -1": ((Op.CREATE, (0o010644, 0, 0, -1), (b"fifo",)), None, "device number"),
    "SETXATTR flags 2**40": ((Op.SETXATTR, (2**40,), (b"ok", b"user.x")), b"1", "flags"),
    "RESYNC_DONE not JSON": ((Op.RESYNC_DONE, (), ()), b"\xff not json {", "generation history"),
    "RESYNC_DONE a JSON list": ((Op.RESYNC_DONE, (), ()), b"[1, 2, 3]", "generation history"),
    "RESYNC_DONE deeply nested": ((Op.RESYNC_DONE, (), ()), b"[" * 60000, "generation history"),
    "RESYNC_DONE bad generation": ((Op.RESYNC_DONE, (), ()), b'{"current": {"id": 5}}', "generation history"),
}


@needs_root
@pytest.mark.parametrize("what", list(_KILLERS))
def test_one_message_does_not_kill_the_receiver(tmp_path, what):
    (op, ints, strs), data, expected = _KILLERS[what]
    with hostile_receiver(str(tmp_path)) as (pair, sender, _):
        reply = sender.op(op, ints, strs, data=data)
        assert reply.status == ERROR and expected in reply.message, reply
        assert "Traceback" not in reply.message
        _still_serves(pair, sender)


@needs_root
def test_a_huge_frame_is_dropped_before_it_is_buffered(tmp_path):
    with hostile_receiver(str(tmp_path)) as (pair, sender, _):
        sender.hello()
        before = _vm_hwm(pair.receiver.pid)
        huge = bytes(protocol.MAX_FRAME + 64 * 1024 * 1024)
        sender.socket.send_multipart([encode(Op.WRITE, SESSION, 1, (0,), (b"ok",)), huge])
        del huge
        assert not sender.socket.poll(3000), "the receiver read and answered a frame above MAX_FRAME"
        grown = _vm_hwm(pair.receiver.pid) - before
        assert grown < 16 * 1024 * 1024, f"the receiver's memory grew by {grown >> 20} MiB"
        sender.reconnect()   # aead: ZeroMQ dropped the connection, and the session with it
        _still_serves(pair, sender)


# finding 7 (receiver side) ---------------------------------------------------------------------

_KINDS = [
    ("file 0666", Op.CREATE, (0o100666, 0, 0, 0)),
    ("setuid file", Op.CREATE, (0o104755, 0, 0, 0)),
    ("fifo 0666", Op.CREATE, (0o010666, 0, 0, 0)),
    ("setgid fifo", Op.CREATE, (0o012660, 0, 0, 0)),
    ("socket 0777", Op.CREATE, (0o140777, 0, 0, 0)),
    ("char device 0666", Op.CREATE, (0o020666, 0, 0, os.makedev(1, 3))),
    ("block device 0640", Op.CREATE, (0o060640, 0, 0, os.makedev(7, 99))),
    ("dir 0777", Op.MKDIR, (0o040777, 0, 0)),
    ("sticky dir", Op.MKDIR, (0o041777, 0, 0)),
    ("setgid dir 2775 owned by 1234", Op.MKDIR, (0o042775, 1234, 1234)),
]


@needs_root
def test_every_kind_of_inode_gets_its_exact_mode_whatever_the_umask(tmp_path):
    with hostile_receiver(str(tmp_path), umask=0o027) as (pair, sender, _):
        for n, (what, op, ints) in enumerate(_KINDS):
            reply = sender.op(op, ints, (b"n%d" % n,))
            assert reply.status == OK, (what, reply)
        for n, (what, op, ints) in enumerate(_KINDS):
            st = os.lstat(f"{pair.secondary}/n{n}")
            assert oct(st.st_mode) == oct(ints[0]), what
            assert (st.st_uid, st.st_gid) == ints[1:3], what
            if op == Op.CREATE and ints[3]:
                assert st.st_rdev == ints[3], what


# found by the fuzzer: data operations on a FIFO or a device node -------------------------------

@needs_root
def test_data_operations_never_open_a_fifo_or_a_device_node(tmp_path):
    """A FIFO would block the receiver for good; a device node would reach outside the directory
    (here /dev/null's numbers, harmless if the receiver got it wrong)."""
    with hostile_receiver(str(tmp_path)) as (pair, sender, _):
        assert sender.op(Op.CREATE, (0o010666, 0, 0, 0), (b"fifo",)).status == OK
        assert sender.op(Op.CREATE, (0o020666, 0, 0, os.makedev(1, 3)), (b"null",)).status == OK
        for name in (b"fifo", b"null"):
            for op, ints, data in ((Op.WRITE, (0,), b"x"), (Op.TRUNCATE, (0,), None),
                                   (Op.FALLOCATE, (0, 0, 4096), None), (Op.FSYNC, (0,), None),
                                   (Op.CREATE, (0o100644, 0, 0, 0), None)):
                reply = sender.op(op, ints, (name,), data=data)
                assert reply.status == ERROR and "not a regular file" in reply.message, (op, name, reply)
            reply = sender.op(Op.BLOCKSUMS, (0, 4096, 4096), (name,))
            assert reply.status == OK and reply.payload[:8] == (-1).to_bytes(8, "little", signed=True)
        assert stat.S_ISFIFO(os.lstat(f"{pair.secondary}/fifo").st_mode)
        _still_serves(pair, sender)
