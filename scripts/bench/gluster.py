"""A GlusterFS replica-2 volume as a peer column of the mirror benchmark.

Why: the issue asks how hamirror compares with the usual open-source answer to "replicate a
directory between two servers". Two ``glusterd`` run in two network namespaces of our own
(198.18.0.11 and .12, joined by one veth pair, no default route), each with a private ``/run``,
``/var/lib/glusterd`` and ``/var/log/glusterfs`` (bind mounts in a private mount namespace), so
two servers' worth of state live side by side on one machine and nothing touches the system's
own GlusterFS state. Each holds one brick on the same disk as the other columns; the volume is
``replica 2`` with default options. The FUSE client (``glusterfs -N``) runs in node 1's network
namespace but mounts in the benchmark's own mount namespace, like an application on server 1.

Everything started here is ended at ``stop()``: the client mount and its process, then every
process left in the two namespaces (glusterd, the bricks' glusterfsd, the self-heal daemon: all
ours, since we made the namespaces), then the namespaces; the bind mounts die with the last
process of their mount namespace. ``clean_stale()`` does the same for namespaces left by a
benchmark that was killed with SIGKILL.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

from hamirror.lab import netns
from hamirror.lab.shell import LabError, run

PREFIX = "hmglb"                       # namespace names: hmglb-<bench pid>-n1 / -n2
ADDRESSES = ("198.18.0.11", "198.18.0.12")
VOLUME = "hmbench"
# Inside glusterd's new mount namespace: first drop the copies of the FUSE mounts made before it
# (the other columns): a copy would keep their FUSE connection alive after they unmount on the
# host, and their daemons would never learn they are done (as hamirror/lab/mountns.py explains).
GLUSTERD_START = ("awk '$3 ~ /^fuse/ {print $2}' /proc/self/mounts | while read -r m; do umount -l \"$m\"; done; "
                  'mount --bind "$1" /run && mount --bind "$2" /var/lib/glusterd && '
                  'mount --bind "$3" /var/log/glusterfs && exec glusterd -N --log-level WARNING')


def available() -> str | None:
    """None when GlusterFS can be measured here, else why not (shown as the column's skip reason)."""
    missing = [tool for tool in ("glusterd", "gluster", "glusterfs") if shutil.which(tool) is None]
    if missing:
        return "glusterfs-server not installed"
    return None


def _mounted(path: str) -> bool:
    real = os.path.realpath(path)
    with open("/proc/self/mounts", encoding="utf-8") as f:
        return any(line.split()[1] == real for line in f)


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise LabError(f"GlusterFS: timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.2)


def _end_namespace(ns: str) -> None:
    """End every process of one of our namespaces (TERM, then KILL), then delete it."""
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        pids = netns.pids(ns)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while netns.pids(ns) and time.monotonic() < deadline:
            time.sleep(0.1)
    netns.delete(ns)


def clean_stale() -> list[str]:
    """Remove namespaces left by an earlier benchmark whose process is gone; returns their names."""
    removed = []
    for ns in netns.list_netns():
        parts = ns.split("-")
        if len(parts) == 3 and parts[0] == PREFIX and parts[1].isdigit() and not os.path.exists(f"/proc/{parts[1]}"):
            _end_namespace(ns)
            removed.append(ns)
    return removed


def name_processes(client: int | None, seen: list[tuple[int, int, str]]) -> list[tuple[str, int]]:
    """(label, pid) for our client and each (node, pid, comm) of the namespaces: per node glusterd,
    its brick (glusterfsd) and its self-heal daemon (a glusterfs that is not our client; our client
    lives in node 1's network namespace too). A second process of one kind gets its PID in the label."""
    kinds = {"glusterd": "glusterd", "glusterfsd": "brick", "glusterfs": "self-heal"}
    found: list[tuple[str, int]] = [("glusterfs client", client)] if client is not None else []
    for node, pid, comm in seen:
        if pid != client:
            label = f"{kinds.get(comm, comm)} n{node}"
            found.append((label if all(label != n for n, _ in found) else f"{label} {pid}", pid))
    return found


class GlusterVolume:
    """Two glusterd, one replica-2 volume, one FUSE client mount at ``self.mountpoint``."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.namespaces = tuple(f"{PREFIX}-{os.getpid()}-n{i}" for i in (1, 2))
        self.mountpoint = os.path.join(base, "mnt")
        self.glusterd: list[subprocess.Popen] = []
        self.client: subprocess.Popen | None = None

    def _node(self, i: int, sub: str = "") -> str:
        return os.path.join(self.base, f"node{i + 1}", sub)

    def _cli(self, i: int, *args: str, timeout: float = 60) -> str:
        """Run ``gluster`` inside node i's namespaces (its glusterd's socket is in its /run)."""
        cmd = ["nsenter", "-t", str(self.glusterd[i].pid), "-m", "-n", "gluster", "--mode=script", *args]
        return run(cmd, timeout=timeout).stdout

    def start(self) -> "GlusterVolume":
        self._network()
        for i in range(2):
            self._start_glusterd(i)
        self._cli(0, "peer", "probe", ADDRESSES[1])
        _wait(lambda: "Peer in Cluster (Connected)" in self._cli(0, "peer", "status"), 30,
              "the peer probe to connect")
        bricks = [f"{ADDRESSES[i]}:{self._node(i, 'brick')}" for i in range(2)]
        self._cli(0, "volume", "create", VOLUME, "replica", "2", *bricks, "force")
        self._cli(0, "volume", "start", VOLUME)
        self._mount()
        return self

    def _network(self) -> None:
        """Two namespaces joined by a veth pair made inside the first (never in ours)."""
        for ns in self.namespaces:
            run(["ip", "netns", "add", ns])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
        run(["ip", "-n", self.namespaces[0], "link", "add", "eth0", "type", "veth",
             "peer", "name", "eth0", "netns", self.namespaces[1]])
        for ns, address in zip(self.namespaces, ADDRESSES):
            run(["ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0"])
            run(["ip", "-n", ns, "link", "set", "eth0", "up"])
            if netns.has_default_route(ns):
                raise LabError(f"namespace {ns} has a default route; refusing to go on")

    def _start_glusterd(self, i: int) -> None:
        dirs = [self._node(i, sub) for sub in ("run", "lib", "log")]
        for d in dirs + [self._node(i, "run/gluster"), self._node(i, "brick")]:
            os.makedirs(d, exist_ok=True)
        # ip netns exec, unshare and sh all exec: the PID we hold is glusterd's.
        cmd = ["ip", "netns", "exec", self.namespaces[i], "unshare", "--mount", "--propagation", "private",
               "sh", "-c", GLUSTERD_START, "sh", *dirs]
        with open(self._node(i, "glusterd.out"), "ab") as out:
            # Own session: a Ctrl-C at the terminal reaches the benchmark, which then stops us in order.
            self.glusterd.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
        socket = os.path.join(dirs[0], "glusterd.socket")
        _wait(lambda: os.path.exists(socket) or self.glusterd[i].poll() is not None, 30, f"glusterd {i + 1}")
        if self.glusterd[i].poll() is not None:
            raise LabError(f"glusterd {i + 1} exited ({self.glusterd[i].returncode}); see {self._node(i)}")

    def _mount(self) -> None:
        os.makedirs(self.mountpoint, exist_ok=True)
        cmd = ["nsenter", f"--net=/run/netns/{self.namespaces[0]}", "glusterfs", "-N",
               f"--volfile-server={ADDRESSES[0]}", f"--volfile-id={VOLUME}",
               f"--log-file={os.path.join(self.base, 'client.log')}", self.mountpoint]
        self.client = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        _wait(lambda: _mounted(self.mountpoint) or self.client.poll() is not None, 30, "the client mount")
        if self.client.poll() is not None:
            raise LabError(f"the GlusterFS client exited ({self.client.returncode}); see {self.base}/client.log")

    def alive(self) -> bool:
        return self.client is not None and self.client.poll() is None and _mounted(self.mountpoint)

    def pids(self) -> list[int]:
        return [p.pid for p in [self.client, *self.glusterd] if p is not None]

    def processes(self) -> list[tuple[str, int]]:
        """Every process of the volume, named for the CPU table (see ``name_processes``)."""
        seen = []
        for node, ns in enumerate(self.namespaces, 1):
            for pid in netns.pids(ns):
                try:
                    with open(f"/proc/{pid}/comm", encoding="utf-8") as f:
                        seen.append((node, pid, f.read().strip()))
                except OSError:
                    continue                       # gone since ip listed it
        return name_processes(self.client.pid if self.client is not None else None, seen)

    def stop(self) -> None:
        """Unmount, end every process we started or that lives in our namespaces, drop them."""
        try:
            if _mounted(self.mountpoint):
                if run(["umount", self.mountpoint], check=False).returncode != 0:
                    run(["umount", "-l", self.mountpoint], check=False)
            if self.client is not None:
                try:
                    self.client.wait(10)
                except subprocess.TimeoutExpired:
                    self.client.kill()
                    self.client.wait(10)
        finally:
            for ns in self.namespaces:
                if netns.exists(ns):
                    _end_namespace(ns)
            for proc in self.glusterd:
                if proc.poll() is None:
                    proc.kill()
                proc.wait(10)
