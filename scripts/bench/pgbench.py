"""PostgreSQL's pgbench (TPC-B-like) as a workload of the mirror benchmark.

Why: a real database's commit path (WAL writes, fdatasync at each commit, several clients at once)
is what the replicated mount exists for, and what SQLite in one process does not show. The
database is made once, outside every column: ``initdb`` and ``pgbench -i -s SCALE`` on the local
disk, checkpointed and stopped cleanly. Each timed run copies that template into a fresh directory
of the column (outside the timing), starts a server there (Unix socket in our own scratch
directory, no TCP), runs ``pgbench -c CLIENTS -j 2 -T SECONDS -n`` and takes its "tps (without
initial connection time)" and its count of transactions; then the server is stopped and the copy
removed. So every column starts from the same bytes and default server settings (fsync on,
synchronous_commit on). A probe (cputime.Probe) reads CPU over the pgbench client's run only, with
the server's processes (the postmaster's tree) as "postgres".
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import time

import cputime
from cputime import NoProbe, Probe

PG_BIN = "/usr/lib/postgresql/15/bin"
USER = "postgres"
PORT = "5432"                       # only a Unix socket in our scratch directory: no clash
TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.M)
DONE = re.compile(r"^number of transactions actually processed: ([0-9]+)", re.M)


def available() -> str | None:
    """None when pgbench can run here, else why not."""
    if not all(os.access(os.path.join(PG_BIN, tool), os.X_OK) for tool in ("initdb", "pg_ctl", "pgbench", "psql")):
        return f"PostgreSQL not installed ({PG_BIN})"
    try:
        pwd.getpwnam(USER)
    except KeyError:
        return f"no {USER} user"
    return None


class Pgbench:
    """The template database and one timed run per call of ``run(directory)``."""

    def __init__(self, scratch: str, clients: int = 4, scale: int = 5, seconds: int = 20) -> None:
        self.scratch = scratch                       # on the local disk, outside every column
        self.clients, self.scale, self.seconds = clients, scale, seconds
        self.template = os.path.join(scratch, "template")
        self.sockets = os.path.join(scratch, "sockets")
        self.uid, self.gid = pwd.getpwnam(USER).pw_uid, pwd.getpwnam(USER).pw_gid

    def _as_user(self, *cmd: str, timeout: float = 300) -> str:
        result = subprocess.run([os.path.join(PG_BIN, cmd[0]), *cmd[1:]], user=self.uid, group=self.gid,
                                extra_groups=[], capture_output=True, text=True, timeout=timeout, cwd=self.scratch)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}): {(result.stderr or result.stdout).strip()[-800:]}")
        return result.stdout

    def _client(self, *args: str, timeout: float = 300) -> str:
        return self._as_user(args[0], "-h", self.sockets, "-p", PORT, *args[1:], timeout=timeout)

    def prepare(self) -> None:
        """initdb + pgbench -i on the local disk, checkpointed and stopped: the template of every run."""
        os.makedirs(self.sockets, exist_ok=True)
        for path in (self.scratch, self.sockets):
            os.chown(path, self.uid, self.gid)
        self._as_user("initdb", "--no-sync", "-A", "trust", "-U", USER, "-D", self.template)
        self._start(self.template)
        try:
            self._client("pgbench", "-i", "-q", "-s", str(self.scale), "postgres")
            self._client("psql", "-q", "-c", "CHECKPOINT", "postgres")
        finally:
            self._stop(self.template)

    def run(self, directory: str, probe: Probe | NoProbe = NoProbe(), keep: bool = False) -> tuple[float, int]:
        """One timed pgbench on a fresh copy of the template in ``directory``: (transactions/s,
        transactions). ``keep``: leave the stopped cluster for the caller's clean-up at its end
        (why: workloads.py, above ``_cleanup``)."""
        work = os.path.join(directory, f"pgbench-{os.urandom(4).hex()}")
        os.mkdir(work)
        os.chmod(work, 0o755)
        data = os.path.join(work, "data")
        try:
            subprocess.run(["cp", "-a", self.template, data], check=True, capture_output=True, timeout=600)
            os.sync()
            self._start(data)
            try:
                postmaster = _postmaster(data)
                probe.begin({"postgres": postmaster})
                out = self._client("pgbench", "-n", "-c", str(self.clients), "-j", "2", "-T", str(self.seconds),
                                   "postgres", timeout=self.seconds + 120)
                probe.end(lambda: _wait_backends_gone(postmaster))
            finally:
                self._stop(data)
        finally:
            if not keep:
                shutil.rmtree(work, ignore_errors=True)
        found, done = TPS.search(out), DONE.search(out)
        if not found or not done:
            raise RuntimeError(f"pgbench printed no tps or transaction count line: {out[-500:]}")
        return float(found.group(1)), int(done.group(1))

    def _start(self, data: str) -> None:
        log = os.path.join(self.scratch, "server.log")
        options = f"-k {self.sockets} -p {PORT} -c listen_addresses=''"
        self._as_user("pg_ctl", "-D", data, "-l", log, "-o", options, "-w", "-t", "120", "start", timeout=180)

    def _stop(self, data: str) -> None:
        """Stop the server; if pg_ctl cannot, end the postmaster by the PID in its pid file."""
        try:
            self._as_user("pg_ctl", "-D", data, "-m", "fast", "-w", "-t", "60", "stop", timeout=90)
            return
        except (RuntimeError, subprocess.TimeoutExpired):
            pass
        try:
            os.kill(_postmaster(data), signal.SIGKILL)
            time.sleep(1)
        except (OSError, ValueError):
            pass


def _postmaster(data: str) -> int:
    with open(os.path.join(data, "postmaster.pid"), encoding="ascii") as f:
        return int(f.readline())


def _backends(postmaster: int) -> list[int]:
    """The postmaster's children that serve a client ("postgres: USER DB [local] ...")."""
    found = []
    for pid, proc in cputime.snapshot().items():
        if proc.ppid != postmaster:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"[local]" in f.read():
                    found.append(pid)
        except OSError:
            pass
    return found


def _wait_backends_gone(postmaster: int, timeout: float = 5.0) -> None:
    """Until the finished clients' backends are reaped, so that their CPU is in the postmaster's."""
    deadline = time.monotonic() + timeout
    while _backends(postmaster) and time.monotonic() < deadline:
        time.sleep(0.05)
