"""The columns of the mirror benchmark: what each one is, whether it can run here, and its lifetime.

Why a module of its own: mirror.py interleaves workloads over columns and must not care whether a
column is a plain directory, a hamirror mount with its receiver, libfuse's C passthrough example or a
GlusterFS volume in two namespaces; each column starts, says whether it is still alive, and stops (always, by PID).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import cpassthrough
import gluster
import workloads
from hamirror.link import session
from tests.mirror_fixtures import MirrorPair

# key: (name, what it is); the keys are the column letters of the tables in docs/performance.md.
CONFIGS = {"a": "plain", "b": "intercept", "f": "passthru", "w": "passthr-wb", "c": "sync", "d": "async",
           "e": "barrier", "g": "glusterfs"}
MODE_OF = {"c": "sync", "d": "async", "e": "barrier"}
# libfuse's C passthrough (cpassthrough.py), writeback cache off (f) or on (w): the ceiling of b,
# run only when --configs names them (each column adds its time to every workload).
PASSTHROUGH = {"f": False, "w": True}
DEFAULT = "".join(k for k in CONFIGS if k not in PASSTHROUGH)


def link_engine(chosen: str | None = None) -> str:
    """The link engine of the replicated columns: ``chosen``, else ``$HAMIRROR_LINK_ENGINE``, else
    ``stream``, what a new cluster runs (hamirror's own default is ``curve``, for a previous
    release's peer). ValueError for an unknown one. The caller puts it in the environment that the
    mounts and receivers inherit."""
    return session.engine(chosen or os.environ.get(session.ENGINE_ENV, session.STREAM))


def hamirror_modes() -> tuple[str, ...]:
    """The replication modes this hamirror's ``mirror mount --mode`` accepts (barrier is newer)."""
    out = subprocess.run([sys.executable, "-m", "hamirror", "mirror", "mount", "--help"],
                         capture_output=True, text=True, timeout=60).stdout
    found = re.search(r"--mode\s*\{([^}]*)\}", out)
    return tuple(found.group(1).split(",")) if found else ("sync", "async")


def unavailable(key: str, modes: tuple[str, ...]) -> str | None:
    """Why column ``key`` cannot run on this machine, or None."""
    if key == "g":
        return gluster.available()
    if key in PASSTHROUGH:
        return cpassthrough.available()
    if key in MODE_OF and MODE_OF[key] not in modes:
        return f"this hamirror has no --mode {MODE_OF[key]} (modes: {', '.join(modes)})"
    return None


class Column:
    """One configuration under test, in its own fresh directory ``ROOT/KEY-NAME``. ``spread``: the
    directories the runs make their own in (and a receiver's copy) get ext4's +T (workloads.spread)."""

    def __init__(self, root: str, key: str, spread: bool = False) -> None:
        self.key, self.name, self.spread = key, CONFIGS[key], spread
        self.base = os.path.join(root, f"{key}-{self.name}")
        os.makedirs(self.base)
        self.pair: MirrorPair | None = None
        self.volume: gluster.GlusterVolume | None = None
        self.passthrough: cpassthrough.Passthrough | None = None
        self.directory = ""

    def start(self) -> None:
        if self.key == "a":
            self.directory = os.path.join(self.base, "primary")
            os.mkdir(self.directory)
            self._spread(self.directory)
        elif self.key == "g":
            self.volume = gluster.GlusterVolume(self.base)
            self.volume.start()
            self.directory = self.volume.mountpoint
        elif self.key in PASSTHROUGH:
            self.passthrough = cpassthrough.Passthrough(self.base, writeback=PASSTHROUGH[self.key])
            os.mkdir(self.passthrough.source)
            self._spread(self.passthrough.source)
            self.passthrough.start()
            self.directory = self.passthrough.directory
        else:
            self.pair = MirrorPair(self.base, mode=MODE_OF.get(self.key, "sync"), replicate=self.key != "b",
                                   timeout=30)
            self._spread(self.pair.primary, self.pair.secondary)
            self.pair.start()
            self.directory = self.pair.primary

    def _spread(self, *directories: str) -> None:
        """The FUSE columns' mounts pass mkdir through to these directories, which carry the flag."""
        if self.spread and not all([workloads.spread(d) for d in directories]):
            raise RuntimeError(f"cannot set ext4's +T on {', '.join(directories)} (--spread)")

    def pids(self) -> list[int]:
        if self.volume is not None:
            return self.volume.pids()
        if self.passthrough is not None and self.passthrough.proc is not None:
            return [self.passthrough.proc.pid]
        if self.pair is not None:
            return [p.pid for p in (self.pair.mounter, self.pair.receiver) if p is not None]
        return []

    def processes(self) -> list[tuple[str, int]]:
        """The column's own processes, named, whose CPU the benchmark reads (none for the plain directory)."""
        if self.volume is not None:
            return self.volume.processes()
        if self.passthrough is not None and self.passthrough.proc is not None:
            return [("passthrough_ll", self.passthrough.proc.pid)]
        if self.pair is not None:
            return [(name, p.pid) for name, p in (("mount", self.pair.mounter), ("receiver", self.pair.receiver))
                    if p is not None]
        return []

    def dead(self) -> str | None:
        """Why this column can no longer be measured (a process exited, the mount is gone), or None."""
        if self.volume is not None and not self.volume.alive():
            return f"the GlusterFS client or mount is gone; see {self.base}/client.log"
        if self.passthrough is not None and not self.passthrough.alive():
            return f"passthrough_ll or its mount is gone; see {self.passthrough.log}"
        if self.pair is not None:
            for proc in (self.pair.mounter, self.pair.receiver):
                if proc is not None and proc.poll() is not None:
                    return f"a process of {self.base} exited ({proc.returncode}); see its logs"
        return None

    def stop(self) -> None:
        if self.volume is not None:
            self.volume.stop()
        if self.passthrough is not None:
            self.passthrough.stop()
        if self.pair is not None:
            self.pair.stop()
