"""Where the CPU goes during a phase of a benchmark: every process on the machine sampled from /proc.

A thread reads ``/proc/*/stat`` every ``interval`` seconds and keeps each process's last CPU time
(user + system), its kind (from its command line, read once: ``agent``, ``mount``, ``receiver``,
``kvserver``, ``bash``, ``status``...) and the machine's busy time from ``/proc/stat``. A phase's
figures are the differences between two marks. A process that lives less than one interval is
missed (its CPU shows in ``unaccounted``, the machine's busy time minus every kind's sum), as is
the last interval of one that exits.
"""

from __future__ import annotations

import os
import threading
import time

TICK = os.sysconf("SC_CLK_TCK")

KINDS = (("mirror mount", "mount"), ("mirror receive", "receiver"), ("hamirror agent", "agent"),
         ("kvserver.py", "kvserver"), ("hamirror status", "status"), ("nsenter", "nsenter"),
         ("etcd", "etcd"), ("start_prim", "script"), ("stop_prim", "script"), ("start_second", "script"),
         ("stop_second", "script"), ("bash", "bash"), ("py-spy", "py-spy"), ("many_modules.py", "bench"), ("pytest", "other-tests"))


def kind_of(cmdline: str) -> str:
    for needle, kind in KINDS:
        if needle in cmdline:
            return kind
    return "other"


def _busy() -> float:
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / TICK


class CpuWatch:
    """Samples every process until :meth:`stop`; :meth:`mark` names a point, :meth:`between` reports."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.kinds: dict[tuple[int, int], str] = {}       # (pid, start time) -> kind
        self.cpu: dict[tuple[int, int], float] = {}       # (pid, start time) -> last CPU seconds seen
        self.marks: dict[str, tuple[float, float, dict[str, float]]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpuwatch", daemon=True)

    def start(self) -> "CpuWatch":
        self._sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            fields = stat[stat.rfind(b")") + 2:].split()
            key = (int(entry.name), int(fields[19]))
            seconds = (int(fields[11]) + int(fields[12])) / TICK
            with self._lock:
                if key not in self.kinds:
                    try:
                        with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                            cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
                    except OSError:
                        continue
                    self.kinds[key] = kind_of(cmdline)
                    # CPU used before the first sight counts for the phase it is first seen in.
                self.cpu[key] = seconds

    def _totals(self) -> dict[str, float]:
        with self._lock:
            totals: dict[str, float] = {}
            for key, seconds in self.cpu.items():
                kind = self.kinds.get(key, "other")
                totals[kind] = totals.get(kind, 0.0) + seconds
            return totals

    def mark(self, name: str) -> None:
        self._sample()
        self.marks[name] = (time.monotonic(), _busy(), self._totals())

    def between(self, first: str, second: str) -> dict:
        """CPU seconds per kind between two marks, the machine's busy seconds and the wall time."""
        (t0, busy0, kinds0), (t1, busy1, kinds1) = self.marks[first], self.marks[second]
        per_kind = {k: round(kinds1.get(k, 0.0) - kinds0.get(k, 0.0), 2) for k in kinds1}
        per_kind = {k: v for k, v in sorted(per_kind.items(), key=lambda kv: -kv[1]) if v >= 0.01}
        busy = busy1 - busy0
        return {"wall_s": round(t1 - t0, 2), "machine_busy_cpu_s": round(busy, 2),
                "machine_busy_percent": round(100 * busy / max(t1 - t0, 1e-6) / os.cpu_count(), 1),
                "per_kind_cpu_s": per_kind, "unaccounted_cpu_s": round(busy - sum(per_kind.values()), 2)}
