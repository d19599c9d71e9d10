"""A held message (LinkClient.submit(hold=True)): a following UTIMENS of the same path travels in
it, and nothing else changes: the stream's order, the acknowledgements, what a lost peer missed.

A real receiver (in this process, its own thread) over loopback with CURVE keys; the secondary's
copy and the receiver's per-operation counts are checked from outside the client.
"""

from __future__ import annotations

import os
import stat
import time

import pytest

from hamirror.link import client as client_module
from hamirror.link.client import LinkClient
from hamirror.link.protocol import Op
from tests.mirror_fixtures import local_link

T1 = (1_600_000_000_111_111_111, 1_600_000_000_222_222_222)
T2 = (1_700_000_000_333_333_333, 1_700_000_000_444_444_444)


@pytest.fixture
def link(tmp_path):
    lost: list[tuple[str, list]] = []
    with local_link(str(tmp_path), on_lost=lambda reason, failed: lost.append((reason, failed))) as (client, receiver):
        yield client, receiver, tmp_path / "secondary", lost


def _create(client: LinkClient, name: bytes):
    return client.submit(Op.CREATE, (stat.S_IFREG | 0o644, os.getuid(), os.getgid(), 0), (name,))


def _times(name: bytes, t: tuple[int, int]):
    return ((name, *t),)


def test_a_utimens_of_the_same_path_travels_in_the_held_write(link):
    client, receiver, secondary, _ = link
    _create(client, b"f")
    write = client.submit(Op.WRITE, (0,), (b"f",), _times(b"f", T1), b"hello", changes=(("f", 0, 5),), hold=True)
    utimens = client.submit(Op.UTIMENS, (), (b"f",), _times(b"f", T2), changes=(("f",),), hold=True)
    assert utimens is write                   # one message, one acknowledgement
    assert write.changes == (("f", 0, 5), ("f",))
    assert write.wait(5) and write.error is None   # sent within HOLD with no further submit
    st = os.stat(secondary / "f")
    assert (secondary / "f").read_bytes() == b"hello"
    assert (st.st_atime_ns, st.st_mtime_ns) == T2
    assert receiver.stats.by_op == {"CREATE": 1, "WRITE": 1}


def test_anything_else_sends_the_held_message_first(link):
    client, receiver, secondary, _ = link
    _create(client, b"a")
    client.submit(Op.WRITE, (0,), (b"a",), _times(b"a", T1), b"1", hold=True)
    # Another path's UTIMENS and a rename are not merged: both follow the held WRITE, in order.
    _create(client, b"b")
    client.submit(Op.UTIMENS, (), (b"b",), _times(b"b", T2), hold=True)
    client.submit(Op.UTIMENS, (), (b"a",), _times(b"a", T2))    # the held one is b's now: not merged
    last = client.submit(Op.RENAME, (0,), (b"a", b"c"))
    assert last.wait(5) and last.error is None
    assert (secondary / "c").read_bytes() == b"1"
    assert os.stat(secondary / "c").st_mtime_ns == T2[1]
    assert os.stat(secondary / "b").st_mtime_ns == T2[1]
    assert receiver.stats.by_op == {"CREATE": 2, "WRITE": 1, "UTIMENS": 2, "RENAME": 1}


def test_flush_held_sends_it_at_once(link, monkeypatch):
    client, _, secondary, _ = link
    monkeypatch.setattr(client_module, "HOLD", 30.0)   # only flush_held may send it in time
    _create(client, b"f")
    ticket = client.submit(Op.WRITE, (0,), (b"f",), _times(b"f", T1), b"x", hold=True)
    assert not ticket.wait(0.3)
    client.flush_held()
    assert ticket.wait(5) and ticket.error is None
    assert client.last_ticket is ticket
    assert (secondary / "f").read_bytes() == b"x"


def test_a_lost_peer_fails_the_held_message_and_reports_what_it_changed(link, monkeypatch):
    client, receiver, secondary, lost = link
    monkeypatch.setattr(client_module, "HOLD", 30.0)
    _create(client, b"f").wait(5)
    ticket = client.submit(Op.WRITE, (0,), (b"f",), _times(b"f", T1), b"x", changes=(("f", 0, 1),), hold=True)
    client.abort("test: peer declared lost")
    assert ticket.wait(5) and ticket.error == "test: peer declared lost"
    assert lost and ticket in lost[0][1] and ("f", 0, 1) in lost[0][1][-1].changes
    time.sleep(0.2)
    assert (secondary / "f").read_bytes() == b""   # never sent
    # Later submits fail at once, held or not.
    assert client.submit(Op.UTIMENS, (), (b"f",), _times(b"f", T2), hold=True).error == "test: peer declared lost"


def test_an_fsync_of_the_held_write_makes_one_commit_message(link):
    client, receiver, secondary, _ = link
    _create(client, b"wal")
    write = client.submit(Op.WRITE, (4,), (b"wal",), _times(b"wal", T1), b"page", changes=(("wal", 4, 4),), hold=True)
    assert client.submit(Op.UTIMENS, (), (b"wal",), _times(b"wal", T2), changes=(("wal",),), hold=True) is write
    fsync = client.submit(Op.FSYNC, (1,), (b"wal",))
    assert fsync is write and write.changes == (("wal", 4, 4), ("wal",))
    assert fsync.wait(5) and fsync.error is None
    assert (secondary / "wal").read_bytes() == b"\0" * 4 + b"page"
    assert os.stat(secondary / "wal").st_mtime_ns == T2[1]
    assert receiver.stats.by_op == {"CREATE": 1, "WRITE_FSYNC": 1}
    # An fsync of another path, or of a held UTIMENS, is a message of its own.
    client.submit(Op.UTIMENS, (), (b"wal",), _times(b"wal", T1), hold=True)
    assert client.submit(Op.FSYNC, (0,), (b"wal",)).wait(5)
    assert receiver.stats.by_op == {"CREATE": 1, "WRITE_FSYNC": 1, "UTIMENS": 1, "FSYNC": 1}
