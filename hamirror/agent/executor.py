"""Carry out a decision's actions: each action type maps to one data-path or resource call.

Runs in a worker thread (every call may block for seconds: scripts, mounts, flushes); the
runner stops at the first :class:`ActionFailed` and retries from there later. Every mapping is
idempotent, so a retried or re-attached sequence does no harm (a live mount is adopted, a VIP
already present is kept, a stopped receiver stays stopped).

``NewGeneration`` needs no work here: the mount starts a new generation in the journal itself
whenever it enters ALONE (``mount --alone``, or the ``alone`` control request), which is exactly
when the decision asks for one.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import psutil

from hamirror.actions.vip import renew_all
from hamirror.cluster import actions as a
from hamirror.cluster.states import NodeState

if TYPE_CHECKING:
    from hamirror.actions.scripts import ScriptResult

log = logging.getLogger(__name__)


class ActionFailed(Exception):
    """An action did not complete; the message says which and why."""


class NeedsDecision(ActionFailed):
    """Retrying the same sequence cannot help (e.g. start_prim without the VIP it binds): the
    runner drops it and decides again, so the decision restores VIP, mount and application together."""


class DataPathLike(Protocol):
    """What the executor needs of :class:`hamirror.agent.datapath.DataPath` (fakes in tests)."""

    dirs: list[str]
    dir_states: list[str]

    def start_receivers(self, wait: bool = True) -> None: ...
    def stop_receivers(self, timeout: float = 10.0) -> None: ...
    def mount(self, alone: bool) -> None: ...
    def unmount(self, force: bool) -> None: ...
    def set_alone(self, reason: str) -> None: ...
    def refuse(self, reason: str) -> None: ...
    def resync(self, full: bool) -> None: ...
    def flush(self) -> None: ...
    def mount_statuses(self) -> list[dict | None]: ...
    def mount_pids(self) -> set[int]: ...


class VipLike(Protocol):
    def present(self) -> bool: ...
    def add(self) -> None: ...
    def remove(self) -> None: ...


class ScriptsLike(Protocol):
    def run(self, name: str, state: str, writes_refused: bool = False) -> ScriptResult: ...   # stop_prim verified
    def kill_app(self) -> list[int]: ...        # SIGKILL the application's group


class FencerLike(Protocol):
    def run(self, takeover: bool = False) -> ScriptResult: ...


class JournalOps(Protocol):
    def mark_uptodate(self, value: bool) -> None: ...
    def forget_history(self) -> None: ...


def kill_app(dirs: list[str], spare: set[int]) -> list[int]:
    """SIGKILL every process whose cwd, executable or open files are under ``dirs`` (forcestop),
    except ``spare`` (the mount processes) and this process. Returns the pids killed."""
    prefixes = [d.rstrip("/") + "/" for d in dirs]
    spare = spare | {os.getpid()}

    def under(path: str | None) -> bool:
        return bool(path) and any(path == p[:-1] or path.startswith(p) for p in prefixes)

    killed = []
    for proc in psutil.process_iter():
        if proc.pid in spare:
            continue
        try:
            paths = [proc.cwd(), proc.exe()] + [f.path for f in proc.open_files()]
        except psutil.Error:
            continue
        if any(under(p) for p in paths):
            try:
                proc.send_signal(signal.SIGKILL)
                killed.append(proc.pid)
            except psutil.Error:
                pass
    return killed


class Executor:
    """Maps actions onto one module's data path, VIP, scripts and journal flags."""

    def __init__(self, module: str, datapath: DataPathLike, vip: VipLike | None, scripts: ScriptsLike,
                 journal: JournalOps, persist: Callable[[NodeState], None],
                 count_restart: Callable[[], None],
                 killer: Callable[[list[str], set[int]], list[int]] = kill_app,
                 fencer: FencerLike | None = None) -> None:
        self.module, self.datapath, self.vip, self.scripts = module, datapath, vip, scripts
        self.journal, self.persist, self.count_restart, self.killer = journal, persist, count_restart, killer
        self.fencer = fencer
        self.vip_held = False     # the VIP was added here and not removed since: keep its lease
        self.app_stopped = False  # a data-path repair stopped the application: start it once writable

    def run(self, action: a.Action, target: NodeState) -> None:
        """Carry out one action on the way to ``target``; ActionFailed on any failure."""
        handler = getattr(self, "_" + type(action).__name__, None)
        if handler is None:
            raise ActionFailed(f"no executor for {type(action).__name__}")
        try:
            handler(action, target)
        except ActionFailed:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure stops the sequence the same way
            raise ActionFailed(f"{describe(action)}: {exc}") from exc

    # One method per action type, named after it.

    def _Persist(self, action: a.Persist, target: NodeState) -> None:
        self.persist(action.state)

    def _StartReceiver(self, action: a.StartReceiver, target: NodeState) -> None:
        self.datapath.start_receivers(wait=action.listening)

    def _StopReceiver(self, action: a.StopReceiver, target: NodeState) -> None:
        self.datapath.stop_receivers(action.grace)

    def _MountReplicated(self, action: a.MountReplicated, target: NodeState) -> None:
        if action.peer_connected:
            self.datapath.wait_for_tenure()   # else the peer's receiver may refuse an earlier tenure
        self.datapath.mount(alone=not action.peer_connected)

    def _SetMirroring(self, action: a.SetMirroring, target: NodeState) -> None:
        if not action.enabled:
            self.datapath.set_alone("peer lost (heartbeats)")
            return
        # The mount switches itself to PRIM when the online resync ends; check it did.
        states = [s.get("state") if s else None for s in self.datapath.mount_statuses()]
        if any(state != "PRIM" for state in states):
            raise ActionFailed(f"mirroring not active after the resync (mount states: {states})")

    def _RefuseWrites(self, action: a.RefuseWrites, target: NodeState) -> None:
        self.datapath.refuse("this node is stepping down")

    def _Fence(self, action: a.Fence, target: NodeState) -> None:
        if self.fencer is None:
            raise ActionFailed("Fence: no [fence] script configured")
        result = self.fencer.run(takeover=action.takeover)
        if not result.ok:
            raise ActionFailed(f"fence script failed: {result.detail}")
        log.warning("%s: the peer was fenced", self.module)

    def _RemountDataPath(self, action: a.RemountDataPath, target: NodeState) -> None:
        """Stop the application, clean the dead mount, mount again from the journal. The
        application starts in a later decision, once the mount accepts writes (a mount that
        crashed while streaming comes back FENCED until the peer confirms it is stale)."""
        self.count_restart()
        log.warning("%s: a mount daemon died: stopping the application, remounting", self.module)
        self.app_stopped = True
        result = self.scripts.run("stop_prim", target.value)
        if not result.ok:   # it may fail on a dead mount: kill what still uses the directories
            self.killer(self.datapath.dirs, self.datapath.mount_pids())
        self.datapath.unmount(force=True)
        self.datapath.mount(alone=action.alone)

    def _AnnounceVip(self, action: a.AnnounceVip, target: NodeState) -> None:
        if self.vip is not None:
            self.vip.add()
            self.vip_held = True

    def renew_vip(self) -> bool:
        """Extend the VIP's kernel lease while this node holds it (called every tick); False when
        the lease had lapsed (the address is gone until a decision adds it again)."""
        result = renew_leases([self])[0]
        if isinstance(result, Exception):
            raise result
        return result

    def _Unmount(self, action: a.Unmount, target: NodeState) -> None:
        self.datapath.unmount(force=action.force)

    def _AddVip(self, action: a.AddVip, target: NodeState) -> None:
        if self.vip is not None:
            self.vip.add()
            self.vip_held = True

    def _RemoveVip(self, action: a.RemoveVip, target: NodeState) -> None:
        if self.vip is not None:
            self.vip_held = False
            self.vip.remove()

    def _RunScript(self, action: a.RunScript, target: NodeState) -> None:
        if action.name == "start_prim" and target.is_primary:
            self._vip_before_start()
        refused = action.name == "stop_prim" and self._writes_refused()
        result = self.scripts.run(action.name, target.value, writes_refused=refused)
        if not result.ok:
            raise ActionFailed(result.detail or f"{action.name} failed")
        if action.name in ("start_prim", "stop_prim"):
            self.app_stopped = False   # started, or stopped on purpose: nothing left to restart

    def _writes_refused(self) -> bool:
        """Whether a mount refuses writes now (a step-down refuses them before stop_prim): a clean
        shutdown cannot flush anything then, and MariaDB's waited out its whole stop_timeout
        (campaign 4213: 60 s without service). The script is told (HAMIRROR_WRITES_REFUSED)."""
        try:
            return any(status and status.get("state") == "REFUSED" for status in self.datapath.mount_statuses())
        except Exception:  # noqa: BLE001 - only a hint to the script: a clean stop is still bounded
            return False

    def _vip_before_start(self) -> None:
        """The application binds the VIP: without it, start_prim fails, and a retry of the same
        sequence fails for ever (the VIP was withdrawn after a stall meanwhile). Leave the start
        to a new decision, which adds the VIP first when this node still may serve."""
        if self.vip is not None and not self.vip.present():
            self.vip_held = False
            self.app_stopped = True
            raise NeedsDecision("RunScript(start_prim): the VIP is not on this node (withdrawn meanwhile): "
                                "the next decision adds it and starts the application")

    def _KillApp(self, action: a.KillApp, target: NodeState) -> None:
        killed = list(self.scripts.kill_app())
        killed += self.killer(self.datapath.dirs, self.datapath.mount_pids())   # outside the group: by hand
        log.warning("%s: forcestop killed %d process(es): %s", self.module, len(killed), killed)

    def _RestartApp(self, action: a.RestartApp, target: NodeState) -> None:
        if action.counted:
            self.count_restart()
        for name in ("stop_prim", "start_prim"):
            if name == "start_prim":
                self._vip_before_start()
            result = self.scripts.run(name, target.value)
            if not result.ok:
                raise ActionFailed(result.detail or f"{name} failed")
        self.app_stopped = False   # started again: nothing left for a later decision to start

    def _StartResync(self, action: a.StartResync, target: NodeState) -> None:
        self.datapath.resync(full=action.full)

    def _NewGeneration(self, action: a.NewGeneration, target: NodeState) -> None:
        log.info("%s: new generation (started by the mount as it enters ALONE)", self.module)

    def _ForgetHistory(self, action: a.ForgetHistory, target: NodeState) -> None:
        self.journal.forget_history()

    def _MarkUpToDate(self, action: a.MarkUpToDate, target: NodeState) -> None:
        self.journal.mark_uptodate(action.value)

    def _Flush(self, action: a.Flush, target: NodeState) -> None:
        self.datapath.flush()


def renew_leases(executors: list[Executor]) -> list[bool | Exception]:
    """:meth:`Executor.renew_vip` for many modules at once (:func:`~hamirror.actions.vip.renew_all`:
    one netlink exchange for every VIP held here); each result in order, a failure as its
    exception. A lapsed lease leaves the VIP to the next decision."""
    results: list[bool | Exception] = [True] * len(executors)
    held = [i for i, ex in enumerate(executors) if ex.vip is not None and ex.vip_held]
    renewed = renew_all([executors[i].vip for i in held]) if held else []
    for i, result in zip(held, renewed):
        results[i] = result
        if result is False:
            executors[i].vip_held = False
    return results


def describe(action: a.Action) -> str:
    """A short name for logs: ``RunScript(start_prim)``, ``MountReplicated(peer_connected=False)``."""
    if isinstance(action, a.RunScript):
        return f"RunScript({action.name})"
    if isinstance(action, a.Persist):
        return f"Persist({action.state.value})"
    return repr(action)
