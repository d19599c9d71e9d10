"""The receiver's native apply core (native/, docs/native.md) against the Python applier.

- the same message stream leaves the same bytes, modes, owners, times, xattrs and links, and the
  same refusals (a symlink crossed, a FIFO opened, a missing parent), on both paths;
- the native path keeps its descriptors: a small file (CREATE, WRITE with times) opens nothing
  through /proc and resolves no directory twice; a large write starts its writeback; a commit
  message syncs after its times;
- built with AddressSanitizer, the core applies the stream in a real Python process cleanly;
- a short libFuzzer run (4 s; the long one is ``scripts/fuzz-native.sh 600``) (when clang is installed) finds no crash and no write outside.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

from hamirror.link import native
from hamirror.link.apply import EARLY_WRITEBACK_MIN, Applier
from tests import native_stream
from tests.mirror_fixtures import diff_snapshots, tree_snapshot

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_native_and_python_paths_leave_the_same_tree(tmp_path):
    (tmp_path / "py").mkdir()
    (tmp_path / "c").mkdir()
    py = native_stream.run(str(tmp_path / "py"), use_native=False)
    c = native_stream.run(str(tmp_path / "c"), use_native=True)
    expected = [native_stream.EXPECTED_ERRORS.get(i, 0) for i in range(len(py))]
    assert py == expected
    assert c == expected
    a, b = tree_snapshot(str(tmp_path / "py")), tree_snapshot(str(tmp_path / "c"))
    assert not diff_snapshots(a, b), diff_snapshots(a, b)
    assert a["entries"]["d/e/f"][5] == b"last"
    assert a["links"] == [("d/e/f", "d/hard")]


def test_the_hamirror_native_switch_selects_python(tmp_path, monkeypatch):
    monkeypatch.setenv("HAMIRROR_NATIVE", "0")
    applier = Applier(str(tmp_path))
    try:
        assert applier.native is None
    finally:
        applier.close()


_PRELUDE = """
import contextlib, os, stat, sys
sys.path.insert(0, {repo!r})
from tests.native_stream import _msg, _t
from hamirror.link.apply import Applier
from hamirror.link.protocol import Op
a = Applier({directory!r})
assert a.native is not None
def mark(name):
    with contextlib.suppress(OSError):
        open("/MARK-" + name)
"""


def test_a_closed_core_refuses_instead_of_touching_freed_memory(tmp_path):
    applier = Applier(str(tmp_path))
    core = applier.native
    applier.close()
    with pytest.raises(ValueError, match="closed"):
        core.apply(*_fields(native_stream.stream()[0]))
    with pytest.raises(ValueError, match="closed"):
        core.forget()
    core.close()   # twice is harmless


def _fields(msg) -> tuple:
    return msg.op, msg.ints, msg.strs[0], msg.times, msg.data


def test_without_the_core_the_receiver_applies_in_python_and_says_so(tmp_path, monkeypatch, caplog):
    """A package installed where the core could not be built still works, and one line says why."""
    monkeypatch.setitem(sys.modules, "hamirror.link._native", None)   # import raises ImportError
    native._module.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="hamirror.link.native"):
            applier = Applier(str(tmp_path))
        try:
            assert applier.native is None
            applier.apply(native_stream.stream()[0])
        finally:
            applier.close()
    finally:
        native._module.cache_clear()
    assert (tmp_path / "d").is_dir()
    assert [r.getMessage() for r in caplog.records] == [
        "native apply core not available (import of hamirror.link._native halted; None in sys.modules): "
        "the receiver applies in Python"]


def _strace(tmp_path, code: str) -> list[str]:
    """The file syscalls a snippet makes between mark("START") and mark("END"), the native core on."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    (tmp_path / "dir").mkdir()
    out = tmp_path / "trace"
    script = _PRELUDE.format(repo=REPO, directory=str(tmp_path / "dir")) + code + "\na.close()\n"
    subprocess.run(["strace", "-f", "-qq", "-o", str(out), "-e",
                    "trace=openat,openat2,open,close,sync_file_range,fdatasync,fsync,utimensat,pwrite64",
                    sys.executable, "-c", script], check=True, timeout=60, cwd=REPO)
    lines = out.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if "/MARK-START" in line)
    end = next(i for i, line in enumerate(lines) if "/MARK-END" in line)
    return lines[start + 1:end]


def test_small_files_open_nothing_through_proc(tmp_path):
    """The profile's ~21 syscalls: a CREATE keeps its descriptor for the WRITE, and the parent
    is resolved once for many files (the Python applier does both again for every message)."""
    calls = _strace(tmp_path, """
a.apply(_msg(Op.MKDIR, (0o40755, os.getuid(), os.getgid()), (b"d",)))
a.forget_descriptors()   # the parent directory is resolved again, once
mark("START")
for i in range(20):
    p = b"d/f%d" % i
    a.apply(_msg(Op.CREATE, (stat.S_IFREG | 0o644, os.getuid(), os.getgid(), 0), (p,), _t(1, p, b"d")))
    a.apply(_msg(Op.WRITE, (0,), (p,), _t(2, p), b"x" * 4096))
mark("END")
""")
    assert not [c for c in calls if "/proc/self/fd" in c], calls
    assert len([c for c in calls if "openat2(" in c]) == 1, calls   # "d", once
    assert len([c for c in calls if "O_CREAT" in c]) == 20
    assert len([c for c in calls if "pwrite64(" in c]) == 20
    assert not [c for c in calls if c.split("(")[0].endswith("close")], calls   # descriptors kept
    assert (tmp_path / "dir" / "d" / "f7").read_bytes() == b"x" * 4096


@pytest.mark.parametrize("use_native", [True, False])
def test_large_writes_start_writeback_after_the_reply_and_a_commit_syncs_after_its_times(tmp_path, use_native):
    """A large write's writeback starts once its reply is sent (``start_writeback``, or the next
    apply), not before: the primary waits for that reply in sync mode. A commit message starts
    none: it syncs."""
    calls = _strace(tmp_path, f"""
if not {use_native}:
    a.close()
    a = Applier(a.directory, use_native=False)
a.apply(_msg(Op.CREATE, (stat.S_IFREG | 0o644, os.getuid(), os.getgid(), 0), (b"f",)))
mark("START")
a.apply(_msg(Op.WRITE, (0,), (b"f",), (), b"small"))
a.apply(_msg(Op.WRITE, (4096,), (b"f",), (), b"b" * {EARLY_WRITEBACK_MIN}))
mark("REPLY")
a.start_writeback()
a.apply(_msg(Op.WRITE, (8192 + {EARLY_WRITEBACK_MIN},), (b"f",), (), b"c" * {EARLY_WRITEBACK_MIN}))
a.apply(_msg(Op.WRITE_FSYNC, (0, 1), (b"f",), _t(1, b"f"), b"commit" * {EARLY_WRITEBACK_MIN}))
a.start_writeback()
mark("END")
""")
    reply = next(i for i, line in enumerate(calls) if "/MARK-REPLY" in line)

    def names(lines: list[str]) -> list[str]:
        found = [c.split("(")[0].split()[-1] for c in lines]
        return [n for n in found if n in ("pwrite64", "sync_file_range", "utimensat", "fdatasync")]

    assert names(calls[:reply]) == ["pwrite64", "pwrite64"], calls
    assert names(calls[reply:]) == ["sync_file_range", "pwrite64", "sync_file_range", "pwrite64",
                                    "utimensat", "fdatasync"], calls
    assert f"4096, {EARLY_WRITEBACK_MIN}, SYNC_FILE_RANGE_WRITE" in "".join(calls)
    assert f"{8192 + EARLY_WRITEBACK_MIN}, {EARLY_WRITEBACK_MIN}, SYNC_FILE_RANGE_WRITE" in "".join(calls)


@pytest.mark.parametrize("use_native", [True, False])
def test_writes_to_a_synced_file_start_their_writeback_after_the_reply(tmp_path, use_native):
    """A file the receiver synced (a database's log) has its next small write's writeback started
    once the receiver sent that write's reply (``start_writeback``, or the next apply), so the
    commit's fsync that follows waits for less and the write's own round trip not longer; a file
    never synced is left to the kernel's writeback (small files are not pushed out one by one)."""
    calls = _strace(tmp_path, f"""
if not {use_native}:
    a.close()
    a = Applier(a.directory, use_native=False)
for p in (b"log", b"other"):
    a.apply(_msg(Op.CREATE, (stat.S_IFREG | 0o644, os.getuid(), os.getgid(), 0), (p,)))
a.apply(_msg(Op.WRITE, (0,), (b"log",), (), b"a" * 8192))
a.apply(_msg(Op.FSYNC, (1,), (b"log",)))
mark("START")
a.apply(_msg(Op.WRITE, (8192,), (b"log",), (), b"b" * 8192))
mark("REPLY")
a.start_writeback()
a.start_writeback()
a.apply(_msg(Op.WRITE, (0,), (b"other",), (), b"c" * 8192))
a.start_writeback()
a.apply(_msg(Op.FSYNC, (1,), (b"log",)))
mark("END")
""")
    reply = next(i for i, line in enumerate(calls) if "/MARK-REPLY" in line)

    def names(lines: list[str]) -> list[str]:
        found = [c.split("(")[0].split()[-1] for c in lines]
        return [n for n in found if n in ("pwrite64", "sync_file_range", "fdatasync")]

    assert names(calls[:reply]) == ["pwrite64"], calls
    assert names(calls[reply:]) == ["sync_file_range", "pwrite64", "fdatasync"], calls
    assert "8192, 8192, SYNC_FILE_RANGE_WRITE" in "".join(calls)
    assert (tmp_path / "dir" / "log").read_bytes() == b"a" * 8192 + b"b" * 8192


@pytest.mark.parametrize("use_native", [True, False])
def test_a_file_whose_commits_arrive_whole_starts_no_writeback_for_its_small_writes(tmp_path, use_native):
    """A file last synced by a commit message (WRITE_FSYNC: SQLite's WAL once its commits are
    predicted, a frame's header then its page) starts no writeback for a small write: the next
    commit message would write that page again, after waiting for the first I/O. An FSYNC of its
    own makes its small writes start theirs again (a commit that came as WRITE, then FSYNC)."""
    calls = _strace(tmp_path, f"""
if not {use_native}:
    a.close()
    a = Applier(a.directory, use_native=False)
a.apply(_msg(Op.CREATE, (stat.S_IFREG | 0o644, os.getuid(), os.getgid(), 0), (b"wal",)))
a.apply(_msg(Op.WRITE, (0,), (b"wal",), (), b"h" * 24))
a.apply(_msg(Op.FSYNC, (1,), (b"wal",)))
a.apply(_msg(Op.WRITE_FSYNC, (24, 1), (b"wal",), _t(1, b"wal"), b"p" * 4096))
mark("START")
a.apply(_msg(Op.WRITE, (4120,), (b"wal",), (), b"H" * 24))
a.start_writeback()
a.apply(_msg(Op.WRITE_FSYNC, (4144, 1), (b"wal",), _t(2, b"wal"), b"P" * 4096))
a.start_writeback()
mark("FSYNC")
a.apply(_msg(Op.FSYNC, (1,), (b"wal",)))
a.apply(_msg(Op.WRITE, (8240,), (b"wal",), (), b"x" * 24))
a.start_writeback()
mark("END")
""")
    fsync = next(i for i, line in enumerate(calls) if "/MARK-FSYNC" in line)

    def names(lines: list[str]) -> list[str]:
        found = [c.split("(")[0].split()[-1] for c in lines]
        return [n for n in found if n in ("pwrite64", "sync_file_range", "fdatasync")]

    assert names(calls[:fsync]) == ["pwrite64", "pwrite64", "fdatasync"], calls
    assert names(calls[fsync:]) == ["fdatasync", "pwrite64", "sync_file_range"], calls
    assert (tmp_path / "dir" / "wal").read_bytes() == b"h" * 24 + b"p" * 4096 + b"H" * 24 + b"P" * 4096 + b"x" * 24


def test_the_core_says_when_it_left_a_writeback_so_the_receiver_calls_it_only_then(tmp_path):
    """``apply`` is True only when a small write to a synced file left its writeback for after the
    reply: the receiver's ``start_writeback`` (a call that releases the GIL) is skipped otherwise."""
    from tests.native_stream import _msg
    from hamirror.link.protocol import Op
    applier = Applier(str(tmp_path))
    core = applier.native
    assert core is not None
    try:
        create = (0o100644, os.getuid(), os.getgid(), 0)
        assert core.apply(*_fields(_msg(Op.CREATE, create, (b"log",)))) is False
        assert core.apply(*_fields(_msg(Op.CREATE, create, (b"other",)))) is False
        assert core.apply(*_fields(_msg(Op.WRITE, (0,), (b"log",), (), b"a" * 8192))) is False   # not synced yet
        assert core.apply(*_fields(_msg(Op.FSYNC, (1,), (b"log",)))) is False
        assert core.apply(*_fields(_msg(Op.WRITE, (8192,), (b"log",), (), b"b" * 8192))) is True
        assert core.apply(*_fields(_msg(Op.WRITE, (0,), (b"other",), (), b"c"))) is False   # started the log's first
        applier.apply(_msg(Op.WRITE, (16384,), (b"log",), (), b"d"))
        assert applier._native_writeback is True
        applier.start_writeback()
        assert applier._native_writeback is False
    finally:
        applier.close()
    assert (tmp_path / "log").read_bytes() == b"a" * 8192 + b"b" * 8192 + b"d"


def _asan_runtime() -> str | None:
    if shutil.which("gcc") is None:
        return None
    path = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    return path if os.path.isabs(path) and os.path.exists(path) else None


def run_under_asan(tmp_path, name: str, sources: list[str], flags: list[str], workload: str,
                   target: str, timeout: float) -> subprocess.CompletedProcess:
    """Build the extension ``name`` from ``sources`` with AddressSanitizer, run ``python -m
    workload target extension`` with libasan preloaded, and fail on any report (skip without gcc)."""
    runtime = _asan_runtime()
    if runtime is None:
        pytest.skip("gcc with libasan is not installed")
    extension = str(tmp_path / (name + sysconfig.get_config_var("EXT_SUFFIX")))
    subprocess.run(["gcc", "-shared", "-fPIC", "-g", "-O1", "-std=gnu11", "-Wall", "-Wextra", "-Werror",
                    "-fsanitize=address", "-fno-omit-frame-pointer", "-I" + sysconfig.get_paths()["include"],
                    *sources, *flags, "-o", extension], check=True, cwd=REPO, timeout=120)
    env = dict(os.environ, LD_PRELOAD=runtime, ASAN_OPTIONS="detect_leaks=0:abort_on_error=1",
               PYTHONMALLOC="malloc")
    result = subprocess.run([sys.executable, "-m", workload, target, extension],
                            capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)
    assert "AddressSanitizer" not in result.stderr, result.stderr[-4000:]
    assert result.returncode == 0, result.stderr[-4000:]
    return result


@pytest.mark.parametrize("openat2", [1, 0])
def test_the_core_is_clean_under_address_sanitizer(tmp_path, openat2):
    """The extension built with -fsanitize=address, loaded into a real Python process (libasan
    preloaded), applies the whole stream to real files with the results of the Python path; also
    built to reach directories one component at a time, as it does on kernels without openat2."""
    (tmp_path / "dir").mkdir()
    result = run_under_asan(tmp_path, "_native", ["native/hm_apply.c", "native/hm_resolve.c", "native/module.c"],
                            [f"-DHM_USE_OPENAT2={openat2}"], "tests.native_stream", str(tmp_path / "dir"), 120)
    outcomes = json.loads(result.stdout)
    assert len(outcomes) == len(native_stream.stream())
    assert outcomes == [native_stream.EXPECTED_ERRORS.get(i, 0) for i in range(len(outcomes))]


@pytest.mark.skipif(shutil.which("clang") is None, reason="clang (libFuzzer) is not installed")
def test_a_short_libfuzzer_run_finds_nothing():
    """scripts/fuzz-native.sh for 4 s (some 50,000 inputs): no crash, no sanitizer report, nothing changed outside."""
    result = subprocess.run([os.path.join(REPO, "scripts", "fuzz-native.sh"), "4"], capture_output=True,
                            text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Done " in result.stderr and "outside the directory" not in result.stderr
