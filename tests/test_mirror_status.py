"""``status.json`` has one schema (hamirror/mirror/status.py), and both daemons write exactly it.

The agent adopts and judges mounts and receivers from this file (hamirror/agent/datapath.py), so
a key a writer drops or renames is a silent change of what the agent sees. Each daemon's real
writer runs here (a mount's status thread without FUSE, a receiver bound on loopback) and what
the one reader returns must have the schema's keys, no more, no fewer.
"""

from __future__ import annotations

import json
import os
import stat
import typing

import pytest

from hamirror.fs.mount import MountOptions, StatusWriter
from hamirror.link import keys
from hamirror.replica.receiver import Receiver
from hamirror.mirror import status as status_file
from hamirror.mirror.replicator import Replicator


def _keys(schema: type) -> set[str]:
    return set(typing.get_type_hints(schema))


def test_the_mount_writes_the_schema(tmp_path):
    directory, state = tmp_path / "dir", tmp_path / "state"
    directory.mkdir()
    state.mkdir()
    options = MountOptions(directory=str(directory), peer=None, keys_dir=str(tmp_path / "keys"), state_dir=str(state))
    writer = StatusWriter(options, Replicator(None, None))
    writer.write()
    status = status_file.read(str(state))
    assert status is not None and set(status) == _keys(status_file.MountStatus)
    assert status["role"] == "mount" and status["state"] == "STANDALONE" and status["pid"] == os.getpid()
    assert stat.S_IMODE(os.stat(status_file.path(str(state))).st_mode) == 0o644
    assert os.listdir(state) == [status_file.FILE]


def test_the_receiver_writes_the_schema(tmp_path):
    keys.generate(str(tmp_path / "keys"), name="test")
    directory, state = tmp_path / "dir", tmp_path / "state"
    directory.mkdir()
    receiver = Receiver(str(directory), "tcp://127.0.0.1:0", str(tmp_path / "keys"), state_dir=str(state))
    try:
        receiver.write_status()
        status = status_file.read(str(state))
        assert status is not None and set(status) == _keys(status_file.ReceiverStatus)
        assert status["role"] == "receiver" and status["endpoint"] == receiver.endpoint
        assert status["uptodate"] is False and status["session"] == "0"
    finally:
        receiver.close()


@pytest.mark.parametrize("content", [None, "", "{not json", "[1, 2]", "\"text\""])
def test_the_reader_answers_none_for_what_is_not_a_status(tmp_path, content):
    if content is not None:
        (tmp_path / status_file.FILE).write_text(content)
    assert status_file.read(str(tmp_path)) is None


def test_what_is_written_is_what_is_read(tmp_path):
    status = {"role": "receiver", "pid": 1, "by_op": {"WRITE": 2}, "last_message": None}
    status_file.write(str(tmp_path), status)    # type: ignore[arg-type]  # a partial one, as an older version's
    assert status_file.read(str(tmp_path)) == status
    assert json.loads((tmp_path / "status.json").read_text()) == status
