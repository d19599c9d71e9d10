"""Processes inside lab hosts: run a command there, start a daemon there, kill them all (power loss).

Nodes are entered through both their network and mount namespaces (``nsenter``); the client and
the witness have only a network namespace. Daemons get their own session (``setsid``, via
``start_new_session``, so the recorded pid is the daemon itself) and a log file per name.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil

from hamirror.lab import mountns, netns
from hamirror.lab.naming import CONFIG_PATH, NODES, LabPaths
from hamirror.lab.shell import LabError
from hamirror.lab.state import Started
from hamirror.processes import boot_start, same_start

# Set in the environment of everything the lab runs in a host (inherited by children): finds the
# host's processes even when its namespaces are already gone, e.g. after a crash or manual cleanup.
MARKER = "HAMIRROR_LAB_HOST"


def enter_command(paths: LabPaths, host: str, cmd: list[str]) -> list[str]:
    """cmd prefixed with the nsenter that puts it into host."""
    if not netns.exists(paths.netns(host)):
        raise LabError(f"{host}: no network namespace {paths.netns(host)} (is the lab up? try 'hamirror lab up')")
    enter = ["nsenter", f"--net={paths.netns_file(host)}"]
    if host in NODES:
        if not mountns.exists(paths, host):
            raise LabError(f"{host}: no mount namespace at {paths.mntns_file(host)} (node is down; try 'hamirror lab boot {host}')")
        enter.append(f"--mount={paths.mntns_file(host)}")
    return enter + ["--", *cmd]


def host_env(paths: LabPaths, host: str) -> dict[str, str]:
    """The caller's environment plus HAMIRROR_CONFIG for nodes, this interpreter's bin on PATH and the marker."""
    env = dict(os.environ)
    env[MARKER] = paths.netns(host)
    bindir = os.path.dirname(sys.executable)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    if host in NODES:
        env["HAMIRROR_CONFIG"] = CONFIG_PATH
    else:
        env.pop("HAMIRROR_CONFIG", None)
    return env


def exec_in(paths: LabPaths, host: str, cmd: list[str], capture: bool = False, timeout: float | None = None,
            input: str | None = None) -> subprocess.CompletedProcess:
    """Run cmd in host and wait; stdio passes through unless capture (input, if given, is its stdin)."""
    return subprocess.run(enter_command(paths, host, cmd), env=host_env(paths, host), capture_output=capture,
                          text=True if capture or input is not None else None, timeout=timeout, input=input)


def start(paths: LabPaths, host: str, name: str, cmd: list[str]) -> Started:
    """Start cmd detached in host, output to ROOT/HOST/log/NAME.log; the caller records the result."""
    log_path = paths.log_file(host, name)
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(enter_command(paths, host, cmd), env=host_env(paths, host), stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
    try:
        started = psutil.Process(proc.pid)
        created, since_boot = started.create_time(), boot_start(started)
    except psutil.Error:
        created, since_boot = 0.0, None
    return Started(host=host, name=name, pid=proc.pid, create_time=created, command=cmd, started=since_boot)


def is_alive(started: Started) -> bool:
    """True if the recorded process still runs (same pid and same start time, not a zombie)."""
    try:
        proc = psutil.Process(started.pid)
        return same_start(proc, started.create_time, started.started) and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _in_mount_namespace(paths: LabPaths, node: str) -> list[int]:
    """Processes whose mount namespace is the node's (some may have left its network namespace)."""
    ns_id = mountns.namespace_id(paths, node)
    if ns_id is None:
        return []
    found = []
    for pid in psutil.pids():
        try:
            if os.stat(f"/proc/{pid}/ns/mnt").st_ino == ns_id:
                found.append(pid)
        except OSError:
            continue
    return found


def _marked(paths: LabPaths, host: str) -> list[int]:
    """Processes whose environment carries the host's marker."""
    marker = f"{MARKER}={paths.netns(host)}".encode()
    found = []
    for pid in psutil.pids():
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if marker in f.read().split(b"\0"):
                    found.append(pid)
        except OSError:
            continue
    return found


def members(paths: LabPaths, host: str, recorded: list[Started]) -> list[int]:
    """Every live process of host: in its namespaces, marked as the host's, or recorded and still the same process."""
    pids = set(netns.pids(paths.netns(host))) | set(_marked(paths, host))
    if host in NODES:
        pids.update(_in_mount_namespace(paths, host))
    pids.update(s.pid for s in recorded if is_alive(s))
    pids.discard(os.getpid())
    return sorted(pids)


def kill_all(paths: LabPaths, host: str, recorded: list[Started], timeout: float = 10.0) -> list[int]:
    """SIGKILL every process of host until none is left (children forked meanwhile included)."""
    killed: list[int] = []
    deadline = time.monotonic() + timeout
    while True:
        pids = [p for p in members(paths, host, recorded) if is_running(p)]
        if not pids:
            return killed
        if time.monotonic() > deadline:
            raise LabError(f"{host}: processes {pids} survive SIGKILL")
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
        _reap(pids)


def is_running(pid: int) -> bool:
    """True while pid exists and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _reap(pids: list[int]) -> None:
    """Collect our own children so they do not linger as zombies."""
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
