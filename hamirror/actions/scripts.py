"""Running a module's scripts: render the template, run it with bash, log, enforce the timeout.

Scripts run in their own session (process group), so a timeout kills the whole group: a script
that started a child and hangs on it must not leave the child running or block the agent. Their
output goes, with a header and the exit status, to ``<state_dir>/modules/<module>/scripts.log``,
the first place an operator looks when a failover did not start the application.

The scripts run inside the module's application group (:mod:`hamirror.actions.appprocs`), so
every process they start is known; ``stop_prim`` is *verified*: once it returns (or is killed at
its timeout), whatever is left of the application gets SIGTERM, then SIGKILL after
``[scripts] kill_after`` seconds, and the stop succeeds only when none is left.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import tempfile
import time

from hamirror.actions import appprocs
from hamirror.config.cluster import ClusterConfig
from hamirror.config.errors import ConfigError
from hamirror.config.module import ModuleConfig
from hamirror.config.templates import render_script

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ScriptResult:
    """Outcome of one run: ``ok`` only for exit status 0 within the timeout."""

    name: str
    ok: bool
    returncode: int | None
    timed_out: bool
    seconds: float
    detail: str = ""


def run_text(name: str, text: str, log_path: str, timeout: float, env: dict[str, str] | None = None,
             cwd: str | None = None, group: appprocs.AppGroup | None = None) -> ScriptResult:
    """Run the rendered script ``text`` with bash (inside ``group``); output appended to ``log_path``."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    fd, path = tempfile.mkstemp(prefix=f"hamirror-{name}-", suffix=".sh")
    start = time.monotonic()
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        with open(log_path, "ab") as out:
            out.write(f"--- {time.strftime('%F %T')} {name}\n".encode())
            out.flush()
            argv = group.command(["bash", path]) if group is not None else ["bash", path]
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, close_fds=True, env=env, cwd=cwd or "/")
            try:
                code = proc.wait(timeout=timeout if timeout > 0 else None)
                timed_out = False
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                code, timed_out = None, True
            seconds = time.monotonic() - start
            verdict = f"killed after {timeout:g} s (timeout)" if timed_out else f"exit {code}"
            out.write(f"--- {name}: {verdict} in {seconds:.2f} s\n".encode())
    finally:
        os.unlink(path)
    ok = code == 0
    detail = "" if ok else f"{name} {verdict}; see {log_path}"
    (log.info if ok else log.error)("script %s: %s in %.2f s", name, verdict, seconds)
    return ScriptResult(name, ok, code, timed_out, seconds, detail)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the script's whole process group and reap the script."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


class ScriptRunner:
    """The four scripts of one module, rendered with this node's values at each run, run inside
    the application's group."""

    def __init__(self, module: ModuleConfig, cluster: ClusterConfig, group: appprocs.AppGroup | None = None) -> None:
        self.module, self.cluster = module, cluster
        self.log_path = os.path.join(cluster.module_state_dir(module.name), "scripts.log")
        if group is None:
            os.makedirs(cluster.state_dir, mode=0o700, exist_ok=True)
            group = appprocs.open_group(appprocs.instance_name(cluster.local_name, cluster.state_dir), module.name)
        self.group = group
        self.kill_after = module.scripts.kill_after

    def run(self, name: str, state: str, writes_refused: bool = False) -> ScriptResult:
        """Render ``name`` for the state being entered and run it; a template error is a failure.
        ``stop_prim`` succeeds only once no process of the application is left. ``writes_refused``:
        the mounts refuse writes (a step-down), so a clean shutdown cannot flush; the script sees
        ``HAMIRROR_WRITES_REFUSED=1`` and may stop the application at once."""
        env = dict(os.environ, HAMIRROR_MODULE=self.module.name, HAMIRROR_STATE=state, **self.group.env())
        if writes_refused:
            env["HAMIRROR_WRITES_REFUSED"] = "1"
        seen = self.group.pids() if name == "stop_prim" else set()
        try:
            text = render_script(self.module, self.cluster, name, state)
            result = run_text(name, text, self.log_path, self.module.scripts.timeout, env=env,
                              cwd=self.module.folder, group=self.group)
        except (ConfigError, appprocs.AppGroupError) as exc:
            log.error("script %s: %s", name, exc)
            result = ScriptResult(name, False, None, False, 0.0, str(exc))
        if name == "stop_prim":     # even one that could not run: the stop is still owed
            result = self._verified(result, seen)
        self.group.remove()          # only an empty group goes: a running application keeps its own
        return result

    def _verified(self, result: ScriptResult, seen: set[int]) -> ScriptResult:
        """After stop_prim: SIGTERM, then SIGKILL, whatever of the application is left. With a
        cgroup, that no process is left *is* the stop, whatever the script said; with only the
        process tree (which a process can leave), the script's failure stands. ``seen``: the members
        before the script ran, waited for until gone (one in the middle of its exit is not yet)."""
        swept = appprocs.sweep(self.group, self.kill_after, seen=seen)
        text = swept.text(self.kill_after)
        if swept.termed or swept.killed:
            self._note(f"stop_prim: {text} ({self.group.describe()})")
            log.warning("%s: after stop_prim, %s", self.module.name, text)
        if swept.left:
            return dataclasses.replace(result, ok=False, detail=f"stop_prim: {text}; see {self.log_path}")
        if not result.ok and self.group.complete:
            log.warning("%s: %s, but no process of the application is left: stopped", self.module.name, result.detail)
            self._note("stop_prim failed, but no process of the application is left: stopped")
            return dataclasses.replace(result, ok=True, detail=f"{result.detail}; no process left: stopped")
        return result

    def kill_app(self) -> list[int]:
        """``forcestop``: SIGKILL every process of the application at once; the pids killed."""
        swept = appprocs.sweep(self.group, 0.0, term=False)
        self._note(f"forcestop: {swept.text(0.0)} ({self.group.describe()})")
        self.group.remove()
        if swept.left:
            raise appprocs.AppGroupError(f"forcestop: {swept.text(0.0)}")
        return list(swept.killed)

    def _note(self, line: str) -> None:
        """One line in scripts.log, where the operator reads what the scripts did."""
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        with open(self.log_path, "a", encoding="utf-8") as out:
            out.write(f"--- {time.strftime('%F %T')} {line}\n")
