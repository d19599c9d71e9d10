"""libfuse's own low-level example, passthrough_ll.c, mounted as a benchmark column: what a FUSE file
system written entirely in C reaches on this machine.

Why: column b (hamirror's interception, no replication) is put against the plain directory; this
column, measured in the same run, is the ceiling of that ratio, what FUSE itself costs with no
Python anywhere. The source is libfuse 3.14.0's example, kept next to this file unchanged (see its
header), compiled here at every run with warnings as errors against the installed libfuse3, and
mounted with options equivalent to hamirror's mount: multithreaded (libfuse's loop), entry and
attribute timeouts 1 s, ``allow_other,default_permissions``, the kernel's writeback cache off
(column f, as hamirror's sync mode and interception) or on (column w, as barrier mode).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

from tests.mirror_fixtures import is_fuse_mounted as mounted

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "passthrough_ll.c")


def available() -> str | None:
    """Why the C passthrough cannot be built here, or None."""
    if shutil.which("cc") is None:
        return "no C compiler (cc)"
    if subprocess.run(["pkg-config", "--exists", "fuse3"], capture_output=True).returncode != 0:
        return "no libfuse3 development files (pkg-config fuse3; Debian: libfuse3-dev)"
    return None


def build(directory: str) -> str:
    """Compile passthrough_ll.c into ``directory``; its path. Warnings are errors, as for native/."""
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "fuse3"], capture_output=True, text=True,
                           check=True).stdout.split()
    binary = os.path.join(directory, "passthrough_ll")
    # -O2: what libfuse's own build (meson, buildtype debugoptimized) compiles its examples with.
    done = subprocess.run(["cc", "-Wall", "-Werror", "-O2", "-o", binary, SOURCE, *flags],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"cc failed: {done.stderr.strip()[-1000:]}")
    return binary


class Passthrough:
    """passthrough_ll serving ``BASE/source`` at ``BASE/primary``, in the foreground, until stop()."""

    def __init__(self, base: str, writeback: bool, binary: str | None = None, extra: str = "") -> None:
        """``binary``: another build of the example (default: this file's, compiled at start);
        ``extra``: more -o options (``,io_uring`` for libfuse >= 3.18)."""
        self.base, self.writeback, self.binary, self.extra = base, writeback, binary, extra
        self.source = os.path.join(base, "source")
        self.directory = os.path.join(base, "primary")
        self.log = os.path.join(base, "passthrough.log")
        self.proc: subprocess.Popen | None = None

    def options(self) -> str:
        """The -o list: hamirror's mount options (lowlevel.serve_native) and its 1 s timeouts."""
        cache = "writeback" if self.writeback else "no_writeback"
        return (f"source={self.source},timeout=1,{cache},allow_other,default_permissions,fsname=passthrough_ll"
                + self.extra)

    def start(self, timeout: float = 20) -> None:
        os.makedirs(self.source, exist_ok=True)
        os.makedirs(self.directory, exist_ok=True)
        binary = self.binary or build(self.base)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([binary, "-f", "-o", self.options(), self.directory],
                                         stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not mounted(self.directory):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                with open(self.log, errors="replace") as f:
                    raise RuntimeError(f"passthrough_ll did not mount: {f.read()[-1000:]}")
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and mounted(self.directory)

    def stop(self) -> None:
        """Unmount (lazily if busy) and end the process, by its PID if it does not exit."""
        if mounted(self.directory):
            subprocess.run(["fusermount3", "-u", self.directory], capture_output=True)
            if mounted(self.directory):
                subprocess.run(["fusermount3", "-u", "-z", self.directory], capture_output=True)
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
