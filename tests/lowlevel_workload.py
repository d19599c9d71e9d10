"""A workload through the native FUSE loop, run in this process: ``python -m tests.lowlevel_workload
DIR [EXTENSION.so]``.

tests/test_lowlevel.py runs it in a process that has an AddressSanitizer build of
``hamirror.fs._lowlevel`` loaded (given as EXTENSION.so; libasan preloaded): every kind of request
the loop serves, names made, renamed (files, directories, exchanges), linked, unlinked while open,
looked up by the thousand and forgotten, a failing Python method, threads changing names in one
directory at once, large writes followed by a pause long enough for the idle workers to give
their buffers back (interrupted in their read: hm_loop.c), and the privileges a write, a truncate
and an open with O_TRUNC by a caller without CAP_FSETID clear (FUSE_HANDLE_KILLPRIV_V2,
native/hm_killpriv.c). Prints "ok" and exits 0.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import threading
import time

from hamirror.syscalls import renameat2


def _load(extension: str) -> None:
    """Make ``hamirror.fs._lowlevel`` the given build (before hamirror.fs.lowlevel imports it)."""
    spec = importlib.util.spec_from_file_location("hamirror.fs._lowlevel", extension)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules["hamirror.fs._lowlevel"] = module


def _requests(mnt: str) -> None:
    os.makedirs(f"{mnt}/d/e")
    with open(f"{mnt}/d/a", "wb") as f:
        f.write(b"x" * 70_000)
    os.link(f"{mnt}/d/a", f"{mnt}/d/e/b")
    os.symlink("a", f"{mnt}/d/s")
    os.mknod(f"{mnt}/d/fifo", 0o600 | 0o010000)
    os.setxattr(f"{mnt}/d/a", "user.k", b"v")
    assert os.getxattr(f"{mnt}/d/e/b", "user.k") == b"v" and os.listxattr(f"{mnt}/d/a") == ["user.k"]
    os.removexattr(f"{mnt}/d/a", "user.k")
    assert os.readlink(f"{mnt}/d/s") == "a" and len(open(f"{mnt}/d/s", "rb").read()) == 70_000
    os.chmod(f"{mnt}/d/a", 0o600)
    os.utime(f"{mnt}/d/a", ns=(1, 2))
    os.truncate(f"{mnt}/d/e/b", 10)
    os.truncate(f"{mnt}/d/e/b", 10)                       # the same size: the kernel keeps its mtime
    os.statvfs(mnt)
    fd = os.open(f"{mnt}/d/e/b", os.O_RDWR)
    os.rename(f"{mnt}/d", f"{mnt}/r")                     # a directory with an open file below
    with open(f"{mnt}/x", "wb") as f:
        f.write(b"x")
    renameat2(-100, f"{mnt}/x".encode(), -100, f"{mnt}/r/a".encode(), 2)   # exchange
    os.unlink(f"{mnt}/r/e/b")
    os.unlink(f"{mnt}/x")                                 # the file's last name: unlinked while open
    os.pwrite(fd, b"after", 0)
    os.fsync(fd)
    os.close(fd)
    os.mkdir(f"{mnt}/many")
    for i in range(300):
        open(f"{mnt}/many/{i}", "wb").close()
    subprocess.run(["find", mnt, "-printf", "%s\n"], check=True, capture_output=True)
    try:
        os.mkdir(f"{mnt}/boom")
    except OSError:
        pass
    subprocess.run(["rm", "-rf", f"{mnt}/many", f"{mnt}/r"], check=True)


def _privileges(mnt: str, lowlevel) -> None:
    """Set-ID bits cleared for an unprivileged writer, truncater and O_TRUNC opener; a file
    capability removed by a write (tests/test_killpriv.py has the replicated cases)."""
    from tests.test_killpriv import CAP_BLOB, CAPABILITY, as_nobody, set_id_file

    assert lowlevel._lowlevel.killpriv_v2()
    d = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY)
    for name, steps in (("w", lambda fd: os.pwrite(fd, b"x", 0)), ("t", lambda fd: os.ftruncate(fd, 1)),
                        ("o", lambda fd: os.close(os.open("o", os.O_WRONLY | os.O_TRUNC, dir_fd=d)))):
        set_id_file(d, name)
        fd = os.open(name, os.O_WRONLY, dir_fd=d)
        as_nobody(lambda: steps(fd))
        os.close(fd)
        assert os.stat(name, dir_fd=d).st_mode & 0o7777 == 0o775, name
    os.setxattr(f"{mnt}/w", CAPABILITY, CAP_BLOB)
    with open(f"{mnt}/w", "r+b") as f:
        f.write(b"y")
    assert CAPABILITY not in os.listxattr(f"{mnt}/w")
    for name in ("w", "t", "o"):
        os.unlink(name, dir_fd=d)
    os.close(d)


def _parallel(mnt: str) -> None:
    """Threads making, linking, renaming and removing names in one directory at once: the
    table's lock against the loop's threads (errors between the threads are expected)."""
    os.mkdir(f"{mnt}/p")

    def worker(k: int) -> None:
        for i in range(150):
            a, b = f"{mnt}/p/{i % 7}", f"{mnt}/p/{(i * k) % 5}"
            for call in (lambda: open(a, "ab").write(b"x"), lambda: os.link(a, b), lambda: os.rename(a, b),
                         lambda: renameat2(-100, a.encode(), -100, b.encode(), 2), lambda: os.unlink(b),
                         lambda: os.stat(a), lambda: os.listdir(f"{mnt}/p")):
                try:
                    call()
                except OSError:
                    pass

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    subprocess.run(["rm", "-rf", f"{mnt}/p"], check=True)


def _idle(mnt: str) -> None:
    """Workers' buffers filled by 1 MiB writes, given back after a second idle, used again."""
    data = os.urandom(1 << 20)

    def write(i: int) -> None:
        with open(f"{mnt}/big{i}", "wb") as f:
            f.write(data)

    for rnd in range(2):
        threads = [threading.Thread(target=write, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(1.8)
    assert all(open(f"{mnt}/big{i}", "rb").read() == data for i in range(3))
    for i in range(3):
        os.unlink(f"{mnt}/big{i}")


def main(directory: str, extension: str | None = None) -> int:
    if extension:
        _load(extension)
    from hamirror.fs import lowlevel
    assert extension is None or lowlevel._lowlevel.__file__ == extension
    from tests.test_lowlevel import Faulty
    from hamirror.mirror.replicator import Replicator

    root_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    ops = Faulty(root_fd, Replicator(None, None), "barrier", context=lowlevel.context())
    ready = threading.Event()
    thread = threading.Thread(target=lowlevel.serve_native, args=(ops, root_fd, directory),
                              kwargs={"writeback": True, "max_background": 12, "max_threads": 10,
                                      "idle_threads": 2, "on_init": ready.set}, daemon=True)
    thread.start()
    if not ready.wait(20):
        return 2
    try:
        _requests(directory)
        _privileges(directory, lowlevel)
        _parallel(directory)
        _idle(directory)
    finally:
        subprocess.run(["fusermount3", "-u", directory], check=True)
        thread.join(20)
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
