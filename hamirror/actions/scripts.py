"""Running a module's scripts: render the template, run it with bash, log, enforce the timeout.

Scripts run in their own session (process group), so a timeout kills the whole group: a script
that started a child and hangs on it must not leave the child running or block the agent. Their
output goes, with a header and the exit status, to ``<state_dir>/modules/<module>/scripts.log``,
the first place an operator looks when a failover did not start the application.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import tempfile
import time

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
             cwd: str | None = None) -> ScriptResult:
    """Run the rendered script ``text`` with bash; output appended to ``log_path``."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    fd, path = tempfile.mkstemp(prefix=f"hamirror-{name}-", suffix=".sh")
    start = time.monotonic()
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        with open(log_path, "ab") as out:
            out.write(f"--- {time.strftime('%F %T')} {name}\n".encode())
            out.flush()
            proc = subprocess.Popen(["bash", path], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
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
    """The four scripts of one module, rendered with this node's values at each run."""

    def __init__(self, module: ModuleConfig, cluster: ClusterConfig) -> None:
        self.module, self.cluster = module, cluster
        self.log_path = os.path.join(cluster.module_state_dir(module.name), "scripts.log")

    def run(self, name: str, state: str) -> ScriptResult:
        """Render ``name`` for the state being entered and run it; a template error is a failure."""
        try:
            text = render_script(self.module, self.cluster, name, state)
        except ConfigError as exc:
            log.error("script %s: %s", name, exc)
            return ScriptResult(name, False, None, False, 0.0, str(exc))
        env = dict(os.environ, HAMIRROR_MODULE=self.module.name, HAMIRROR_STATE=state)
        return run_text(name, text, self.log_path, self.module.scripts.timeout, env=env,
                        cwd=self.module.folder)
