"""One way to replace a small file whole (hamirror/durablefile.py), for every writer of one.

Seen in CI: two threads wrote status.json through one fixed temporary name (status.json.tmp);
one rename took the other's temporary, the second got ENOENT and the mount went REFUSED. The
same fixed name was in every small-file writer: concurrent writers collided, a failed write
left its temporary behind, a leftover temporary kept its own mode, and a symlink planted at
the name was followed.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator

import pytest

from hamirror import durablefile
from hamirror.journal import logformat
from hamirror.lab import state as lab_state
from hamirror.lab.naming import LabPaths
from hamirror.mirror import status as status_file

THREADS, WRITES = 8, 200


@pytest.fixture
def folder(tmp_path) -> Iterator[str]:
    """A folder in memory when there is one: thousands of real fsyncs stay off the shared disk."""
    if not os.path.isdir("/dev/shm"):
        yield str(tmp_path)
        return
    path = tempfile.mkdtemp(dir="/dev/shm", prefix="hm-durablefile-")
    try:
        yield path
    finally:
        shutil.rmtree(path)


def _json_file(folder: str) -> tuple[str, Callable[[dict], None]]:
    path = os.path.join(folder, "doc.json")
    return path, lambda doc: durablefile.write_json(path, doc)


def _status_file(folder: str) -> tuple[str, Callable[[dict], None]]:
    return status_file.path(folder), lambda doc: status_file.write(folder, doc)   # type: ignore[arg-type]


WRITERS = pytest.mark.parametrize("writer", [_json_file, _status_file], ids=["write_json", "status.write"])


@WRITERS
def test_writers_of_one_file_never_collide_and_leave_one_whole_document(folder, writer):
    path, write = writer(folder)
    docs = [[{"writer": t, "n": n, "pad": "x" * (100 * t)} for n in range(WRITES)] for t in range(THREADS)]
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def hammer(mine: list[dict]) -> None:
        start.wait()
        try:
            for doc in mine:
                write(doc)
        except BaseException as exc:   # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(mine,)) for mine in docs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with open(path, encoding="utf-8") as f:
        final = json.load(f)
    assert final in [mine[-1] for mine in docs]       # one writer's last document, whole
    assert os.listdir(folder) == [os.path.basename(path)]


def test_a_failed_durable_write_keeps_the_old_file_and_leaves_no_temporary(folder, monkeypatch):
    path = os.path.join(folder, "doc.json")
    durablefile.write_json(path, {"old": True})

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as caught:
        durablefile.write_json(path, {"new": True})
    assert caught.value.errno == errno.ENOSPC
    with open(path, encoding="utf-8") as f:
        assert json.load(f) == {"old": True}
    assert os.listdir(folder) == ["doc.json"]


def test_a_failed_rename_leaves_no_temporary(folder):
    os.mkdir(status_file.path(folder))          # status.json is a directory: the rename fails
    with pytest.raises(IsADirectoryError):
        status_file.write(folder, {"role": "mount"})   # type: ignore[arg-type]
    assert os.listdir(folder) == ["status.json"]


def test_a_failed_snapshot_of_a_log_keeps_the_old_log_and_leaves_no_temporary(folder, monkeypatch):
    path = os.path.join(folder, "activity.log")
    os.close(logformat.write_snapshot(path, ["old"], -1))

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError):
        logformat.write_snapshot(path, ["new"], -1)
    monkeypatch.undo()
    assert logformat.read_log(path).paths == frozenset({"old"})
    assert os.listdir(folder) == ["activity.log"]


def test_modes_are_those_asked_less_the_umask_whatever_was_there(folder):
    secret, shared = os.path.join(folder, "secret.json"), os.path.join(folder, "shared.json")
    for path in (secret, shared, status_file.path(folder)):     # an older file, and an older
        for name in (path, path + ".tmp"):                       # version's leftover temporary
            with open(name, "w") as f:
                f.write("{}")
            os.chmod(name, 0o666)
    old = os.umask(0o027)
    try:
        durablefile.write_json(secret, {})
        durablefile.write_json(shared, {}, mode=0o644)
        status_file.write(folder, {"role": "mount"})   # type: ignore[arg-type]
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o640
    assert stat.S_IMODE(os.stat(status_file.path(folder)).st_mode) == 0o640
    os.umask(0o022)
    try:
        status_file.write(folder, {"role": "mount"})   # type: ignore[arg-type]
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(status_file.path(folder)).st_mode) == 0o644


def _victim(folder: str) -> str:
    victim = os.path.join(folder, "victim")
    with open(victim, "w") as f:
        f.write("untouched")
    return victim


@WRITERS
def test_a_symlink_at_the_old_temporary_name_is_not_followed(folder, writer):
    path, write = writer(folder)
    victim = _victim(folder)
    os.symlink(victim, path + ".tmp")
    write({"role": "mount"})
    with open(victim, encoding="utf-8") as f:
        assert f.read() == "untouched"
    with open(path, encoding="utf-8") as f:
        assert json.load(f) == {"role": "mount"}


@WRITERS
def test_a_temporary_name_taken_by_a_symlink_is_refused_and_another_drawn(folder, writer, monkeypatch):
    """The names are random, so none can be planted in advance: this plants one at the first
    name drawn (O_EXCL refuses it, O_NOFOLLOW too) and the write goes on under the next."""
    path, write = writer(folder)
    victim = _victim(folder)
    names = iter(["planted", "fresh"])
    monkeypatch.setattr(durablefile.secrets, "token_hex", lambda n: next(names))
    planted = os.path.join(folder, f".{os.path.basename(path)}.planted.tmp")
    os.symlink(victim, planted)
    write({"role": "mount"})
    with open(victim, encoding="utf-8") as f:
        assert f.read() == "untouched"
    with open(path, encoding="utf-8") as f:
        assert json.load(f) == {"role": "mount"}
    assert sorted(os.listdir(folder)) == sorted([os.path.basename(path), os.path.basename(planted), "victim"])


def test_leftovers_of_a_crash_are_named_and_the_lab_removes_its_own(folder):
    paths = LabPaths(folder)
    lab_state.save(paths, lab_state.LabState(root=folder, prefix="t"))
    mine, other = os.path.join(folder, ".lab.json.0123.tmp"), os.path.join(folder, ".other.json.0123.tmp")
    for name in (mine, other):
        open(name, "w").close()
    assert durablefile.leftovers(paths.state_file) == [mine]
    lab_state.remove(paths)
    assert os.listdir(folder) == [".other.json.0123.tmp"]


def test_leftovers_are_recognised_by_name_alone(tmp_path):
    """What ``hamirror report`` skips: the names replace() gives its temporaries, and no other."""
    target = tmp_path / "doc.json"
    real = durablefile._create(str(tmp_path), "doc.json", 0o600)
    os.close(real[0])
    assert durablefile.is_leftover(os.path.basename(real[1]))
    assert durablefile.leftovers(str(target)) == [real[1]]
    for name in ("doc.json", ".doc.json.tmp", "doc.json.0123456789ab.tmp", ".doc.json.0123456789AB.tmp",
                 ".doc.json.0123456789ab.tmp.1"):
        assert not durablefile.is_leftover(name), name
