"""CPU time of each process of a column over one timed run, for the mirror benchmark's CPU per operation.

Why: on two cores the data path is CPU-bound, so the rate alone hides where the time goes; the
CPU each process spends per file, transaction or MiB (the application, the mount daemon, the
receiver, GlusterFS's client and bricks) is what a native core has to shrink. A ``Probe`` reads
user+sys from ``/proc/PID/stat`` just before and just after the timed part of a workload (the
workloads call ``begin`` and ``end``), so set-up and clean-up are left out.

A root counts with its live descendants and the children it has waited for (``cutime``/``cstime``):
a PostgreSQL backend that exits during the run is still counted in its postmaster. A root is
never counted inside another root's tree. The application is this process (``getrusage``, self
and waited-for children: the Python workloads, or the pgbench client run as a child).
"""

from __future__ import annotations

import os
import resource
from typing import Callable, NamedTuple

TICK = os.sysconf("SC_CLK_TCK")
APPLICATION = "application"


class Proc(NamedTuple):
    ppid: int
    comm: str
    own: float          # user+sys of the process (all its threads), seconds
    waited: float       # user+sys of the children it has waited for, seconds


def read_stat(pid: int) -> Proc | None:
    """One process's ``/proc/PID/stat``, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            data = f.read()
    except OSError:
        return None
    end = data.rindex(")")                 # comm may hold spaces and parentheses
    fields = data[end + 2:].split()        # fields[0] is the state (field 3 of proc(5))
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return Proc(int(fields[1]), data[data.index("(") + 1:end], (utime + stime) / TICK, (cutime + cstime) / TICK)


def snapshot() -> dict[int, Proc]:
    procs = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            proc = read_stat(int(name))
            if proc is not None:
                procs[int(name)] = proc
    return procs


def children_of(procs: dict[int, Proc]) -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for pid, proc in procs.items():
        children.setdefault(proc.ppid, []).append(pid)
    return children


def tree_seconds(procs: dict[int, Proc], children: dict[int, list[int]], root: int, roots: set[int]) -> float | None:
    """CPU of ``root``, its live descendants and their waited-for children; None if root is gone."""
    if root not in procs:
        return None
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += procs[pid].own + procs[pid].waited
        todo.extend(c for c in children.get(pid, ()) if c not in roots)
    return total


def application_seconds() -> float:
    """This process (every thread) and the children it has waited for: user+sys, seconds."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class Probe:
    """CPU seconds per process over one timed run; ``processes`` names the column's (label, pid)."""

    def __init__(self, processes: Callable[[], list[tuple[str, int]]]) -> None:
        self.processes = processes
        self.seconds: dict[str, float] = {}
        self._roots: list[tuple[str, int]] = []
        self._start: dict[str, float] = {}
        self._app = 0.0

    def _sample(self) -> dict[str, float]:
        procs, pids = snapshot(), {pid for _, pid in self._roots}
        children = children_of(procs)
        found = {label: tree_seconds(procs, children, pid, pids) for label, pid in self._roots}
        return {label: s for label, s in found.items() if s is not None}

    def begin(self, extra: dict[str, int] | None = None) -> None:
        """Just before the timed part; ``extra`` adds processes of this run only (a database server)."""
        self._roots = self.processes() + list((extra or {}).items())
        self._start = self._sample()
        self._app = application_seconds()          # last: the probe's own reading is left out

    def end(self, wait: Callable[[], None] | None = None) -> dict[str, float]:
        """Just after the timed part; ``wait`` (after the application is read) lets others settle."""
        app = application_seconds() - self._app
        if wait is not None:
            wait()
        after = self._sample()
        self.seconds = {APPLICATION: app}
        self.seconds.update({label: max(0.0, s - self._start.get(label, 0.0)) for label, s in after.items()})
        return self.seconds


class NoProbe:
    """What the workloads use when nobody measures CPU (binding.py, micro.py)."""

    def begin(self, extra: dict[str, int] | None = None) -> None:
        pass

    def end(self, wait: Callable[[], None] | None = None) -> dict[str, float]:
        return {}
