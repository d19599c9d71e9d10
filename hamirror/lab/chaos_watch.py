"""What the fault campaign (``scripts/chaos.py``) watches: who serves, convergence, the two copies.

- :class:`Sampler` looks every 0.1 s at which node runs the application's server *and* holds the
  VIP. It reads ``/proc`` only: the server is a live process the application names (``kvserver.py``,
  the postmaster, ``mariadbd``) whose network namespace is a node's, and the VIP is looked up in
  that process's own view of its namespace's local addresses (``/proc/PID/net/fib_trie``, the kernel table ``ip -o addr`` prints). Entering the node
  (``ip -n``) ten times a second would put processes in it that ``lab kill``/``lab boot`` count as
  the node's own, and cost two processes per sample on a loaded machine.
- :func:`wait_converged`: PRIM (mounted) plus an up-to-date SECOND (receiving), either way round.
- :func:`snapshot`: the rows and ``PRAGMA integrity_check`` of a node's SQLite file, read inside the
  node's mount namespace from a copy (the database and its WAL), so the replicated directory is
  never written by the check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from hamirror.lab import measure, process
from hamirror.lab.naming import NODES, VIP, LabPaths

DB = "/srv/hamirror-demo/kv.sqlite3"
INTERVAL = 0.1
GAP_LIMIT = 0.2      # a gap between samples above this weakens check (4); reported


@dataclass(frozen=True)
class Sample:
    t: float
    serving: tuple[str, ...]      # nodes running the application (not stopped) with the VIP
    frozen: tuple[str, ...]       # nodes holding the VIP with a stopped (SIGSTOP) application

    @property
    def dual(self) -> bool:
        """Both nodes serve at once: the violation of check (4)."""
        return len(self.serving) == 2

    @property
    def dual_frozen(self) -> bool:
        """One node serves while the other, frozen, still holds VIP and application (reported apart)."""
        return len(self.serving) == 1 and len(self.frozen) == 1


def is_demo_cmdline(cmdline: bytes) -> bool:
    """The demo's ``kvserver.py`` (a NUL-separated /proc cmdline)."""
    args = cmdline.split(b"\0")
    return len(args) > 1 and os.path.basename(args[0]).startswith(b"python") \
        and any(a.endswith(b"/kvserver.py") for a in args[1:])


def demo_server(pid: str, comm: str) -> bool:
    """pid, whose comm is given, is the demo's server."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return comm.startswith("python") and is_demo_cmdline(f.read())
    except OSError:
        return False


def _has_vip(pid: str) -> bool:
    try:
        with open(f"/proc/{pid}/net/fib_trie", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return False
    return any(line.strip() == f"|-- {VIP}" and "host LOCAL" in nxt for line, nxt in zip(lines, lines[1:]))


def _stopped(pid: str) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "T"
    except (OSError, IndexError):
        return False


class Sampler(threading.Thread):
    """Samples who serves every INTERVAL seconds until stopped; keeps every sample with a finding."""

    def __init__(self, paths: LabPaths, is_server: Callable[[str, str], bool] | None = None) -> None:
        """``is_server(pid, comm)``: pid is the application's server (default: the demo's)."""
        super().__init__(daemon=True, name="chaos-sampler")
        self.paths = paths
        self.is_server = is_server or demo_server
        self.samples = 0
        self.findings: list[Sample] = []     # dual or dual_frozen samples
        self.gaps: list[tuple[float, float]] = []   # (time, length) of gaps above GAP_LIMIT
        self.last: Sample | None = None
        self._halt = threading.Event()
        self._paused = threading.Event()
        self._lock = threading.Lock()
        self._netns: dict[int, str] = {}
        self.refresh()

    def refresh(self) -> None:
        """Learn the nodes' network namespaces again (after a rebuilt lab)."""
        found = {}
        for node in NODES:
            try:
                found[os.stat(self.paths.netns_file(node)).st_ino] = node
            except OSError:
                pass
        self._netns = found

    def pause(self, paused: bool) -> None:
        """No samples (and no gap counted) while the lab is rebuilt."""
        (self._paused.set if paused else self._paused.clear)()

    def sample(self) -> Sample:
        serving, frozen = set(), set()
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as f:
                    if not self.is_server(pid, f.read().strip()):
                        continue
                node = self._netns.get(os.stat(f"/proc/{pid}/ns/net").st_ino)
            except OSError:
                continue
            if node is None or not _has_vip(pid):
                continue
            (frozen if _stopped(pid) else serving).add(node)
        return Sample(time.monotonic(), tuple(sorted(serving)), tuple(sorted(frozen - serving)))

    def run(self) -> None:
        previous = None
        while not self._halt.wait(INTERVAL):
            if self._paused.is_set():
                previous = None
                continue
            s = self.sample()
            with self._lock:
                self.samples += 1
                self.last = s
                if s.dual or s.dual_frozen:
                    self.findings.append(s)
                if previous is not None and s.t - previous > GAP_LIMIT:
                    self.gaps.append((s.t, s.t - previous))
            previous = s.t

    def stop(self) -> None:
        self._halt.set()
        if self.ident is not None:        # started
            self.join(timeout=5)

    def between(self, start: float, end: float) -> list[Sample]:
        with self._lock:
            return [s for s in self.findings if start <= s.t <= end]


def converged(a: dict | None, b: dict | None) -> bool:
    """a PRIM with a mounted data path and a SECOND peer; b SECOND up to date and receiving."""
    return (a is not None and b is not None and measure.is_prim_with_second(a) and measure.is_second_uptodate(b)
            and a.get("mounted", True) and b.get("receiving", True) and not b.get("busy"))


def pair(paths: LabPaths, module: str = measure.MODULE) -> dict[str, dict | None]:
    return {node: measure.module_status(paths, node, module) for node in NODES}


def roles(statuses: dict[str, dict | None]) -> tuple[str | None, str | None]:
    """(primary, secondary) by state: the node PRIM or ALONE, and the other one."""
    prim = [n for n, m in statuses.items() if m and m["state"] in ("PRIM", "ALONE")]
    if len(prim) != 1:
        return None, None
    return prim[0], next(n for n in NODES if n != prim[0])


def wait_converged(paths: LabPaths, timeout: float,
                   module: str = measure.MODULE) -> tuple[float | None, dict[str, dict | None]]:
    """Seconds until the pair converged (None if not within timeout) and the last statuses seen."""
    start = time.monotonic()
    while True:
        last = pair(paths, module)
        p, s = roles(last)
        if p is not None and converged(last[p], last[s]):
            return time.monotonic() - start, last
        if time.monotonic() - start > timeout:
            return None, last
        time.sleep(0.5)


SNAPSHOT = r"""
import hashlib, json, os, shutil, sqlite3, sys, tempfile
src, tmp = sys.argv[1], tempfile.mkdtemp(prefix="chaos-db-")
try:
    for suffix in ("", "-wal"):
        if os.path.exists(src + suffix):
            shutil.copyfile(src + suffix, os.path.join(tmp, "kv" + suffix))
    db = sqlite3.connect(os.path.join(tmp, "kv"))
    check = [r[0] for r in db.execute("PRAGMA integrity_check")]
    digest, keys = hashlib.sha256(), []
    for k, v in db.execute("SELECT key, value FROM kv ORDER BY key"):
        digest.update(k.encode() + b"\0" + bytes(v) + b"\0"); keys.append(k)
    print(json.dumps({"integrity": check, "rows": len(keys), "digest": digest.hexdigest(), "keys": keys}))
finally:
    shutil.rmtree(tmp, ignore_errors=True)
"""


def snapshot(paths: LabPaths, node: str, timeout: float = 60.0) -> dict:
    """{"integrity": [...], "rows", "digest", "keys"} of node's copy, or {"error": why}."""
    try:
        result = process.exec_in(paths, node, [sys.executable, "-c", SNAPSHOT, DB], capture=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"reading {DB} timed out after {timeout:.0f} s"}
    if result.returncode != 0:
        return {"error": result.stderr.strip()[-300:]}
    try:
        return json.loads(result.stdout)
    except ValueError:
        return {"error": f"unreadable answer: {result.stdout[-200:]!r}"}


def compare(snaps: dict[str, dict]) -> list[str]:
    """Why the two copies are not the same healthy database (empty when they are)."""
    problems = [f"{n}: {s['error']}" for n, s in snaps.items() if "error" in s]
    if problems:
        return problems
    problems = [f"{n}: integrity_check {s['integrity'][:3]}" for n, s in snaps.items() if s["integrity"] != ["ok"]]
    a, b = (snaps[n] for n in NODES)
    if a["digest"] != b["digest"]:
        only_a, only_b = set(a["keys"]) - set(b["keys"]), set(b["keys"]) - set(a["keys"])
        problems.append(f"copies differ: node1 {a['rows']} rows, node2 {b['rows']} rows; only on node1 "
                        f"{len(only_a)} {sorted(only_a)[:3]}, only on node2 {len(only_b)} {sorted(only_b)[:3]}"
                        + ("" if only_a or only_b else " (same keys, different values)"))
    return problems
