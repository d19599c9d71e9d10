"""Every process of a module's application, and a stop that leaves none of them.

The module's scripts run inside a per-module group, and whatever they start stays in it, daemons
that fork twice and leave the script's session included. So hamirror does not depend on a pid
file, or on reading it through a mount that may be dead, to know what runs:

- a **cgroup** where the system has one: the unified (v2) hierarchy, at ``/sys/fs/cgroup`` on a
  cgroup v2 system (Debian 12) or at ``/sys/fs/cgroup/unified`` on a hybrid one; else a v1
  hierarchy (``pids``, else ``freezer``). No controller is enabled: membership is all we need.
- else the **process tree** the scripts started, found by an environment variable every script
  gets and its children inherit (a program that clears its environment escapes it).

A group is ``hamirror/<instance>/<module>`` under the hierarchy's mount point. The instance is the
node's name and the identity (device, inode) of the agent's state directory: two lab nodes on one
host, or two labs, each have their own state directory, so they never see each other's processes.
Only the leaf holds processes (cgroup v2's rule for groups with controllers).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import logging
import os
import signal
import time
from collections.abc import Iterable

log = logging.getLogger(__name__)

TOP = "hamirror"
MARKER = "HAMIRROR_APP"          # env: <instance>/<module>, inherited by what the scripts start
KILL_WAIT = 10.0                 # seconds for SIGKILLed processes to be gone
POLL = 0.02
ENTER = 'echo $$ > "$0" && exec "$@"'   # sh: join the group, then become the script


class AppGroupError(Exception):
    """The group cannot be made or joined; the message names the path."""


def instance_name(node: str, state_dir: str) -> str:
    """``<node>-<10 hex>``: this agent's name among every hamirror on this host (see module doc)."""
    st = os.stat(state_dir)
    return f"{node}-{hashlib.sha256(f'{st.st_dev}:{st.st_ino}'.encode()).hexdigest()[:10]}"


def _mountinfo() -> list[tuple[str, str, set[str]]]:
    """(mount point, fstype, super options) of every cgroup mount in this mount namespace."""
    found = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) >= 5 and len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
            point = fields[4].replace("\\040", " ")
            found.append((point, tail[0], set(tail[2].split(","))))
    return found


def hierarchies() -> list[tuple[str, str]]:
    """(kind, mount point) of the usable hierarchies, preferred first: cgroup2, then v1 pids, freezer."""
    mounts = _mountinfo()
    usable = [("cgroup2", p) for p, t, _ in mounts if t == "cgroup2"]
    for controller in ("pids", "freezer"):
        usable += [("cgroup1", p) for p, t, opts in mounts if t == "cgroup" and controller in opts]
    return [(kind, point) for kind, point in usable if os.access(point, os.W_OK)]


def _alive(pid: int) -> bool:
    """Exists and is no zombie (a zombie is dead; its parent reaps it)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _signal(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


class AppGroup:
    """The processes of one module's application (base class: the process tree, by marker)."""

    kind = "tree"
    complete = False   # a process may leave the group (clear its environment): stops stay the scripts' word

    def __init__(self, instance: str, module: str) -> None:
        self.instance, self.module = instance, module
        self.marker = f"{instance}/{module}"

    def describe(self) -> str:
        return f"processes with {MARKER}={self.marker}"

    def env(self) -> dict[str, str]:
        """What every script's environment gets (all kinds: it names the module in ``ps e``)."""
        return {MARKER: self.marker}

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` made to run inside the group (from its first instruction: no fork escapes)."""
        return argv

    def pids(self) -> set[int]:
        """The live processes of the application now."""
        wanted = f"{MARKER}={self.marker}".encode()
        found = set()
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if wanted in f.read().split(b"\0"):
                        found.add(int(entry))
            except OSError:
                continue
        return {pid for pid in found if _alive(pid)}

    def kill(self) -> None:
        """SIGKILL every member."""
        _signal(self.pids(), signal.SIGKILL)

    def remove(self) -> None:
        """Forget the group once it is empty (nothing to remove for a process tree)."""


class Cgroup(AppGroup):
    """A cgroup ``<mount>/hamirror/<instance>/<module>`` of a v2 or v1 hierarchy."""

    complete = True

    def __init__(self, instance: str, module: str, kind: str, mount_point: str) -> None:
        super().__init__(instance, module)
        self.kind = kind
        self.top = os.path.join(mount_point, TOP)
        self.path = os.path.join(self.top, instance, module)

    def describe(self) -> str:
        return f"cgroup {self.path}"

    def command(self, argv: list[str]) -> list[str]:
        for attempt in range(3):     # another module's stop may remove the instance's folder meanwhile
            try:
                os.makedirs(self.path, exist_ok=True)
                break
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise AppGroupError(f"cannot make {self.describe()}: {exc.strerror}") from exc
        return ["/bin/sh", "-c", ENTER, os.path.join(self.path, "cgroup.procs"), *argv]

    def pids(self) -> set[int]:
        found: set[int] = set()
        for folder, _, files in os.walk(self.path):     # sub-groups the application made, too
            if "cgroup.procs" in files:
                try:
                    with open(os.path.join(folder, "cgroup.procs"), encoding="ascii") as f:
                        found.update(int(line) for line in f if line.strip())
                except OSError:
                    continue
        return {pid for pid in found if _alive(pid)}

    def kill(self) -> None:
        """``cgroup.kill`` where the kernel has it (v2, Linux 5.14: atomic, forks included); else each member."""
        kill_file = os.path.join(self.path, "cgroup.kill")
        if os.path.exists(kill_file):
            try:
                with open(kill_file, "w", encoding="ascii") as f:
                    f.write("1")
                return
            except OSError as exc:
                log.warning("%s: %s: %s; killing each process", self.module, kill_file, exc.strerror)
        super().kill()

    def remove(self) -> None:
        """rmdir the module's group (and what the application made under it) if empty; then the
        instance's, if no other module uses it. A busy group is left for the next stop."""
        folders = [folder for folder, _, _ in os.walk(self.path, topdown=False)]
        for folder in folders + [os.path.dirname(self.path)]:
            try:
                os.rmdir(folder)
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.EBUSY, errno.ENOTEMPTY):
                    log.warning("%s: cannot remove %s: %s", self.module, folder, exc.strerror)
                if exc.errno != errno.ENOENT:
                    return


def open_group(instance: str, module: str, kinds: tuple[str, ...] = ("cgroup2", "cgroup1", "tree")) -> AppGroup:
    """The module's group of the first usable kind in ``kinds``."""
    for kind, point in hierarchies():
        if kind in kinds:
            return Cgroup(instance, module, kind, point)
    if "tree" not in kinds:
        raise AppGroupError(f"no writable cgroup hierarchy of kind {', '.join(kinds)}")
    return AppGroup(instance, module)


@dataclasses.dataclass(frozen=True)
class Sweep:
    """What a stop found after the script: SIGTERMed, then SIGKILLed, and what survived even that."""

    termed: tuple[int, ...] = ()
    killed: tuple[int, ...] = ()
    left: tuple[int, ...] = ()

    def text(self, kill_after: float) -> str:
        if not self.termed and not self.killed:
            return "no process of the application left"
        parts = []
        if self.termed:
            parts.append(f"{len(self.termed)} process(es) left: SIGTERM {list(self.termed)}")
        if self.killed:
            after = f" after {kill_after:g} s" if self.termed else ""
            parts.append(f"SIGKILL{after} {list(self.killed)}")
        parts.append(f"{len(self.left)} survive SIGKILL {list(self.left)}" if self.left else "none left")
        return "; ".join(parts)


def _wait_empty(group: AppGroup, timeout: float) -> set[int]:
    deadline = time.monotonic() + timeout
    while (pids := group.pids()) and time.monotonic() < deadline:
        time.sleep(POLL)
    return pids


def _wait_gone(pids: Iterable[int], timeout: float) -> None:
    """Until each of ``pids`` is dead (or ``timeout``). A process in the middle of its exit has
    already lost its environment (so the process tree no longer finds it) but still runs; only
    waited for, never signalled: a pid reused meanwhile costs the wait, nothing else."""
    deadline = time.monotonic() + timeout
    while any(map(_alive, pids)) and time.monotonic() < deadline:
        time.sleep(POLL)


def sweep(group: AppGroup, kill_after: float, term: bool = True, kill_wait: float = KILL_WAIT,
          seen: Iterable[int] = ()) -> Sweep:
    """Stop whatever is left of the application: SIGTERM (unless ``term`` is false), SIGKILL after
    ``kill_after`` seconds, then wait up to ``kill_wait`` for them to be gone. ``seen``: members
    found before (e.g. before stop_prim ran), waited for until they are gone too. Never touches the
    application's files: it works on a dead mount."""
    pids = group.pids()
    if not pids:
        _wait_gone(seen, kill_wait)
        return Sweep()
    termed: set[int] = set()
    if term:
        termed = pids
        _signal(pids, signal.SIGTERM)
        pids = _wait_empty(group, kill_after)
    killed = set(pids)
    if pids:
        group.kill()
        deadline = time.monotonic() + kill_wait
        while (pids := group.pids()) and time.monotonic() < deadline:
            killed |= pids
            _signal(pids, signal.SIGKILL)      # forked since, or no cgroup.kill
            time.sleep(POLL)
    _wait_gone(set(seen) | termed | killed, kill_wait)
    return Sweep(tuple(sorted(termed)), tuple(sorted(killed)), tuple(sorted(pids)))


def remove_instance(instance: str) -> list[str]:
    """SIGKILL every process of ``instance``'s groups (all modules, all hierarchies) and remove
    them: ``lab down`` for a node. Returns the paths removed."""
    if not instance or "/" in instance or instance in (".", ".."):
        raise ValueError(f"not an instance name: {instance!r}")
    removed = []
    for _, point in hierarchies():
        base = os.path.join(point, TOP, instance)
        if not os.path.isdir(base):
            continue
        for module in sorted(os.listdir(base)):
            if os.path.isdir(os.path.join(base, module)):
                group = Cgroup(instance, module, "cgroup", point)
                sweep(group, 0.0, term=False)
                group.remove()
        for path in (base, os.path.join(point, TOP)):   # the top stays while another instance uses it
            try:
                os.rmdir(path)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    break
        if not os.path.isdir(base):
            removed.append(base)
    return removed
