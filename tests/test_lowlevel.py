"""The mount's FUSE request loop (hamirror.fs._lowlevel, docs/native.md "The request loop"): real FUSE.

Most tests run the loop in this process, on a plain ``Interception`` without a peer, so they can
read the loop's inode table (``_lowlevel.nodes()``) and make a method raise. The last ones run a
replicated barrier-mode mount (``hamirror mirror mount``) and compare both sides.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import subprocess
import sys
import threading
import time

import pytest

from hamirror.fs import _lowlevel, lowlevel
from hamirror.fs.mount import MAX_BACKGROUND, MAX_THREADS
from hamirror.fs.operations import Interception
from hamirror.link.protocol import CONFLICT_DIR
from hamirror.mirror.replicator import Replicator
from tests.conftest import needs_root
from tests.mirror_fixtures import MirrorPair, diff_snapshots, is_fuse_mounted, tree_snapshot, wait_for
from tests.test_native_apply import run_under_asan

pytestmark = needs_root
# What a drop-in written for the previous release may still set (docs/admin-guide.md, §4).
LEFTOVER = {"HAMIRROR_FUSE_ENGINE": "python"}
IGNORED = ("HAMIRROR_FUSE_ENGINE='python' is ignored: the mount has one FUSE engine (the native "
           "request loop); remove it from the service's environment")


class Faulty(Interception):
    """An Interception whose mkdir of a name starting with "boom" has a bug (not an OSError)."""

    def mkdir(self, path: str, mode: int) -> int:
        if os.path.basename(path).startswith("boom"):
            raise ZeroDivisionError("a bug in an operation")
        return super().mkdir(path, mode)


def test_a_leftover_engine_setting_gets_one_exact_warning():
    assert lowlevel.ignored_engine_setting(LEFTOVER) == IGNORED
    assert lowlevel.ignored_engine_setting({"HAMIRROR_FUSE_ENGINE": ""}) == (
        "HAMIRROR_FUSE_ENGINE='' is ignored: the mount has one FUSE engine (the native request loop); "
        "remove it from the service's environment")
    assert lowlevel.ignored_engine_setting({"HAMIRROR_LINK_ENGINE": "aead"}) is None


@pytest.mark.parametrize("release, direct", [
    ("6.18.44-fc-v1300", True), ("6.6.0", True), ("6.10-rc2", True), ("7.0.1-arch1-1", True),
    ("6.5.13", False), ("6.1.0-28-amd64", False), ("5.15.0-91-generic", False), ("", False), ("unknown", False)])
def test_write_only_handles_go_direct_only_on_kernels_that_keep_readers_coherent(release, direct):
    """FOPEN_DIRECT_IO for write-only handles needs Linux 6.6's invalidation of other handles'
    cached pages before a direct write (docs/native.md); a release that cannot be read is old."""
    assert lowlevel.direct_writes_coherent(release) is direct


def test_without_the_extension_the_mount_does_not_import_and_says_what_to_install():
    """No fallback: the request loop is the only engine (setup.py fails a build without it)."""
    code = ("import sys; sys.modules['hamirror.fs._lowlevel'] = None\n"
            "try:\n    import hamirror.fs.mount\nexcept ImportError as exc:\n    print(exc)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == (
        "hamirror.fs._lowlevel, the mount's FUSE request loop, is not built (import of hamirror.fs._lowlevel "
        "halted; None in sys.modules): install libfuse3-dev and pkg-config, then reinstall hamirror "
        "(on a test machine: scripts/setup.sh)")


@contextlib.contextmanager
def in_process(mnt: str, make_ops, writeback: bool, idle_threads: int = 0):
    """A native mount of ``mnt`` served by this process: yields the lower directory's fd path."""
    os.mkdir(mnt)
    root_fd = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    ops = make_ops(root_fd)
    ready, failure = threading.Event(), []

    def run() -> None:
        try:
            lowlevel.serve_native(ops, root_fd, mnt, writeback=writeback, max_background=MAX_BACKGROUND,
                                  max_threads=MAX_THREADS, idle_threads=idle_threads, on_init=ready.set)
        except Exception as exc:   # reported below
            failure.append(exc)
            ready.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(20) and not failure, failure
    wait_for(lambda: is_fuse_mounted(mnt), 10, what="the mount")
    try:
        yield f"/proc/self/fd/{root_fd}"
    finally:
        subprocess.run(["fusermount3", "-u", mnt], capture_output=True)
        thread.join(20)
        os.close(root_fd)
    assert not thread.is_alive()


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """(mount point, lower directory's fd path) of an in-process native mount without a peer."""
    mnt = str(tmp_path_factory.mktemp("lowlevel") / "mnt")
    with in_process(mnt, lambda root_fd: Faulty(root_fd, Replicator(None, None), "barrier",
                                                context=lowlevel.context()),
                    writeback=True) as lower:
        yield mnt, lower


class GatedReplicator(Replicator):
    """Holds a write to a file named "held" between the engine's computing its path and its change
    block (where the ordering lock would keep a rename out) until ``go`` is set, and notes whether
    that path still names the file written (inode ``expect``): the peer applies (path, bytes), so
    a path that names another file by then would write the bytes there."""

    def __init__(self) -> None:
        super().__init__(None, None)
        self.entered, self.go, self.same_file = threading.Event(), threading.Event(), []
        self.expect: int | None = None

    def change(self, changes, key=None, new=(), moved=()):
        inner, gate = super().change(changes, key, new, moved), self

        class Gate:
            def __enter__(self):
                if (gate.expect is not None and changes and len(changes[0]) == 3      # a written range
                        and os.path.basename(changes[0][0]) == "held"):
                    gate.entered.set()
                    gate.go.wait(10)
                    try:
                        st = os.stat(changes[0][0], dir_fd=gate.root_fd, follow_symlinks=False)
                        gate.same_file.append(st.st_ino == gate.expect)
                    except FileNotFoundError:
                        gate.same_file.append(False)
                return inner.__enter__()

            def __exit__(self, *exc):
                return inner.__exit__(*exc)

        return Gate()


def test_a_rename_waits_for_the_changes_queued_under_the_old_path(tmp_path):
    """(Runs before the tests on `local`: one native loop per process, and `local` lives to the
    module's end.) A write computed its path "/d/held", then d was renamed and a new d/held made:
    without the namespace lock the write's message named the new file (the peer would write it
    there). The lock is held until the change is queued, then let go (Replicator.on_queued)."""
    mnt = str(tmp_path / "mnt")
    gate = GatedReplicator()

    def make(root_fd: int) -> Interception:
        gate.root_fd = root_fd
        return Interception(root_fd, gate, "sync", context=lowlevel.context())

    with in_process(mnt, make, writeback=False) as lower:
        os.mkdir(f"{mnt}/d")
        fd = os.open(f"{mnt}/d/held", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            gate.expect = os.stat(f"{lower}/d/held").st_ino
            writer = threading.Thread(target=os.pwrite, args=(fd, b"old file", 0))
            writer.start()
            assert gate.entered.wait(10)

            def rename_and_remake() -> None:
                os.rename(f"{mnt}/d", f"{mnt}/e")
                os.mkdir(f"{mnt}/d")
                os.close(os.open(f"{mnt}/d/held", os.O_RDWR | os.O_CREAT, 0o644))

            renamer = threading.Thread(target=rename_and_remake)
            renamer.start()
            renamer.join(0.5)
            renamed_early = not renamer.is_alive()
            gate.go.set()
            writer.join(10)
            renamer.join(10)
        finally:
            os.close(fd)
        assert gate.same_file == [True], "the write's path named another file before its message was queued"
        assert not renamed_early
        assert open(f"{mnt}/e/held", "rb").read() == b"old file" and os.path.getsize(f"{mnt}/d/held") == 0


class SlowMkdir(Interception):
    """mkdir takes a while (the GIL released), so concurrent ones keep several workers busy."""

    def mkdir(self, path: str, mode: int) -> int:
        time.sleep(0.3)
        return super().mkdir(path, mode)


IDLE_THREADS = 2


def _tasks() -> int:
    return len(os.listdir("/proc/self/task"))


def _thread_states() -> int:
    """Python thread states of this interpreter (a libfuse worker gets one on its first request)."""
    api = ctypes.pythonapi
    api.PyInterpreterState_Get.restype = ctypes.c_void_p
    api.PyInterpreterState_ThreadHead.argtypes = api.PyThreadState_Next.argtypes = [ctypes.c_void_p]
    api.PyInterpreterState_ThreadHead.restype = api.PyThreadState_Next.restype = ctypes.c_void_p
    count, state = 0, api.PyInterpreterState_ThreadHead(api.PyInterpreterState_Get())
    while state:
        count, state = count + 1, api.PyThreadState_Next(state)
    return count


def test_idle_workers_beyond_the_kept_ones_exit_with_their_thread_state(tmp_path):
    """With ``idle_threads``, the loop keeps that many idle workers after a burst, not
    MAX_THREADS: the others exit, freeing their 1 MiB receive buffer, and give back their Python
    thread state (none is left behind per thread ever started). The mount keeps MAX_THREADS
    (docs/performance.md, "Idle memory of the data path": fewer cost barrier mode CPU)."""
    mnt = str(tmp_path / "mnt")
    with in_process(mnt, lambda root_fd: SlowMkdir(root_fd, Replicator(None, None), "sync",
                                                   context=lowlevel.context()),
                    writeback=False, idle_threads=IDLE_THREADS) as lower:
        for i in range(8):   # one parent each: the kernel serializes creations in one directory
            os.mkdir(f"{lower}/p{i}")
        os.mkdir(f"{mnt}/warm")
        time.sleep(0.3)
        tasks, states = _tasks(), _thread_states()
        peak = [0]
        burst = [threading.Thread(target=os.mkdir, args=(f"{mnt}/p{i}/d",)) for i in range(8)]
        for t in burst:
            t.start()
        while any(t.is_alive() for t in burst):
            peak[0] = max(peak[0], _tasks() - len(burst))
            time.sleep(0.02)
        for t in burst:
            t.join()
        assert peak[0] >= tasks + 4, (tasks, peak)   # the burst did start more workers
        with contextlib.suppress(AssertionError):   # asserted below, with the figures
            wait_for(lambda: _tasks() <= tasks + IDLE_THREADS, 5, what="the extra workers to exit")
        time.sleep(0.2)
        assert _tasks() <= tasks + IDLE_THREADS < peak[0] and _thread_states() <= states + IDLE_THREADS, \
            (tasks, states, peak, _tasks(), _thread_states())
        assert all(os.listdir(f"{mnt}/p{i}") == ["d"] for i in range(8))


def nodes() -> int:
    return _lowlevel.nodes()


def test_every_name_of_a_file_is_one_inode(local):
    mnt, lower = local
    os.makedirs(f"{mnt}/one/sub")
    with open(f"{mnt}/one/a", "wb") as f:
        f.write(b"first")
    os.link(f"{mnt}/one/a", f"{mnt}/one/sub/b")
    a, b = os.stat(f"{mnt}/one/a"), os.stat(f"{mnt}/one/sub/b")
    assert a.st_ino == b.st_ino == os.stat(f"{lower}/one/a").st_ino
    assert a.st_nlink == b.st_nlink == 2
    held = os.open(f"{mnt}/one/sub/b", os.O_RDONLY)
    try:
        os.pread(held, 100, 0)   # the page cache of b is warm
        with open(f"{mnt}/one/a", "ab") as f:   # barrier mode: the writeback cache
            f.write(b" and more")
        assert os.pread(held, 100, 0) == b"first and more"
        assert open(f"{mnt}/one/sub/b", "rb").read() == b"first and more"
        assert os.stat(f"{mnt}/one/sub/b").st_size == 14
    finally:
        os.close(held)
    assert open(f"{lower}/one/sub/b", "rb").read() == b"first and more"


def test_lookup_counts_follow_the_kernel(local):
    mnt, lower = local
    os.mkdir(f"{lower}/many")   # made beneath the mount: the kernel has never seen them
    for i in range(1000):
        with open(f"{lower}/many/f{i}", "wb") as f:
            f.write(b"x")
    os.link(f"{lower}/many/f0", f"{lower}/many/again")
    before = nodes()
    find = ["find", f"{mnt}/many", "-type", "f", "-printf", "%i %s\n"]   # %s: a stat (a lookup) per name
    out = subprocess.run(find, capture_output=True, text=True, check=True)
    assert len(out.stdout.splitlines()) == 1001 and len(set(out.stdout.splitlines())) == 1000
    subprocess.run(find, capture_output=True, check=True)
    # One node per file (f0 and "again" are one), the directory, nothing per repeated lookup.
    assert before + 1000 <= nodes() <= before + 1001 + 5
    subprocess.run(["rm", "-rf", f"{mnt}/many"], check=True)
    # Every unlinked file is forgotten by the kernel, and forgotten by the table.
    wait_for(lambda: nodes() <= before, 10, what=f"the table to forget ({nodes()} nodes, {before} before)")
    assert not os.path.exists(f"{lower}/many")


def test_a_file_unlinked_while_open_keeps_serving_its_handle(local):
    mnt, lower = local
    fd = os.open(f"{mnt}/gone", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"before")
        os.unlink(f"{mnt}/gone")
        assert not os.path.exists(f"{lower}/gone")
        os.pwrite(fd, b" after", 6)
        os.fsync(fd)
        os.ftruncate(fd, 9)
        assert os.pread(fd, 100, 0) == b"before af"
    finally:
        os.close(fd)
    assert not os.path.exists(f"{mnt}/gone")


def test_the_conflict_folder_is_hidden(local):
    mnt, lower = local
    name = os.fsdecode(CONFLICT_DIR)
    os.makedirs(f"{lower}/{name}/kept", exist_ok=True)
    assert name not in os.listdir(mnt)
    for call in (lambda: os.stat(f"{mnt}/{name}"), lambda: os.mkdir(f"{mnt}/{name}"),
                 lambda: os.listdir(f"{mnt}/{name}/kept")):
        with pytest.raises(FileNotFoundError):
            call()
    os.mkdir(f"{mnt}/nested")
    os.mkdir(f"{mnt}/nested/{name}")   # reserved at the top only
    assert os.listdir(f"{mnt}/nested") == [name]


def test_a_bug_in_an_operation_is_eio_and_the_loop_goes_on(local, caplog):
    mnt, _ = local
    with caplog.at_level("ERROR", logger="hamirror.fs.lowlevel"):
        with pytest.raises(OSError) as raised:
            os.mkdir(f"{mnt}/boom")
    assert raised.value.errno == errno.EIO
    assert any("ZeroDivisionError" in r.getMessage() and "mkdir" in r.getMessage() for r in caplog.records)
    os.mkdir(f"{mnt}/fine")
    assert os.path.isdir(f"{mnt}/fine")


def test_paths_follow_renames_and_unlinks(local):
    mnt, lower = local
    os.makedirs(f"{mnt}/r/d")
    fd = os.open(f"{mnt}/r/d/f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"1")
        os.rename(f"{mnt}/r/d", f"{mnt}/r/e")
        os.rename(f"{mnt}/r/e/f", f"{mnt}/r/e/g")
        os.pwrite(fd, b"2", 1)
        os.fsync(fd)
        with open(f"{mnt}/r/other", "wb") as f:
            f.write(b"o")
        os.rename(f"{mnt}/r/other", f"{mnt}/r/e/g")   # replaces the open file's only name
        os.pwrite(fd, b"3", 2)
        os.fsync(fd)
        assert os.pread(fd, 10, 0) == b"123"
    finally:
        os.close(fd)
    assert open(f"{lower}/r/e/g", "rb").read() == b"o"
    assert sorted(os.listdir(f"{lower}/r")) == ["e"] and os.listdir(f"{lower}/r/e") == ["g"]



@pytest.fixture(scope="module")
def barrier_pair(tmp_path_factory):
    """A replicated barrier-mode mount, started with a leftover engine setting in its environment."""
    pair = MirrorPair(str(tmp_path_factory.mktemp("llbarrier")), mode="barrier", mount_env=LEFTOVER)
    try:
        yield pair.start()
    finally:
        pair.stop()


def settled_diff(pair: MirrorPair) -> list[str]:
    deadline = time.monotonic() + 10
    while True:
        problems = diff_snapshots(tree_snapshot(pair.primary), tree_snapshot(pair.secondary))
        if not problems or time.monotonic() > deadline:
            return problems
        time.sleep(0.1)


def test_barrier_mode_replicates_hard_links_and_renamed_open_files(barrier_pair):
    m, s = barrier_pair.primary, barrier_pair.secondary
    warned = [line for line in open(barrier_pair.log("mount")) if "HAMIRROR_FUSE_ENGINE" in line]
    assert len(warned) == 1 and warned[0].rstrip("\n").endswith(IGNORED), warned
    os.mkdir(f"{m}/d")
    with open(f"{m}/d/a", "wb") as f:
        f.write(b"one")
    os.link(f"{m}/d/a", f"{m}/b")
    with open(f"{m}/b", "ab") as f:   # through the other name
        f.write(b" two")
        os.fsync(f.fileno())
    assert open(f"{m}/d/a", "rb").read() == b"one two"
    assert os.stat(f"{s}/d/a").st_ino == os.stat(f"{s}/b").st_ino
    fd = os.open(f"{m}/d/a", os.O_WRONLY)
    try:
        os.rename(f"{m}/d", f"{m}/e")
        os.unlink(f"{m}/b")
        os.pwrite(fd, b"ONE", 0)   # through the fd opened by the old path
    finally:
        os.close(fd)   # close is barrier mode's barrier
    assert open(f"{s}/e/a", "rb").read() == b"ONE two"
    assert settled_diff(barrier_pair) == []


def test_the_loop_is_clean_under_address_sanitizer(tmp_path):
    """The extension built with -fsanitize=address, loaded into a Python process (libasan
    preloaded) that mounts it and sends every kind of request (tests/lowlevel_workload.py)."""
    fuse = subprocess.run(["pkg-config", "--cflags", "--libs", "fuse3"], capture_output=True, text=True,
                          check=True).stdout.split()
    (tmp_path / "mnt").mkdir()
    result = run_under_asan(tmp_path, "_lowlevel", ["native/hm_fuse.c", "native/hm_fuse_py.c", "native/hm_setattr.c",
                                                    "native/hm_inodes.c", "native/hm_loop.c", "native/hm_killpriv.c",
                                                    "native/hm_fuse_module.c"], fuse, "tests.lowlevel_workload",
                            str(tmp_path / "mnt"), 180)
    assert result.stdout.strip() == "ok", result.stderr[-4000:]
    assert os.listdir(tmp_path / "mnt") == []


def test_a_file_whose_known_names_are_gone_replicates_under_another(barrier_pair):
    """Its other name was never looked up through the mount: the loop finds it, so writes through
    a handle opened by the removed name still reach the peer (the first engine, on libfuse's
    high-level API, did not send them)."""
    from tests.test_mirror_hardlinks import lower_dir

    m, s = barrier_pair.primary, barrier_pair.secondary
    for side in (lower_dir(barrier_pair), s):   # the same two names on both sides, beneath the mount
        os.mkdir(f"{side}/kept")
        with open(f"{side}/kept/a", "wb") as f:
            f.write(b"0123456789")
        os.link(f"{side}/kept/a", f"{side}/b")
    os.utime(m, ns=(1, 2))   # the root's times, changed on each side alone, made equal
    fd = os.open(f"{m}/kept/a", os.O_RDWR)
    try:
        os.unlink(f"{m}/kept/a")
        os.pwrite(fd, b"AB", 2)
    finally:
        os.close(fd)   # barrier mode's barrier
    with open(f"{s}/b", "rb") as f:
        assert f.read() == b"01AB456789"
    assert settled_diff(barrier_pair) == []



@pytest.mark.parametrize("mode", ["sync", "barrier"])
def test_barrier_mode_keeps_file_times_to_10_ms_on_both_copies(mirror_factory, mode):
    """Barrier mode asks the kernel for 10 ms times (``time_gran``, hamirror/fs/mount.py
    BARRIER_TIME_GRANULARITY_NS): the kernel then sends a file's times at most 100 times a second,
    not at nearly every commit. Times set explicitly are kept to 10 ms as well, and the kernel's
    own (a write's mtime, sent at the fsync) are multiples of it; both copies have the same.
    Sync mode keeps the nanoseconds."""
    from tests.test_mirror_tools import assert_same
    pair = mirror_factory(mode=mode).start()
    path = os.path.join(pair.primary, "f")
    with open(path, "wb") as f:
        f.write(b"x")
    set_ns = 1_700_000_000_123_456_789
    os.utime(path, ns=(set_ns, set_ns))
    kept = set_ns - set_ns % 10_000_000 if mode == "barrier" else set_ns
    assert (os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns) == (kept, kept)
    with open(path, "r+b") as f:
        f.write(b"y")
        os.fsync(f.fileno())
    written = os.stat(path).st_mtime_ns
    assert written > kept
    if mode == "barrier":
        assert written % 10_000_000 == 0
    assert os.stat(os.path.join(pair.secondary, "f")).st_mtime_ns == written
    assert_same(pair)
