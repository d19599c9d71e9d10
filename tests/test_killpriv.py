"""Privileges on write (docs/native.md, "Privileges on write"): the native engine negotiates
FUSE_HANDLE_KILLPRIV_V2, so the kernel stops asking the mount for ``security.capability`` before
every write(), and the daemon clears set-user-ID / set-group-ID itself, as a replicated change.

Each case runs the same steps on a plain directory and through a replicated mount (real FUSE,
real receiver): the mount must end as the plain directory does, and the secondary as the mount.
"""

from __future__ import annotations

import collections
import ctypes
import os
import shutil
import signal
import stat
import struct
import subprocess
import time

import pytest

from hamirror.fs import lowlevel
from tests.conftest import needs_root
from tests.mirror_fixtures import diff_snapshots, tree_snapshot
from tests.test_mirror_hardlinks import lower_dir

pytestmark = needs_root

NOBODY = 65534
CAPABILITY = "security.capability"
# struct vfs_cap_data, revision 2, effective: cap_net_bind_service permitted
CAP_BLOB = struct.pack("<IIIII", 0x02000001, 1 << 10, 0, 0, 0)


def as_nobody(action) -> None:
    """Run ``action()`` in a child that is uid/gid 65534 without capabilities (no CAP_FSETID)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            action()
            code = 0
        finally:
            os._exit(code)
    assert os.waitpid(pid, 0)[1] == 0, "the unprivileged step failed"


def set_id_file(directory: int, name: str) -> None:
    """A file owned by 65534 with set-user-ID, set-group-ID and group execute: 06775."""
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=directory)
    os.write(fd, b"0123456789")
    os.fchown(fd, NOBODY, NOBODY)
    os.fchmod(fd, 0o6775)
    os.close(fd)


def writable(directory: int, name: str) -> int:
    return os.open(name, os.O_WRONLY, dir_fd=directory)


def nobody_writes(d: int, name: str) -> None:
    fd = writable(d, name)
    as_nobody(lambda: os.pwrite(fd, b"x", 0))
    os.close(fd)


def root_writes(d: int, name: str) -> None:
    fd = writable(d, name)
    os.pwrite(fd, b"x", 0)
    os.close(fd)


def nobody_truncates(d: int, name: str) -> None:
    fd = writable(d, name)
    as_nobody(lambda: os.ftruncate(fd, 4))
    os.close(fd)


def nobody_opens_truncating(d: int, name: str) -> None:
    as_nobody(lambda: os.close(os.open(name, os.O_WRONLY | os.O_TRUNC, dir_fd=d)))


def nobody_chowns(d: int, name: str) -> None:
    fd = os.open(name, os.O_RDONLY, dir_fd=d)
    as_nobody(lambda: os.fchown(fd, -1, NOBODY))
    os.close(fd)


def root_chowns(d: int, name: str) -> None:
    os.chown(name, 0, 0, dir_fd=d)


def nobody_fallocates(d: int, name: str) -> None:
    fd = writable(d, name)
    as_nobody(lambda: os.posix_fallocate(fd, 0, 8192))
    os.close(fd)


def root_chowns_to_the_same_owner(d: int, name: str) -> None:
    os.chown(name, -1, -1, dir_fd=d)


CASES = {"nobody writes": nobody_writes, "root writes": root_writes, "nobody truncates": nobody_truncates,
         "nobody opens with O_TRUNC": nobody_opens_truncating, "nobody chowns": nobody_chowns,
         "root chowns": root_chowns, "root chowns to -1, -1": root_chowns_to_the_same_owner,
         "nobody fallocates": nobody_fallocates}


def mode(d: int, name: str) -> str:
    return oct(stat.S_IMODE(os.stat(name, dir_fd=d).st_mode))


def settle(path: str) -> None:
    """A barrier: in barrier mode the peer has everything before an fsync once it returns."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@pytest.fixture(params=["sync", "barrier"])
def pair(request, mirror_factory):
    return mirror_factory(request.param, mode=request.param).start()


def test_each_case_ends_as_on_a_plain_directory_on_both_copies(pair, tmp_path):
    """(b, c, e) Set-user-ID and set-group-ID (with group execute) go when a caller without
    CAP_FSETID writes, truncates or fallocates, stay when root writes, go on any chown, as on
    ext4 directly; the secondary keeps the same mode."""
    plain_dir = tmp_path / "plain"
    plain_dir.mkdir()
    plain = os.open(plain_dir, os.O_RDONLY | os.O_DIRECTORY)
    mounted = os.open(pair.primary, os.O_RDONLY | os.O_DIRECTORY)
    try:
        got = {}
        for case, steps in CASES.items():
            name = case.replace(" ", "-")
            for d in (plain, mounted):
                set_id_file(d, name)
                steps(d, name)
            settle(f"{pair.primary}/{name}")
            secondary = oct(stat.S_IMODE(os.stat(f"{pair.secondary}/{name}").st_mode))
            got[case] = (mode(plain, name), mode(mounted, name), secondary)
    finally:
        os.close(plain)
        os.close(mounted)
    expected = {case: (modes[0],) * 3 for case, modes in got.items()}
    assert got == expected
    assert got["nobody writes"][0] == "0o775" and got["root writes"][0] == "0o6775"   # the cases do test something
    assert diff_snapshots(tree_snapshot(pair.primary), tree_snapshot(pair.secondary)) == []


def test_a_write_removes_a_file_capability_on_both_copies(pair):
    """(d) Any write removes security.capability (root's too), on the secondary as well."""
    f = f"{pair.primary}/cap"
    with open(f, "wb") as out:
        out.write(b"binary")
    os.setxattr(f, CAPABILITY, CAP_BLOB)
    settle(f)
    assert os.getxattr(f"{pair.secondary}/cap", CAPABILITY) == CAP_BLOB
    fd = os.open(f, os.O_WRONLY)
    os.pwrite(fd, b"B", 0)
    os.fsync(fd)
    os.close(fd)
    for copy in (f, f"{pair.secondary}/cap"):
        assert CAPABILITY not in os.listxattr(copy), copy
    # Set behind the kernel's back (beneath the mount, and on the secondary to match): the
    # kernel checked this inode already and asks no more; the daemon finds it on the handle.
    for copy in (f"{lower_dir(pair)}/cap", f"{pair.secondary}/cap"):
        os.setxattr(copy, CAPABILITY, CAP_BLOB)
    fd = os.open(f, os.O_WRONLY)
    os.pwrite(fd, b"C", 1)
    os.fsync(fd)
    os.close(fd)
    for copy in (f"{lower_dir(pair)}/cap", f"{pair.secondary}/cap"):
        assert CAPABILITY not in os.listxattr(copy), copy
    assert diff_snapshots(tree_snapshot(pair.primary), tree_snapshot(pair.secondary)) == []


@pytest.mark.skipif(shutil.which("perf") is None, reason="needs perf (the kernel's FUSE tracepoints)")
def test_the_kernel_asks_no_capability_question_before_each_write(pair, tmp_path):
    """(a) Without FUSE_HANDLE_KILLPRIV_V2 the kernel sends a GETXATTR (security.capability)
    before every write() (~50-75 us each, on every commit's path): counted here from the kernel's
    own tracepoints for this mount's connection, over 100 writes."""
    f = f"{pair.primary}/wal"
    with open(f, "wb") as out:
        out.write(b"\0" * 8192)
    fd = os.open(f, os.O_WRONLY)
    data = str(tmp_path / "perf.data")
    perf = subprocess.Popen(["perf", "record", "-q", "-a", "-o", data, "-e", "fuse:fuse_request_send"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.5)   # perf records only once it is set up
        for i in range(100):
            os.pwrite(fd, b"x" * 512, i * 512)
        os.fsync(fd)
        time.sleep(0.2)
    finally:
        perf.send_signal(signal.SIGINT)
        perf.wait(30)
        os.close(fd)
    trace = subprocess.run(["perf", "script", "-i", data, "-F", "trace"], capture_output=True, text=True,
                           check=True).stdout
    connection = f"connection {os.minor(os.stat(pair.primary).st_dev)} "
    requests = collections.Counter(line.split("(")[1].split(")")[0] for line in trace.splitlines()
                                   if connection in line and "(" in line)
    assert requests["FUSE_WRITE"] >= (100 if pair.mode == "sync" else 1), requests   # the trace saw this mount
    assert requests["FUSE_GETXATTR"] <= 1, requests


class KillPriv(ctypes.Structure):
    """native/hm_killpriv.h's struct hm_killpriv."""
    _fields_ = [("init_unique", ctypes.c_uint64), ("offered", ctypes.c_uint32), ("active", ctypes.c_int)]


FUSE_INIT, FUSE_HANDLE_KILLPRIV_V2, FUSE_HANDLE_KILLPRIV = 26, 1 << 28, 1 << 19


@pytest.mark.parametrize("offered", [True, False])
def test_the_init_reply_gets_v2_only_when_the_kernel_offers_it(offered):
    """(3) The fallback: a kernel without FUSE_HANDLE_KILLPRIV_V2 (before 5.11) gets libfuse's
    reply unchanged and the loop leaves the kills to it; with the offer, the flag is added.
    The hooks themselves, called on a synthetic INIT exchange (the kernel here always offers)."""
    lib = ctypes.CDLL(lowlevel._lowlevel.__file__)
    lib.hm_killpriv_writev.restype = ctypes.c_ssize_t
    state = KillPriv()
    flags = (FUSE_HANDLE_KILLPRIV_V2 if offered else 0) | 1   # and FUSE_ASYNC_READ
    request = struct.pack("<IIQQIIIHH", 104, FUSE_INIT, 7, 0, 0, 0, 0, 0, 0) + struct.pack("<5I44x", 7, 36, 0, flags, 0)
    lib.hm_killpriv_seen(ctypes.byref(state), request, ctypes.c_size_t(len(request)))
    header = ctypes.create_string_buffer(struct.pack("<IiQ", 80, 0, 7), 16)
    body = ctypes.create_string_buffer(struct.pack("<IIII48x", 7, 31, 0, 1), 64)

    class IOVec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

    iov = (IOVec * 2)(IOVec(ctypes.addressof(header), 16), IOVec(ctypes.addressof(body), 64))
    r, w = os.pipe()
    try:
        assert lib.hm_killpriv_writev(ctypes.byref(state), w, iov, 2) == 80
        reply = os.read(r, 100)
    finally:
        os.close(r)
        os.close(w)
    reply_flags = struct.unpack_from("<I", reply, 16 + 12)[0]
    assert reply_flags == (FUSE_HANDLE_KILLPRIV_V2 | 1 if offered else 1)
    assert state.active == int(offered) and state.init_unique == 0
    assert struct.unpack_from("<I", body.raw, 12)[0] == 1   # libfuse's own reply is left as it was
