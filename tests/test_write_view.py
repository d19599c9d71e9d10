"""A write reaches Python as a view of the FUSE request's buffer, not a copy of it, and the view
is released once the write returns: the worker reads its next request into that buffer, so a
view kept past the call must raise instead of reading other bytes (native/hm_fuse_py.c,
``call_write``), and whatever keeps a message's data copies it (``protocol.kept``). A module of
its own: one native engine per process (tests/test_lowlevel.py)."""

from __future__ import annotations

import os

import pytest

from hamirror.fs import lowlevel
from hamirror.fs.operations import Interception
from hamirror.link.protocol import kept
from hamirror.mirror.replicator import Replicator
from tests.conftest import needs_root
from tests.test_lowlevel import in_process


class Keeping(Interception):
    """Keeps every write's data object past the call, as a careless caller would."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.kept: list = []

    def write(self, path, data, offset, fh):
        self.kept.append(data)
        return super().write(path, data, offset, fh)


@needs_root
def test_a_write_is_a_view_released_when_the_write_returns(tmp_path):
    made: list[Keeping] = []

    def make(root_fd: int) -> Keeping:
        made.append(Keeping(root_fd, Replicator(None, None), "sync", context=lowlevel.context()))
        return made[0]

    mnt = str(tmp_path / "mnt")
    data = os.urandom((1 << 20) + 4096)
    with in_process(mnt, make, writeback=False) as lower:
        with open(f"{mnt}/f", "wb", buffering=0) as f:
            f.write(data[:1 << 20])        # one request of 1 MiB
            f.write(data[1 << 20:])        # and a small one
        with open(f"{lower}/f", "rb") as f:
            assert f.read() == data
    views = made[0].kept
    assert [type(v) for v in views] == [memoryview, memoryview]
    for view in views:
        with pytest.raises(ValueError, match="released"):
            bytes(view)


def test_kept_data_is_bytes_of_its_own():
    buffer = bytearray(b"request bytes")
    view = memoryview(buffer)[8:]
    copy = kept(view)
    buffer[8:] = b"XXXXX"
    assert copy == b"bytes" and type(copy) is bytes
    whole = b"already bytes"
    assert kept(whole) is whole and kept(None) is None
