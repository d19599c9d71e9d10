"""The replicated mount and the receiver of one module, as separate long-lived processes.

The agent never holds the data path in its own process: a mount (``hamirror mirror mount``,
detached) and a receiver (``hamirror mirror receive``, started in its own session) survive an
agent restart, and a restarted agent *adopts* them (found through their status and pid files)
instead of restarting them, so the application keeps running (design §2, docs/admin-guide.md).

One mount or receiver per replicated directory ``i``: state directory
``<state_dir>/modules/<module>/<i>``, replication port ``replication_port + i``. Every method
blocks (the executor calls them from a worker thread, never from the event loop).

A *hung* mount daemon (stopped, deadlocked) is alive but serves nobody: the application's calls
and the agent's own requests wait on it for ever, and its last ``status.json`` still says all is
well. A watchdog thread, started by the first look at the mounts, asks every mounted daemon for
its status each second; one that answers nothing for ``MOUNT_HUNG_AFTER`` seconds while its
process exists and its directory is mounted is SIGKILLed, and from then on it is a dead mount
like any other (the agent stops the application, detaches the mount and remounts from the
journal). It runs beside the ticks, so a stop_prim or a checker blocked on the hung mount does
not delay it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping

import psutil

from hamirror import durablefile
from hamirror.agent import spawn
from hamirror.config.cluster import ClusterConfig
from hamirror.config.module import ModuleConfig
from hamirror.fs.mount import MountError, is_fuse_mountpoint, unmount as fs_unmount
from hamirror.link import fencing, session
from hamirror.mirror import status as status_file
from hamirror.processes import boot_start, same_start

log = logging.getLogger(__name__)

HAMIRROR = [sys.executable, "-m", "hamirror"]
MOUNT_TIMEOUT = 60.0
FLUSH_TIMEOUT = 30.0
UNMOUNT_DRAIN = 30.0         # seconds a mount daemon may take to drain its link after an unmount
UNMOUNT_FORCE_WAIT = 2.0     # ... after a lazy (forced) unmount, before it is killed
RECEIVER_READY = 10.0        # seconds a new receiver may take to listen (its status file says so)
MOUNT_ANSWER = 2.0           # seconds one status request to a mount daemon may take
MOUNT_HUNG_AFTER = 5.0       # a mounted daemon that answered nothing for this long is hung: SIGKILL
WATCHDOG_INTERVAL = 1.0
TENURE_WAIT = 3.0            # seconds a mount joining its peer waits for this node's tenure (etcd)


_SPAWNER: spawn.Spawner | None = None    # one per agent, for every module (hamirror/agent/spawn.py)
_SPAWNER_LOCK = threading.Lock()


class DataPathError(Exception):
    """A data-path step failed; the message is for the operator's log."""


def link_engine(cluster: ClusterConfig, environ: Mapping[str, str] = os.environ) -> tuple[str, str]:
    """The engine this node's mounts and receivers start with, and where it comes from (for the
    log): ``$HAMIRROR_LINK_ENGINE`` in the agent's environment wins over the cluster file's
    ``[link] engine`` (an override for one node, e.g. a test); ValueError if it names no engine."""
    if session.ENGINE_ENV in environ:
        return (session.engine(environ[session.ENGINE_ENV]),
                f"${session.ENGINE_ENV} in the agent's environment (the cluster file says {cluster.link.engine})")
    return cluster.link.engine, f"[link] engine of {cluster.path} ({session.DEFAULT_ENGINE} when absent)"


def _alive(pid: int | None, create_time: float | None = None, started: float | None = None) -> bool:
    """The process runs (not a zombie) and, if given, started at ``create_time`` (wall clock) or
    ``started`` (seconds since boot, :func:`boot_start`), against pid reuse."""
    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        if create_time is not None and not same_start(proc, create_time, started):
            return False
        return proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, TypeError):     # TypeError: a damaged pid file's start
        return False


def _start_record(proc: psutil.Process) -> dict:
    """What a pid file records of a process's start: since boot (compared), and on the wall clock
    (what an older release compares, after a rollback)."""
    return {"create_time": proc.create_time(), "started": boot_start(proc)}


def _read_json(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


class DataPath:
    """Mount, receiver and mount-control requests for every replicated directory of a module."""

    def __init__(self, module: ModuleConfig, cluster: ClusterConfig, command: list[str] | None = None) -> None:
        self.module = module.name
        self.command = command or HAMIRROR
        local, peer = cluster.local_node, cluster.peer_node
        self.dirs = [d.path for d in module.directories]
        base = cluster.module_state_dir(module.name)
        self.dir_states = [os.path.join(base, str(i)) for i in range(len(self.dirs))]
        self.run_dir = cluster.module_run_dir(module.name)
        ports = [module.replication_port + i for i in range(len(self.dirs))]
        self.binds = [f"tcp://{local.replication_address}:{p}" for p in ports]
        self.peers = [f"tcp://{peer.replication_address}:{p}" for p in ports]
        self.keys_dir, self.peer_name = cluster.keys_dir, peer.name
        self.mode, self.peer_timeout = module.mode, module.peer_timeout
        self.fence_block = cluster.fence.block_timeout
        self.engine = link_engine(cluster)[0]   # passed as --engine: the spawner's environment may be older
        self._watchers: list = []
        self._silent_since: dict[int, float] = {}     # index -> when a mount first failed to answer
        self._watchdog: threading.Thread | None = None
        self._token: int | None = None          # the fencing token last recorded (record_fencing_token)
        self.holding = False                    # the last tick found this node holding a tenure
        self.numbered = cluster.quorum.etcd is not None   # a quorum service that numbers tenures
        if not self.numbered:
            # No quorum service that numbers tenures (any more): a token left by an earlier
            # configuration would fence a holder that has none.
            for state in self.dir_states:
                fencing.forget(state)

    def record_fencing_token(self, token: int | None) -> None:
        """This node's tenure token where its mounts send it from, and its receivers' floor raised
        to it (link/fencing.py); durable before the tick that acts on the tenure. Only on a change:
        a lapsed tenure (None) leaves the old token, which a newer holder's floor refuses."""
        if token is not None and token != self._token:
            self._record(token)
        self.holding = token is not None   # after the token: a waiting mount reads it next

    def _record(self, token: int) -> None:
        for state in self.dir_states:
            fencing.write(os.path.join(state, fencing.TOKEN_FILE), token)
            fencing.raise_floor(state, token)
        log.info("%s: fencing token %d recorded for the data path", self.module, token)
        self._token = token

    def wait_for_tenure(self, timeout: float = TENURE_WAIT) -> bool:
        """Before a mount that joins its peer, with etcd: wait (at most ``timeout``) until a tick
        found this node holding a tenure and recorded its token. A swap's hand-over promotes this
        node milliseconds after the old primary released the lease; a mount started before the
        claim went through sent this node's token of an earlier tenure, the old primary's
        receiver refused it as stale, and the swap waited 5 s for the retry (campaigns 4306-4307).
        Whether it holds one; without etcd, at once. Timed out, the mount goes as before."""
        deadline = time.monotonic() + timeout
        while self.numbered and not self.holding:
            if time.monotonic() >= deadline:
                log.warning("%s: no tenure of the quorum lease within %.1f s: mounting without waiting more",
                            self.module, timeout)
                return False
            time.sleep(0.02)
        return True

    # ----------------------------------------------------------------- stopped module

    def watch(self, enabled: bool) -> None:
        """While the module is stopped, record what changes in its directories (inotify)."""
        from hamirror.journal.journal import Journal
        from hamirror.journal.watcher import DirectoryWatcher

        if not enabled:
            for watcher, journal in self._watchers:
                watcher.stop()
                journal.close()
            self._watchers = []
            return
        if self._watchers or self.mount_pids():
            return
        for directory, state in zip(self.dirs, self.dir_states):
            if os.path.isdir(directory):
                os.makedirs(state, mode=0o700, exist_ok=True)
                journal = Journal(os.path.join(state, "journal.db"))
                self._watchers.append((DirectoryWatcher(directory, journal).start(), journal))

    # ----------------------------------------------------------------- mount

    def control(self, index: int, request: dict, timeout: float = 10.0) -> dict:
        """One request on the mount's control socket (``hamirror.fs.control``); its reply."""
        from hamirror.fs.control import ControlError, request as send
        try:
            return send(self.dir_states[index], request, timeout)
        except ControlError as exc:
            raise DataPathError(f"{self.dirs[index]}: {request.get('cmd')} failed: {exc}") from exc

    def mount_status(self, index: int) -> dict | None:
        """The live mount's status (state PRIM/ALONE/SYNCING/FENCED/REFUSED, resync), or None if
        not mounted (or its daemon is dead). A request that fails falls back on ``status.json``
        for a moment; the watchdog kills a daemon that stays silent (:meth:`check_hung`)."""
        self._start_watchdog()
        status = status_file.read(self.dir_states[index])
        if not status or status.get("role") == "receiver" or not _alive(status.get("pid")):
            return None
        try:
            live = self.control(index, {"cmd": "status"}, timeout=MOUNT_ANSWER).get("status")
            status = {**status, **live} if isinstance(live, dict) else status
        except DataPathError:
            pass
        return status if status.get("mounted") else None

    def mount_statuses(self) -> list[dict | None]:
        return [self.mount_status(i) for i in range(len(self.dirs))]

    def _start_watchdog(self) -> None:
        if self._watchdog is None:
            self._watchdog = threading.Thread(target=self._watch_hung, name=f"{self.module}-mount-watchdog",
                                              daemon=True)
            self._watchdog.start()

    def _watch_hung(self) -> None:
        while True:
            time.sleep(WATCHDOG_INTERVAL)
            for i in range(len(self.dirs)):
                try:
                    self.check_hung(i)
                except Exception:  # noqa: BLE001 - the watchdog must outlive any surprise
                    log.exception("%s: mount watchdog", self.module)

    def check_hung(self, index: int) -> bool:
        """Ask the mount of directory ``index`` for its status; SIGKILL its daemon if it has answered
        nothing for ``MOUNT_HUNG_AFTER`` seconds while alive and mounted. Whether it was killed."""
        status = status_file.read(self.dir_states[index]) or {}
        pid, directory = status.get("pid"), self.dirs[index]
        if (status.get("role") == "receiver" or not status.get("mounted") or not _alive(pid)
                or not _fuse_mounted(directory) or not _is_mount_daemon(pid, directory)):
            self._silent_since.pop(index, None)
            return False
        began = time.monotonic()
        if _answers(self.dir_states[index], MOUNT_ANSWER):
            self._silent_since.pop(index, None)
            return False
        since = self._silent_since.setdefault(index, began)
        if time.monotonic() - since < MOUNT_HUNG_AFTER:
            return False
        log.error("%s: the mount daemon of %s (pid %d) has not answered for %.0f s: hung, killed (SIGKILL); "
                  "the dead-mount repair follows", self.module, directory, pid, time.monotonic() - since)
        os.kill(pid, signal.SIGKILL)
        _wait_dead(pid, 5.0)
        self._silent_since.pop(index, None)
        return True

    def dead_mounts(self) -> list[int]:
        """Directories left as a FUSE mount point whose daemon is gone (ENOTCONN for everyone)."""
        return [i for i, d in enumerate(self.dirs) if is_fuse_mountpoint(d) and self.mount_status(i) is None]

    def clean_dead_mounts(self) -> None:
        """Detach every dead FUSE mount (lazily: open files of a dead mount cannot be closed for
        their owners) and end a leftover daemon, so the directory is usable again."""
        for i in self.dead_mounts():
            status = status_file.read(self.dir_states[i]) or {}
            if status.get("role") != "receiver" and _alive(status.get("pid")) \
                    and _is_mount_daemon(status["pid"], self.dirs[i]):
                os.kill(int(status["pid"]), signal.SIGKILL)   # alive but not answering: hung
            result = subprocess.run(["fusermount3", "-u", "-z", self.dirs[i]], capture_output=True, text=True)
            if result.returncode != 0 and is_fuse_mountpoint(self.dirs[i]):
                raise DataPathError(f"cannot detach the dead mount on {self.dirs[i]}: {result.stderr.strip()}")
            log.warning("%s: detached the dead mount on %s", self.module, self.dirs[i])

    def mount(self, alone: bool) -> None:
        """Mount every directory (``--alone``: no peer, a new generation); adopt live mounts.
        Without ``--alone`` the mount resumes the state its journal records (PRIM, ALONE, or
        FENCED after a crash while streaming). Mounts fence: a lost peer blocks writes until
        the agent's verdict, at most ``[fence] block_timeout``."""
        self.clean_dead_mounts()
        for i, directory in enumerate(self.dirs):
            if self.mount_status(i) is not None:
                log.info("%s: mount of %s already running: adopted", self.module, directory)
                continue
            target = ["--alone"] if alone else ["--peer", self.peers[i], "--peer-key", self.peer_name]
            cmd = [*self.command, "mirror", "mount", "--dir", directory, *target, "--keys", self.keys_dir,
                   "--state-dir", self.dir_states[i], "--mode", self.mode, "--timeout", f"{self.peer_timeout:g}",
                   "--fence", f"{self.fence_block:g}", "--engine", self.engine]
            os.makedirs(self.dir_states[i], mode=0o700, exist_ok=True)
            code, output = self._run(cmd)
            if code != 0:
                raise DataPathError(f"mount of {directory} failed: {output.strip()}")
            log.info("%s: mounted %s (%s)", self.module, directory, "ALONE" if alone else "PRIM")

    def unmount(self, force: bool) -> None:
        """Unmount every directory and wait for each daemon to exit (it drains the link first);
        ``force``: lazy, and the daemon is killed if it lingers. Dead mounts are detached either way.

        ``fusermount3`` is called here rather than through ``hamirror mirror umount``: that is one
        Python start-up less, and a daemon counts as gone once it is a zombie (a daemon detached
        from its mount command is reaped by init, which may take a second or more)."""
        self.clean_dead_mounts()
        for i, directory in enumerate(self.dirs):
            status = self.mount_status(i)
            if status is None:
                continue
            pid = status.get("pid")
            try:
                fs_unmount(directory, lazy=force)
            except MountError as exc:
                if not force:
                    raise DataPathError(f"unmount of {directory} failed: {exc}") from exc
                log.warning("%s: lazy unmount of %s failed: %s", self.module, directory, exc)
            if not _wait_dead(pid, UNMOUNT_FORCE_WAIT if force else UNMOUNT_DRAIN):
                if not force:
                    raise DataPathError(f"unmount of {directory}: the daemon (pid {pid}) is still draining after "
                                        f"{UNMOUNT_DRAIN:g} s")
                os.kill(pid, signal.SIGKILL)
                _wait_dead(pid, 5.0)
            log.info("%s: unmounted %s%s", self.module, directory, " (forced)" if force else "")

    def set_alone(self, reason: str) -> None:
        """The agent's verdict "the peer cannot be primary": every mount goes ALONE now (blocked
        writes succeed; leaving a live mirror starts a new generation)."""
        for i in range(len(self.dirs)):
            if self.mount_status(i) is not None:
                self.control(i, {"cmd": "alone", "reason": reason})

    def refuse(self, reason: str) -> None:
        """The agent's verdict "the peer may be primary": blocked and later writes fail (EIO)."""
        for i in range(len(self.dirs)):
            if self.mount_status(i) is not None:
                self.control(i, {"cmd": "refuse", "reason": reason})

    def resync(self, full: bool) -> None:
        """Ask every mount to reconnect to the peer's receiver and run the online resync."""
        for i in range(len(self.dirs)):
            # keep_aside: whatever the peer changed on its own (split brain) goes to a dated folder
            # beside its directory before being overwritten, never just deleted.
            self.control(i, {"cmd": "resync", "peer": self.peers[i], "peer_key": self.peer_name, "full": full,
                             "keep_aside": True})

    def flush(self, timeout: float = FLUSH_TIMEOUT) -> None:
        """Return once every write in flight is acknowledged by the peer."""
        for i in range(len(self.dirs)):
            if self.mount_status(i) is not None:
                self.control(i, {"cmd": "flush", "timeout": timeout}, timeout + 5)

    def mount_pids(self) -> set[int]:
        pids = set()
        for i in range(len(self.dirs)):
            status = status_file.read(self.dir_states[i]) or {}
            if status.get("pid"):
                pids.add(int(status["pid"]))
        return pids

    # ----------------------------------------------------------------- receiver

    def _receiver_file(self, index: int) -> str:
        return os.path.join(self.run_dir, f"receiver-{index}.json")

    def receiver_pid(self, index: int) -> int | None:
        """The pid of this directory's live receiver, or None."""
        info = _read_json(self._receiver_file(index)) or {}
        pid = info.get("pid")
        return pid if _alive(pid, info.get("create_time"), info.get("started")) else None

    def receivers_alive(self) -> bool:
        return all(self.receiver_pid(i) is not None for i in range(len(self.dirs)))

    def receiver_status(self, index: int) -> dict | None:
        status = status_file.read(self.dir_states[index])
        return status if status and status.get("role") == "receiver" and self.receiver_pid(index) else None

    def start_receivers(self, wait: bool = True) -> None:
        """Start a receiver per directory (own session, log in the state dir); adopt live ones.
        ``wait``: until each listens. Without it, a receiver that exits at once is started again
        by the next tick (the agent restarts a SECOND's or WAIT's missing receiver)."""
        os.makedirs(self.run_dir, mode=0o700, exist_ok=True)
        self.clean_dead_mounts()
        for i, directory in enumerate(self.dirs):
            if self.receiver_pid(i) is not None or self._adopt_receiver(i):
                continue
            os.makedirs(self.dir_states[i], mode=0o700, exist_ok=True)
            os.makedirs(directory, exist_ok=True)
            cmd = [*self.command, "mirror", "receive", "--dir", directory, "--bind", self.binds[i],
                   "--keys", self.keys_dir, "--state-dir", self.dir_states[i], "--engine", self.engine]
            with open(os.path.join(self.dir_states[i], "receiver.log"), "ab") as out:
                proc = self._start(cmd, out.fileno())
            try:
                if wait:
                    self._wait_listening(i, proc)
                info = {"pid": proc.pid, **_start_record(psutil.Process(proc.pid)), "command": cmd}
            finally:
                if isinstance(proc, spawn.Child):
                    proc.close()
            durablefile.replace(self._receiver_file(i), json.dumps(info), 0o666, durable=False)
            log.info("%s: receiver for %s started (pid %d) on %s, link engine %s", self.module, directory, proc.pid,
                     self.binds[i], self.engine)

    def _adopt_receiver(self, index: int) -> bool:
        """A receiver that runs for this directory though its pid file does not say so (the file
        lost, or its check failed for a live process: campaign 4003): adopt it rather than start
        another, which would find the log's lock held and exit, every tick. Recognised by its
        status file (its own pid, running) and its command line (a receiver of this state dir)."""
        status = status_file.read(self.dir_states[index]) or {}
        pid = status.get("pid")
        if status.get("role") != "receiver" or not status.get("running") or not isinstance(pid, int) \
                or not _alive(pid):
            return False
        try:
            proc = psutil.Process(pid)
            argv = [word for word in proc.cmdline() if word]
            info = {"pid": pid, **_start_record(proc), "command": argv}
        except psutil.Error:
            return False
        if "receive" not in argv or self.dir_states[index] not in argv:
            return False
        durablefile.replace(self._receiver_file(index), json.dumps(info), 0o666, durable=False)
        log.warning("%s: receiver for %s (pid %d) runs though its pid file did not say so: adopted",
                    self.module, self.dirs[index], pid)
        return True

    def _run(self, cmd: list[str]) -> tuple[int, str]:
        """A ``hamirror`` command to its end (forked by the spawner if it can): status, output."""
        spawner = self._spawner(cmd)
        if spawner is not None:
            try:
                return spawner.run(cmd[len(self.command):], MOUNT_TIMEOUT)
            except spawn.SpawnError as exc:
                log.warning("%s: %s: starting a new process", self.module, exc)
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=MOUNT_TIMEOUT, stdin=subprocess.DEVNULL)
        return result.returncode, result.stderr or result.stdout

    def _start(self, cmd: list[str], out: int) -> subprocess.Popen | spawn.Child:
        """A ``hamirror`` daemon in its own session, output to ``out`` (forked by the spawner if it can)."""
        spawner = self._spawner(cmd)
        if spawner is not None:
            try:
                return spawner.start(cmd[len(self.command):], out, out)
            except spawn.SpawnError as exc:
                log.warning("%s: %s: starting a new process", self.module, exc)
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)

    def _spawner(self, cmd: list[str]) -> spawn.Spawner | None:
        """The agent's spawner, for the ``hamirror`` of this interpreter only (a test's own command runs as given)."""
        global _SPAWNER
        if self.command != HAMIRROR or cmd[:len(HAMIRROR)] != HAMIRROR:
            return None
        with _SPAWNER_LOCK:
            if _SPAWNER is None:
                _SPAWNER = spawn.Spawner(HAMIRROR)
            return _SPAWNER

    def _wait_listening(self, index: int, proc: subprocess.Popen | spawn.Child) -> None:
        """Until the new receiver listens (it writes its status file once bound), so the peer's
        mount finds it; an exit meanwhile (address in use, bad keys...) is an error."""
        deadline = time.monotonic() + RECEIVER_READY
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise DataPathError(f"receiver for {self.dirs[index]} exited with {proc.returncode}; "
                                    f"see {self.dir_states[index]}/receiver.log")
            status = status_file.read(self.dir_states[index]) or {}
            if status.get("role") == "receiver" and status.get("pid") == proc.pid:
                return
            time.sleep(0.01)
        log.warning("%s: receiver for %s (pid %d) not listening after %g s: going on", self.module,
                    self.dirs[index], proc.pid, RECEIVER_READY)

    def stop_receivers(self, timeout: float = 10.0) -> None:
        """TERM every receiver, KILL after ``timeout``; wait until gone."""
        for i in range(len(self.dirs)):
            pid = self.receiver_pid(i)
            if pid is None:
                continue
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.01)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
            _wait_dead(pid, 5.0)
            _remove(self._receiver_file(i))
            log.info("%s: receiver %d stopped (pid %d)", self.module, i, pid)


def _answers(state_dir: str, timeout: float) -> bool:
    """The mount's control socket answers a status request (any answer, even an error)."""
    from hamirror.fs.control import SOCKET_NAME
    from hamirror.localsock import exchange
    try:
        exchange(os.path.join(state_dir, SOCKET_NAME), {"cmd": "status"}, timeout)
        return True
    except OSError:
        return False


def _fuse_mounted(directory: str) -> bool:
    """A FUSE mount sits on ``directory`` in this mount namespace, read from the mount table only
    (a stat of the directory would wait on a hung daemon)."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            for line in f:
                fields, _, tail = line.partition(" - ")
                parts = fields.split()
                if len(parts) > 4 and parts[4].replace("\\040", " ") == directory and tail.startswith("fuse"):
                    return True
    except OSError:
        pass
    return False


def _is_mount_daemon(pid: int, directory: str) -> bool:
    """``pid`` is a ``mirror mount`` of ``directory`` (not a process that reused a dead daemon's pid)."""
    try:
        cmdline = psutil.Process(pid).cmdline()
    except psutil.Error:
        return False
    return "mount" in cmdline and directory in cmdline


def _wait_dead(pid: int, timeout: float) -> bool:
    """Until ``pid`` has exited (a zombie counts: a receiver adopted from an earlier agent, or a
    detached mount daemon, is not our child, and whoever reaps it may take seconds, which a
    takeover or a swap must not wait for). Whether it exited within ``timeout``."""
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        os.waitpid(pid, os.WNOHANG)          # ours: reap it now
    except ChildProcessError:
        pass
    return not _alive(pid)


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
