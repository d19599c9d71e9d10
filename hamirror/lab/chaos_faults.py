"""The faults of the campaign (``scripts/chaos.py``), each injected into a running lab and undone by itself.

Every fault signals only processes of this lab, found by ``process.members`` (the node's
namespaces, the lab's marker, the lab's record), by PID. A fault ends with the node in a state a
real machine reaches on its own: a power-killed node boots again, a frozen one is resumed, a
partition heals, a killed agent is started again like systemd's ``Restart=`` would. Mount daemon,
receiver and application are *not* restarted: that is the agent's job.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil

from hamirror.lab import chaos_apps, chaos_watch, control, kvclient, measure, process, state
from hamirror.lab.naming import NODES, WITNESS, LabPaths
from hamirror.lab.shell import LabError

BASIC = ("power-kill", "kill-agent", "kill-mount", "kill-app", "kill-receiver", "swap", "freeze",
         "resync-kill", "kill-both", "sb-swap")
PARTITIONS = ("part-peers", "part-peers-witness", "part-second-witness")
ALL = BASIC + PARTITIONS
# argv pieces that name each daemon (``python -m hamirror agent``, ``... mirror mount``, ``kvserver.py``)
DAEMONS = {"agent": ("hamirror", "agent"), "mount": ("mirror", "mount"), "receiver": ("mirror", "receive")}
BALLAST_MIB = 128    # written on a lone primary so that the failback resync has something to copy


@dataclass
class Event:
    """One injected fault; ``start`` is when the fault hit, ``end`` when its injection returned
    (monotonic); ``recovery_s`` and ``interruption_s`` filled by the campaign."""

    trial: int
    index: int
    fault: str
    node: str | None = None
    start: float = 0.0
    end: float = 0.0
    detail: list[str] = field(default_factory=list)
    skipped: str | None = None
    error: str | None = None
    recovery_s: float | None = None
    interruption_s: float | None = None   # the longest time without an acknowledgement around it
    role: str | None = None    # of the node hit, when the fault picks either node: primary or secondary

    @property
    def kind(self) -> str:
        """The row of the report: the fault, split by the role of the node hit when it picks either."""
        return f"{self.fault}/{self.role}" if self.role else self.fault


def _matches(proc: psutil.Process, what: str, app: chaos_apps.App | None) -> bool:
    if what == "app":
        return (app or chaos_apps.Demo()).is_server(str(proc.pid), proc.name())
    a, b = DAEMONS[what]
    cmd = proc.cmdline()
    return any(x == a and y == b for x, y in zip(cmd, cmd[1:]))


def pids_of(paths: LabPaths, node: str, what: str | None = None, app: chaos_apps.App | None = None) -> list[int]:
    """The live processes of node (``what``: only the agent, mount, receiver or app's server)."""
    recorded = state.load(paths)
    found = []
    for pid in process.members(paths, node, recorded.started_in(node) if recorded else []):
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE or (what and not _matches(proc, what, app)):
                continue
        except psutil.Error:
            continue
        found.append(pid)
    return found


def resume(pids: list[int], settle: float = 1.0) -> None:
    """SIGCONT ``pids`` as a VM resume would: none stays stopped. A parent that mirrors its child's
    stop (``runuser``, ``su``: continued before its child, it sees the child stopped and stops
    itself again) is continued again while ``settle`` lasts; a paused VM sends no signal at all."""
    _signal(list(reversed(pids)), signal.SIGCONT)
    deadline, calm_since = time.monotonic() + settle, time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - calm_since < settle / 3:
        time.sleep(0.05)
        stopped = [pid for pid in pids if _stopped(pid)]
        if stopped:
            _signal(stopped, signal.SIGCONT)
            calm_since = time.monotonic()


def _stopped(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_STOPPED
    except psutil.Error:
        return False


def _signal(pids: list[int], sig: int) -> list[int]:
    done = []
    for pid in pids:
        try:
            os.kill(pid, sig)
            done.append(pid)
        except ProcessLookupError:
            pass
    return done


class Injector:
    """Injects faults, remembers what it must undo (frozen pids, nodes down, partitions), undoes it."""

    def __init__(self, paths: LabPaths, rng: random.Random, writer: Callable[[], kvclient.Writer | None],
                 say: Callable[[str], None] = print, app: chaos_apps.App | None = None) -> None:
        self.paths, self.rng, self.writer, self.say = paths, rng, writer, say
        self.app = app or chaos_apps.Demo()
        self.frozen: list[int] = []
        self.stopped_at = 0.0                  # when the last freeze had stopped every process
        self.down: set[str] = set()
        self.agent_restarts = 0

    # ------------------------------------------------------------------ helpers

    def roles(self, timeout: float = 30.0) -> tuple[str | None, str | None]:
        """(primary, secondary) as the agents report them, waiting for exactly one primary."""
        deadline = time.monotonic() + timeout
        while True:
            p, s = chaos_watch.roles({n: None if n in self.down
                                      else measure.module_status(self.paths, n, self.app.module)
                                      for n in NODES})
            if p is not None or time.monotonic() > deadline:
                return p, s
            time.sleep(0.3)

    def kill(self, node: str) -> None:
        control.kill(self.paths, node)
        self.down.add(node)

    def boot(self, node: str) -> None:
        control.boot(self.paths, node)
        self.down.discard(node)

    def freeze(self, node: str, seconds: float) -> list[int]:
        """SIGSTOP every process of node, SIGCONT them after seconds; the pids stopped.
        ``stopped_at``: when the last was stopped (a request answered before that is no recovery)."""
        stopped = self.frozen = _signal(pids_of(self.paths, node), signal.SIGSTOP)
        self.stopped_at = time.monotonic()
        try:
            time.sleep(seconds)
        finally:
            self.thaw()
        return stopped

    def thaw(self) -> None:
        resume(self.frozen)
        self.frozen = []

    def swap(self, node: str, ev: Event) -> None:
        """``hamirror swap MODULE`` on node (the fault's own command, not an operator action)."""
        try:
            r = process.exec_in(self.paths, node, [sys.executable, "-m", "hamirror", "swap", self.app.module],
                                capture=True,
                                timeout=120)
            ev.detail.append(f"swap on {node}: exit {r.returncode} {(r.stderr or r.stdout).strip()[-200:]}")
        except subprocess.TimeoutExpired:
            ev.detail.append(f"swap on {node}: no answer in 120 s")

    def restore(self) -> list[str]:
        """Undo whatever is still in effect: resume, heal, boot, start dead agents; what was done."""
        done = []
        if self.frozen:
            self.thaw()
            done.append("resumed frozen processes")
        if (state.load(self.paths) or state.LabState("", "")).partitions:
            control.heal(self.paths)
            done.append("healed partitions")
        for node in sorted(self.down):
            self.boot(node)
            done.append(f"booted {node}")
        for node in NODES:
            if not pids_of(self.paths, node, "agent"):
                control.start_agent(self.paths, node)
                self.agent_restarts += 1
                done.append(f"started {node}'s dead agent (systemd Restart=)")
        return done

    # ------------------------------------------------------------------ faults

    def inject(self, ev: Event) -> Event:
        """Run the fault of ev; errors of the lab itself are recorded, never raised."""
        try:
            getattr(self, "_" + ev.fault.replace("-", "_"))(ev)
        except (LabError, OSError, subprocess.SubprocessError) as exc:
            ev.error = str(exc).splitlines()[0][:300]
        ev.end = time.monotonic()
        if not ev.start:
            ev.start = ev.end
        return ev

    def _primary(self, ev: Event) -> str | None:
        p, _ = self.roles()
        if p is None:
            ev.skipped = "no primary"
        return p

    def _secondary(self, ev: Event) -> str | None:
        p, s = self.roles()
        if s is None or s in self.down:
            ev.skipped = "no secondary"
            return None
        return s

    def _kill_daemon(self, ev: Event, node: str | None, what: str) -> None:
        if node is None:
            return
        ev.node = node
        pids = pids_of(self.paths, node, what, self.app)
        if not pids:
            ev.skipped = f"no {what} process on {node}"
            return
        ev.start = time.monotonic()
        ev.detail.append(f"kill -9 {what} {_signal(pids, signal.SIGKILL)}")

    def _either(self, ev: Event) -> str:
        """A node drawn at random, its role noted in ev."""
        ev.node = self.rng.choice(NODES)
        p, _ = self.roles(timeout=5.0)
        ev.role = "primary" if ev.node == p else "secondary"
        return ev.node

    def _power_kill(self, ev: Event) -> None:
        self._either(ev)
        delay = self.rng.uniform(1.0, 8.0)
        self.kill(ev.node)
        ev.start = time.monotonic()      # once the victim is fully dead, as measure.failover does
        time.sleep(delay)
        self.boot(ev.node)
        ev.detail.append(f"power-kill {ev.node}, boot after {delay:.1f} s")

    def _kill_agent(self, ev: Event) -> None:
        node = self._either(ev)
        self._kill_daemon(ev, node, "agent")
        if ev.skipped is None:
            delay = self.rng.uniform(0.5, 5.0)
            time.sleep(delay)
            control.start_agent(self.paths, node)
            ev.detail.append(f"agent started again after {delay:.1f} s")

    def _kill_mount(self, ev: Event) -> None:
        self._kill_daemon(ev, self._primary(ev), "mount")

    def _kill_app(self, ev: Event) -> None:
        self._kill_daemon(ev, self._primary(ev), "app")

    def _kill_receiver(self, ev: Event) -> None:
        self._kill_daemon(ev, self._secondary(ev), "receiver")

    def _swap(self, ev: Event) -> None:
        ev.node = self._primary(ev)
        if ev.node is not None:
            ev.start = time.monotonic()
            self.swap(ev.node, ev)

    def _freeze(self, ev: Event) -> None:
        ev.node = self._primary(ev)
        if ev.node is not None:
            seconds = self.rng.uniform(3.0, 8.0)
            pids = self.freeze(ev.node, seconds)
            ev.start = self.stopped_at
            ev.detail.append(f"SIGSTOP {len(pids)} processes of {ev.node} for {seconds:.1f} s, then SIGCONT")

    def _kill_both(self, ev: Event) -> None:
        first = self.rng.choice(NODES)
        order = [first, next(n for n in NODES if n != first)]
        delay = self.rng.uniform(1.0, 5.0)
        for node in order:
            self.kill(node)
        ev.start = time.monotonic()
        time.sleep(delay)
        for node in self.rng.sample(order, 2):
            self.boot(node)
        ev.detail.append(f"power-kill {order[0]} then {order[1]}, both booted after {delay:.1f} s")

    def failback_resync(self, ev: Event) -> tuple[str, str, str] | None:
        """Kill the primary, let the survivor write alone (plus a ballast), boot the first; return
        (booted node, survivor, what shows the resync runs) once the failback resync runs, else None
        (ev.skipped says why)."""
        converged, _ = chaos_watch.wait_converged(self.paths, 60.0, self.app.module)
        first, survivor = self.roles()
        if converged is None or first is None:
            ev.skipped = "pair not converged before the fault"
            return None
        self.kill(first)
        writer = self.writer()
        if writer is not None:
            try:
                writer.first_ack_after(time.monotonic(), 30.0)
            except LabError:
                ev.detail.append(f"no write acknowledged by {survivor} alone within 30 s")
        serving = measure.module_status(self.paths, survivor, self.app.module) or {}
        if serving.get("state") not in ("ALONE", "PRIM") or not serving.get("mounted", True):
            # The ballast goes through the survivor's mount: written into a copy that is not the
            # primary's, it would be a change behind hamirror's back, not a fault it must survive.
            self.boot(first)
            ev.skipped = f"{survivor} did not take over ({serving.get('state')}); {first} booted again"
            return None
        name = f"chaos-ballast-{ev.trial}-{ev.index}"
        top = self.app.data_dir
        process.exec_in(self.paths, survivor, ["sh", "-c", f"rm -f {top}/chaos-ballast-*; dd if=/dev/urandom "
                        f"of={top}/{name} bs=1M count={BALLAST_MIB} status=none"], capture=True, timeout=120)
        # the booted node's copy of the ballast, seen from the machine: growing means the resync runs
        copy = os.path.join(self.app.lower_dir(self.paths, first), name)
        self.boot(first)
        ev.node = survivor
        deadline = time.monotonic() + 60.0
        next_status = 0.0
        while time.monotonic() < deadline:
            size = os.stat(copy).st_blocks * 512 if os.path.exists(copy) else 0    # allocated: sparse-proof
            seen = f"{first} holds {size >> 20} of {BALLAST_MIB} MiB" if 0 < size < BALLAST_MIB << 20 else None
            if size >= BALLAST_MIB << 20:   # a resync faster than this watch (an idle machine) still counts
                seen = f"{first} already holds all {BALLAST_MIB} MiB: the resync ran and may have ended"
            if not seen and time.monotonic() > next_status:      # a status costs a process in the node
                seen = (measure.module_status(self.paths, survivor, self.app.module) or {}).get("resync")
                next_status = time.monotonic() + 0.5
            if seen:
                return first, survivor, str(seen)
            time.sleep(0.01)
        ev.skipped = "no failback resync seen within 60 s"
        return None

    def _resync_kill(self, ev: Event) -> None:
        """Power-kill the survivor during the failback resync; boot it again 0.5-2 s later."""
        found = self.failback_resync(ev)
        if found is None:
            return
        first, survivor, seen = found
        self.kill(survivor)
        ev.start = time.monotonic()
        delay = self.rng.uniform(0.5, 2.0)
        time.sleep(delay)
        self.boot(survivor)
        ev.detail.append(f"{first} killed and booted; {survivor} power-killed during the resync "
                         f"({seen}), booted after {delay:.1f} s")

    def _sb_swap(self, ev: Event) -> None:
        """A frozen primary (a takeover, then both primary), the pair left to sort it out, then a swap."""
        p = self._primary(ev)
        if p is None:
            return
        self.freeze(p, 8.0)
        seconds, _ = chaos_watch.wait_converged(self.paths, 60.0, self.app.module)
        ev.detail.append(f"froze {p} 8 s; " + (f"converged {seconds:.1f} s after" if seconds is not None
                                                  else "not converged within 60 s"))
        ev.node = self._primary(ev)
        if ev.node is not None:
            ev.start = time.monotonic()
            self.swap(ev.node, ev)

    def _partition(self, ev: Event, cuts: list[tuple[str, str]]) -> None:
        hold = self.rng.uniform(3.0, 12.0)
        ev.start = time.monotonic()
        for a, b in cuts:
            control.cut(self.paths, a, b)
            time.sleep(self.rng.uniform(0.5, 3.0) if len(cuts) > 1 else 0)
        time.sleep(hold)
        control.heal(self.paths)
        ev.detail.append(f"cut {', '.join(f'{a}|{b}' for a, b in cuts)}; healed after {hold:.1f} s")

    def _part_peers(self, ev: Event) -> None:
        self._partition(ev, [("node1", "node2")])

    def _part_peers_witness(self, ev: Event) -> None:
        ev.node = self._primary(ev)
        if ev.node is not None:
            self._partition(ev, [("node1", "node2"), (ev.node, WITNESS)])

    def _part_second_witness(self, ev: Event) -> None:
        ev.node = self._secondary(ev)
        if ev.node is not None:
            self._partition(ev, [(ev.node, WITNESS)])
