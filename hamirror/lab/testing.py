"""A lab for integration tests: built through the real CLI, always removed, with leftovers checked.

``with temporary_lab(root) as lab:`` runs ``hamirror lab up`` and, whatever happens inside,
``hamirror lab down``; then it fails if any namespace, mount or process of the lab survived.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from hamirror.actions.appprocs import TOP, hierarchies
from hamirror.lab import control, mountns, netns, process, state
from hamirror.lab.naming import NODES, SWITCH, LabPaths, hosts_for, resolve_root

# Run inside a host: "reachable" if the address answers (even with a refusal), else "cut".
PROBE = """
import socket, sys
s = socket.socket(); s.settimeout(float(sys.argv[3]))
try:
    s.connect((sys.argv[1], int(sys.argv[2]))); print("reachable")
except ConnectionRefusedError:
    print("reachable")
except OSError:
    print("cut")
"""


def lab_command(root: str, *args: str) -> list[str]:
    """The command line of ``hamirror lab ACTION --root ROOT ARGS``."""
    return [sys.executable, "-m", "hamirror", "lab", args[0], "--root", root, *args[1:]]


def lab_cli(root: str, *args: str, timeout: float = 120, input: str | None = None) -> subprocess.CompletedProcess:
    """``hamirror lab ARGS --root ROOT`` run to completion, output captured."""
    return subprocess.run(lab_command(root, *args), capture_output=True, text=True, timeout=timeout, input=input)


@dataclass(frozen=True)
class TestLab:
    root: str

    @property
    def paths(self) -> LabPaths:
        return LabPaths(self.root)

    def cli_command(self, *args: str) -> list[str]:
        return lab_command(self.root, *args)

    def cli(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return lab_cli(self.root, *args, **kwargs)

    def exec(self, host: str, *cmd: str, **kwargs) -> subprocess.CompletedProcess:
        return self.cli("exec", host, "--", *cmd, **kwargs)

    def sh(self, host: str, script: str) -> str:
        """Output of a shell script run in host; fails loudly if the script fails."""
        result = self.exec(host, "sh", "-c", script)
        if result.returncode != 0:
            raise AssertionError(f"{host}: {script!r} exited {result.returncode}: {result.stderr}")
        return result.stdout

    def probe(self, host: str, address: str, port: int = 9, timeout: float = 1.0) -> str:
        """'reachable' or 'cut': a TCP connect from host to address (a refusal proves reachability)."""
        return self.exec(host, sys.executable, "-c", PROBE, address, str(port), str(timeout)).stdout.strip()


def leftovers(root: str, recorded: state.LabState | None = None) -> list[str]:
    """What of the lab at root still exists: namespaces, mounts under root, live processes it recorded."""
    paths = LabPaths(root)
    found = [f"namespace {n}" for n in netns.lab_netns(paths)]
    found += [f"mount {t}" for t in mountns.mounts_under(paths.root)]
    for node in NODES:
        instance = control.app_instance(paths, node)
        found += [f"cgroup {point}/{TOP}/{instance}" for _, point in hierarchies()
                  if instance and os.path.isdir(f"{point}/{TOP}/{instance}")]
    recorded = recorded or state.load(paths)
    for host in hosts_for(witness=True, etcd=True) + (SWITCH,):
        mine = recorded.started_in(host) if recorded else []
        found += [f"process {pid} of {host}" for pid in process.members(paths, host, mine) if process.is_running(pid)]
    return found


@contextmanager
def temporary_lab(root: str, *up_args: str, agents: bool = False) -> Iterator[TestLab]:
    """A lab that exists for the with-block only (``up`` failures included: down runs anyway)."""
    root = resolve_root(root)
    try:
        result = lab_cli(root, "up", *([] if agents else ["--no-agent"]), *up_args)
        if result.returncode != 0:
            raise AssertionError(f"lab up failed ({result.returncode}): {result.stderr}")
        yield TestLab(root)
    finally:
        recorded = state.load(LabPaths(root))
        result = lab_cli(root, "down")
        left = leftovers(root, recorded)
        if result.returncode != 0 or left:
            raise AssertionError(f"lab down at {root} failed ({result.returncode}): {result.stderr} left: {left}")



def unavailable() -> str | None:
    """Why the lab cannot run here (not root, a tool missing), or None."""
    if os.geteuid() != 0:
        return "the lab needs root"
    missing = [t for t in ("ip", "nft", "nsenter", "unshare", "mount", "umount") if shutil.which(t) is None]
    return f"missing tools: {', '.join(missing)}" if missing else None
