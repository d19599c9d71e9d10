"""The replicated mount through real FUSE and real sockets: each kind of operation arrives."""

import os
import sqlite3
import stat
import subprocess

import pytest

from tests.conftest import needs_root
from tests.mirror_fixtures import diff_snapshots, tree_snapshot, wait_for

pytestmark = needs_root


def assert_same(pair):
    primary, secondary = tree_snapshot(pair.primary), tree_snapshot(pair.secondary)
    assert diff_snapshots(primary, secondary) == []


def test_every_kind_of_change_reaches_the_secondary(mirror_pair):
    p = mirror_pair.primary
    with open(f"{p}/f", "wb") as f:
        f.write(b"hello world")
    with open(f"{p}/f", "ab") as f:           # O_APPEND
        f.write(b"!!")
    with open(f"{p}/f", "r+b") as f:          # write at an offset
        f.seek(3)
        f.write(b"LO")
    os.mkdir(f"{p}/d", 0o750)
    os.makedirs(f"{p}/d/e/empty")
    with open(f"{p}/d/e/big", "wb") as f:
        f.write(os.urandom(3 * 1024 * 1024 + 17))
    os.truncate(f"{p}/d/e/big", 1000)
    fd = os.open(f"{p}/falloc", os.O_CREAT | os.O_WRONLY, 0o644)
    os.posix_fallocate(fd, 0, 65536)
    os.close(fd)
    os.symlink("../f", f"{p}/d/link")
    os.link(f"{p}/f", f"{p}/hard")
    os.chmod(f"{p}/f", 0o640)
    os.chown(f"{p}/hard", 1234, 5678)
    os.utime(f"{p}/d", ns=(1_000_000_123, 2_000_000_456))
    os.setxattr(f"{p}/f", "user.colour", b"blue")
    os.setxattr(f"{p}/d", "user.tag", b"x" * 300)
    os.removexattr(f"{p}/d", "user.tag")
    with open(f"{p}/old", "wb") as f:
        f.write(b"old")
    with open(f"{p}/new", "wb") as f:
        f.write(b"new")
    os.rename(f"{p}/new", f"{p}/old")          # over an existing file
    os.makedirs(f"{p}/dir1/sub")
    os.mkdir(f"{p}/dir2")
    os.rename(f"{p}/dir1", f"{p}/dir2")        # over an existing empty directory
    os.mkdir(f"{p}/gone")
    os.rmdir(f"{p}/gone")
    os.mkfifo(f"{p}/fifo")
    with open(f"{p}/excl", "xb") as f:         # O_EXCL
        f.write(b"x")
    with pytest.raises(FileExistsError):
        open(f"{p}/excl", "xb")
    with open(f"{p}/excl", "wb") as f:         # O_TRUNC
        f.write(b"y")
    assert_same(mirror_pair)
    with open(f"{mirror_pair.secondary}/old", "rb") as f:
        assert f.read() == b"new"


def test_fsync_and_unlink_of_an_open_file(mirror_pair):
    p = mirror_pair.primary
    fd = os.open(f"{p}/tmp", os.O_CREAT | os.O_RDWR, 0o600)
    os.write(fd, b"data")
    os.fsync(fd)
    os.fdatasync(fd)
    os.unlink(f"{p}/tmp")
    os.write(fd, b"more")                      # still writable after unlink
    os.close(fd)
    assert not os.path.exists(f"{mirror_pair.secondary}/tmp")
    assert_same(mirror_pair)


def test_shared_writable_mmap_reaches_the_secondary(mirror_pair):
    import mmap
    path = f"{mirror_pair.primary}/mapped"
    with open(path, "wb") as f:
        f.truncate(8192)
    with open(path, "r+b") as f:
        m = mmap.mmap(f.fileno(), 8192, mmap.MAP_SHARED)
        m[100:105] = b"hello"
        m.flush()
        m.close()
        os.fsync(f.fileno())
    with open(f"{mirror_pair.secondary}/mapped", "rb") as f:
        assert f.read()[100:105] == b"hello"
    assert_same(mirror_pair)


def test_other_users_get_normal_permission_checks(mirror_pair):
    p = mirror_pair.primary
    d = p
    while d != "/tmp":            # let the other user traverse our (pytest's 0700) temp dirs
        os.chmod(d, os.stat(d).st_mode | 0o005)
        d = os.path.dirname(d)
    os.mkdir(f"{p}/shared")
    os.chmod(f"{p}/shared", 0o777)   # mkdir mode is masked by our umask
    os.mkdir(f"{p}/private", 0o700)
    script = f"echo x > {p}/shared/mine && ! (echo y > {p}/private/no) 2>/dev/null"
    result = subprocess.run(["setpriv", "--reuid=4321", "--regid=4321", "--clear-groups", "/bin/sh", "-c", script],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    st = os.lstat(f"{mirror_pair.secondary}/shared/mine")
    assert (st.st_uid, st.st_gid) == (4321, 4321)
    assert not os.path.exists(f"{mirror_pair.secondary}/private/no")
    assert_same(mirror_pair)


@pytest.mark.parametrize("mode,journal_mode", [("sync", "wal"), ("sync", "delete"), ("barrier", "wal"),
                                               ("async", "wal")])
def test_sqlite_transactions_are_all_on_the_secondary(mirror_factory, mode, journal_mode):
    pair = mirror_factory("sq", mode=mode).start()
    db = sqlite3.connect(f"{pair.primary}/app.db", isolation_level=None)
    db.execute(f"PRAGMA journal_mode={journal_mode}")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
    for first in range(0, 1500, 3):   # 500 transactions (journal, fsyncs, commit) of 3 rows each
        db.execute("BEGIN")
        db.executemany("INSERT INTO t VALUES (?, ?)", [(i, f"value-{i}" * 3) for i in range(first, first + 3)])
        db.execute("COMMIT")
    db.close()
    pair.umount()   # the app is gone; inspect the secondary's copy on its own
    copy = sqlite3.connect(f"{pair.secondary}/app.db")
    assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert copy.execute("SELECT count(*), sum(k) FROM t").fetchone() == (1500, sum(range(1500)))
    copy.close()


def test_status_reports_prim_then_clean_umount(mirror_pair):
    wait_for(lambda: mirror_pair.status()["state"] == "PRIM", 5, what="PRIM status")
    with open(f"{mirror_pair.primary}/x", "wb") as f:
        f.write(b"1" * 10000)
    mirror_pair.umount()
    assert mirror_pair.mounter.returncode == 0
    assert mirror_pair.status()["mounted"] is False
    assert stat.S_ISDIR(os.stat(mirror_pair.primary).st_mode)
    assert_same(mirror_pair)
