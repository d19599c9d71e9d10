"""``hamirror reload`` and SIGHUP: read the configuration again and apply what can change live.

The new configuration is checked first, with every check of ``hamirror config check``; a bad one
is refused whole (file, key, problem) and the agent goes on with the one it runs: it never dies
on a configuration. Then, one module at a time (:mod:`hamirror.config.diff` says what changed):

- a module removed is stopped here through the decision, in the order of ``hamirror stop``
  (stop_prim, VIP removed, flush, unmount; or stop_second and the receiver stopped), checked
  stopped (no mount, no receiver, no VIP), dropped from the agent, and its state removed (its
  ``agent.json`` and journals under ``state_dir``, its ``run_dir``); its data stays where it is;
- a module added gets its runner, which joins as a start does: WAIT, then its role;
- a module changed gets its live keys: the VIP (on a primary the application is restarted in
  place around it: stop_prim, old VIP removed, new VIP added, start_prim; the data path is
  untouched), checkers, scripts' timeouts and [vars], restart and failover limits, the default
  primary. Its data-path keys are applied only when the module is stopped
  here (its runner is then rebuilt); otherwise they are named as waiting for a data-path restart.
- cluster file keys are named as waiting for an agent restart.

Reloads run one at a time; the report (:meth:`Report.to_json`) is the control socket's answer
and goes to the event timeline.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import shutil
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hamirror.agent import agreement
from hamirror.agent.executor import ActionFailed
from hamirror.agent.module_runner import ModuleRunner
from hamirror.cluster import actions as a
from hamirror.cluster.states import NodeState
from hamirror.cluster.view import Command
from hamirror.config import diff
from hamirror.config.cluster import ClusterConfig
from hamirror.config.errors import ConfigError
from hamirror.config.loader import validate
from hamirror.config.module import ModuleConfig
from hamirror.fs.mount import is_fuse_mountpoint

if TYPE_CHECKING:
    from hamirror.agent.runtime import Agent

log = logging.getLogger(__name__)
S = NodeState
STOP_TIMEOUT = 600.0       # seconds a removed module's stop may take (its scripts have their own timeout)
Build = Callable[[ModuleConfig], ModuleRunner]
Checks = Callable[[ClusterConfig], list[ConfigError]]


@dataclasses.dataclass
class Report:
    """What a reload did: refused (``errors``), or what it applied, left for later, or failed."""

    errors: list[ConfigError] = dataclasses.field(default_factory=list)
    added: list[str] = dataclasses.field(default_factory=list)
    removed: list[str] = dataclasses.field(default_factory=list)
    changed: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    not_applied: list[dict] = dataclasses.field(default_factory=list)
    failed: list[dict] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and not self.failed

    def wait(self, module: str | None, change: diff.Change) -> None:
        self.not_applied.append({"module": module, "key": change.key, "needs": change.needs,
                                 "text": f"{module + ': ' if module else ''}{change.text()}: needs an {change.needs}"})

    def fail(self, module: str, error: str) -> None:
        self.failed.append({"module": module, "error": error})

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "refused": bool(self.errors),
                "errors": [{"file": e.file, "key": e.key, "problem": e.problem, "text": str(e)} for e in self.errors],
                "added": self.added, "removed": self.removed, "changed": self.changed,
                "not_applied": self.not_applied, "failed": self.failed}

    def summary(self) -> str:
        """One line for the log and the timeline."""
        if self.errors:
            return (f"reload refused, the running configuration is kept: {len(self.errors)} problem(s); "
                    f"first: {self.errors[0]}")
        parts = [f"{what} {', '.join(names)}" for what, names in
                 (("added", self.added), ("removed", self.removed), ("changed", list(self.changed))) if names]
        parts += [f"not applied: {item['text']}" for item in self.not_applied]
        parts += [f"failed: {item['module']}: {item['error']}" for item in self.failed]
        return "reload: " + ("; ".join(parts) if parts else "nothing changed")


class Reloader:
    """Applies a new configuration to a running :class:`~hamirror.agent.runtime.Agent`.

    ``build`` makes a runner from a module's configuration (the agent's own builder); ``checks``
    adds the checks ``config check`` runs beyond :func:`validate` (the secrets: the CLI's)."""

    def __init__(self, agent: Agent, build: Build, checks: Checks = lambda cluster: []) -> None:
        self.agent, self.build, self.checks = agent, build, checks
        self._lock = asyncio.Lock()

    async def reload(self, why: str, moved: dict[str, str] | None = None) -> dict[str, Any]:
        """Check, then apply; never raises (a reload's failure is in its report). ``moved``: module
        name -> where ``hamirror module remove`` put its folder (under ``modules_dir/.removed``),
        whose scripts stop it."""
        async with self._lock:
            report = Report()
            try:
                await self._reload(report, moved or {})
            except Exception as exc:  # noqa: BLE001 - a reload must never stop the agent
                log.exception("reload failed")
                report.fail("-", f"unexpected error: {exc}")
        text = f"{report.summary()} ({why})"
        (log.info if report.ok else log.error)("%s", text)
        self.agent.events.add("reload", text, ok=report.ok)
        return report.to_json()

    async def _reload(self, report: Report, moved: dict[str, str]) -> None:
        agent = self.agent
        result = await asyncio.to_thread(validate, agent.cluster.path)
        report.errors = list(result.errors)
        if result.cluster is not None and not report.errors:
            report.errors += await asyncio.to_thread(self.checks, result.cluster)
        if report.errors:
            return
        assert result.cluster is not None
        plan = diff.plan(agent.cluster, agent.modules, result.cluster, result.modules)
        running = {m.name: m for m in agent.modules}
        new = {m.name: m for m in result.modules}
        for name in plan.removed:
            if await self._remove(running[name], moved.get(name), report):
                del running[name]
        for name, changes in plan.changed.items():
            running[name] = await self._change(running[name], new[name], changes, report)
        for name in plan.added:
            if await self._add(new[name], report):
                running[name] = new[name]
        for change in plan.cluster:
            report.wait(None, change)
        agent.modules = sorted(running.values(), key=lambda m: m.name)
        # The peer compares what runs here now (hamirror/agent/agreement.py).
        digests = await asyncio.to_thread(agreement.digests_for, agent.cluster, agent.modules, agent.heartbeat.key)
        agent.agreement.update(digests)
        agent.heartbeat.digests = digests

    # ----------------------------------------------------------------- added, removed

    async def _add(self, module: ModuleConfig, report: Report) -> bool:
        try:
            runner = await asyncio.to_thread(self.build, module)
            self.agent.adopt(runner)
            await runner.attach()
        except Exception as exc:  # noqa: BLE001 - one module's failure must not stop the others
            log.exception("%s: could not add the module", module.name)
            self.agent.drop(module.name)
            report.fail(module.name, f"could not add the module: {exc}")
            return False
        report.added.append(module.name)
        self.agent.wakeup.set()
        return True

    async def _remove(self, module: ModuleConfig, moved: str | None, report: Report) -> bool:
        """Stop the module here as ``hamirror stop`` does, check it stopped, drop it, clean its state."""
        name, runner = module.name, self.agent.runners[module.name]
        await _idle(runner)
        if runner.state is not S.STOP:
            scripts = runner.executor.scripts
            aside = os.path.join(self.agent.cluster.modules_dir, ".removed", "")
            if moved is not None and os.path.normpath(moved).startswith(aside) and os.path.isdir(moved):
                # The stop scripts are where `module remove` moved the folder.
                runner.executor.scripts = (await asyncio.to_thread(
                    self.build, dataclasses.replace(module, folder=os.path.normpath(moved)))).executor.scripts
            elif missing := [s for s in ("stop_prim", "stop_second") if not os.path.isfile(module.script_path(s))]:
                report.fail(name, f"not removed: {module.folder} is gone, and its {' and '.join(missing)} with it: "
                                  f"put the folder back and use `hamirror module remove {name}`, or stop the module "
                                  f"first (`hamirror forcestop {name}` needs no script), then reload")
                return False
            error = await self._stop(runner)
            if error is not None:
                runner.executor.scripts = scripts     # `module remove` puts the folder back
                report.fail(name, f"not removed: {error}")
                return False
        left = await asyncio.to_thread(leftovers, runner)
        if left:
            report.fail(name, f"not removed: stopped, but {', '.join(left)}")
            return False
        await asyncio.to_thread(runner.datapath.watch, False)
        self.agent.drop(name)
        await asyncio.to_thread(clean_state, self.agent.cluster, name)
        report.removed.append(name)
        return True

    @staticmethod
    async def _stop(runner: ModuleRunner) -> str | None:
        """``hamirror stop`` through the decision (the safe order); None once STOP, else why not."""
        log.warning("%s: removed from the configuration: stopping it (%s)", runner.name, runner.state.value)
        try:
            outcome = await asyncio.wait_for(runner.submit(Command.STOP), STOP_TIMEOUT)
        except asyncio.TimeoutError:
            return f"its stop did not end within {STOP_TIMEOUT:g} s"
        if outcome.ok and runner.state is S.STOP:
            return None
        reason = outcome.error or "; ".join(outcome.warnings) or f"still {runner.state.value}"
        return (f"stop failed: {reason}; it stays configured (the agent retries the stop as after "
                "`hamirror stop`): remove it again once the cause is fixed")

    # ----------------------------------------------------------------- changed

    async def _change(self, old: ModuleConfig, new: ModuleConfig, changes: tuple[diff.Change, ...],
                      report: Report) -> ModuleConfig:
        """Apply the live keys; the data-path keys too when the module is stopped here. Returns
        the module as it now runs."""
        runner = self.agent.runners[old.name]
        pending = [c for c in changes if not c.live]
        await _idle(runner)
        if pending and runner.state is S.STOP and runner.task is None:
            # Nothing of its data path runs: a runner built from the new configuration takes over.
            await asyncio.to_thread(runner.datapath.watch, False)
            if await self._add(new, report):
                report.added.remove(new.name)
                report.changed[new.name] = [c.key for c in changes]
                return new
            self.agent.adopt(runner)           # the old runner goes on
            return old
        for change in pending:
            report.wait(new.name, change)
        target = diff.applied(old, new) if pending else new
        live = [c for c in changes if c.live]
        if live:
            moved, error = await self._apply_live(runner, target, {c.key.split(".")[0] for c in live})
            if error is not None:
                report.fail(new.name, error)
            if not moved:
                target = dataclasses.replace(target, vip=old.vip)
            report.changed[new.name] = [c.key for c in live if moved or not c.key.startswith("vip")]
        return target

    async def _apply_live(self, runner: ModuleRunner, module: ModuleConfig,
                          tables: set[str]) -> tuple[bool, str | None]:
        """Take the live parts from a runner built from ``module``; the VIP of a primary moves
        through :func:`move_vip`. Whether the VIP is the new one, and what failed if anything."""
        fresh = await asyncio.to_thread(self.build, module)
        runner.default_primary = fresh.default_primary
        runner.max_restarts, runner.window = fresh.max_restarts, fresh.window
        runner.failover_max, runner.failover_window = fresh.failover_max, fresh.failover_window
        if "checkers" in tables:
            self.agent.set_checkers(runner, fresh.checkers)
        executor = runner.executor
        if "vip" not in tables:
            executor.scripts = fresh.executor.scripts
            return True, None
        await _idle(runner)            # from here to the task's start, nothing awaits: no decision slips in
        if not runner.state.is_primary:
            executor.vip, executor.scripts = fresh.executor.vip, fresh.executor.scripts
            return True, None
        moved, error = await move_vip(runner, fresh.executor.vip, fresh.executor.scripts)
        self.agent.wakeup.set()
        if error is None:
            return True, None
        if moved:
            return True, f"VIP changed, but the application did not start: {error}; the agent starts it again"
        return False, f"VIP not changed: {error}; the module keeps its old VIP"


async def _idle(runner: ModuleRunner) -> None:
    """Wait until the runner has no action sequence running."""
    while runner.task is not None:
        await asyncio.wait([runner.task])


async def move_vip(runner: ModuleRunner, vip: Any, scripts: Any) -> tuple[bool, str | None]:
    """A primary's VIP changes: the application is restarted in place around it (it binds the
    VIP): stop_prim, old VIP removed, then the new VIP and scripts handed to the executor, new VIP
    added, start_prim. The data path is not touched. Runs as the runner's task, so no decision
    runs meanwhile. A failure before the hand-over keeps the old VIP and scripts; either way an
    application left stopped is started by the next decision (AddVip, start_prim: the repair
    rule), outside maintenance. Whether the new VIP is in place, and what failed if anything."""
    executor, state = runner.executor, runner.state
    stop, start = (a.RunScript("stop_prim"), a.RemoveVip()), (a.AddVip(), a.RunScript("start_prim"))
    moved = False

    async def move() -> str | None:
        nonlocal moved
        try:
            for action in stop:
                await asyncio.to_thread(executor.run, action, state)
            executor.vip, executor.scripts, moved = vip, scripts, True
            for action in start:
                await asyncio.to_thread(executor.run, action, state)
            return None
        except ActionFailed as exc:
            executor.app_stopped = True
            return str(exc)
        finally:
            runner.task = runner.transition = None
            runner.on_change()

    runner.transition = (state, stop + start)
    runner.task = task = asyncio.get_running_loop().create_task(move(), name=f"{runner.name}-reload-vip")
    error = await task
    return moved, error


def leftovers(runner: ModuleRunner) -> list[str]:
    """What of a stopped module still runs on this node (blocking)."""
    datapath, found = runner.datapath, []
    mounted = [d for d in datapath.dirs if is_fuse_mountpoint(d)]
    if mounted:
        found.append(f"{', '.join(mounted)} still mounted")
    if any(datapath.receiver_pid(i) is not None for i in range(len(datapath.dirs))):
        found.append("its receiver is still running")
    vip = runner.executor.vip
    if vip is not None and vip.present():
        found.append(f"its VIP {vip.ip} is still on this node")
    return found


def clean_state(cluster: ClusterConfig, name: str) -> None:
    """Remove a removed module's record, journals and run directory (blocking)."""
    for path in (cluster.module_state_dir(name), cluster.module_run_dir(name)):
        shutil.rmtree(path, ignore_errors=True)
