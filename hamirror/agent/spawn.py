"""Start ``hamirror mirror`` daemons by fork from the agent's spawner (``hamirror mirror spawner``).

The spawner is a process with the daemons' modules already imported: a mount or receiver forked
from it costs a few milliseconds of CPU instead of ~0.15 s for a new interpreter and its imports
(``hamirror/cli/spawner.py`` says why that matters: 50 modules at once). The agent starts it on
first use and talks to it over a socket pair; it ends when the agent does. Whatever goes wrong
with it (it cannot start, it died, it refused a request), the caller starts a new process as
before: the spawner only ever makes a start cheaper, never possible or not.
"""

from __future__ import annotations

import array
import json
import logging
import os
import select
import signal
import socket
import subprocess
import threading
import time

log = logging.getLogger(__name__)

ROOM = 1024          # bytes of command line the spawner keeps for its children's (a mount's is ~300)


class SpawnError(Exception):
    """The spawner could not start the command (the caller starts a new process instead)."""


class Child:
    """A command forked by the spawner: not our child, so its exit status comes on a pipe that
    only it holds (it writes the status as it ends; nothing, if it was killed)."""

    def __init__(self, pid: int, status_fd: int) -> None:
        self.pid, self._status = pid, status_fd
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.wait(0.0)

    def wait(self, timeout: float) -> int | None:
        """The exit status once the child ended within ``timeout`` (-1: killed), else None."""
        if self.returncode is None and self._status >= 0:
            ready, _, _ = select.select([self._status], [], [], max(timeout, 0.0))
            if ready:
                text = os.read(self._status, 64)
                self.returncode = int(text) if text.strip().lstrip(b"-").isdigit() else -1
                self.close()
        return self.returncode

    def close(self) -> None:
        """Stop waiting for it (a daemon that keeps running)."""
        if self._status >= 0:
            os.close(self._status)
            self._status = -1


class Spawner:
    """The agent's side of the spawner: one per agent, shared by every module's data path."""

    def __init__(self, command: list[str]) -> None:
        self.command = command
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen | None = None

    def _connected(self) -> socket.socket:
        if self._sock is not None and self._proc is not None and self._proc.poll() is None:
            return self._sock
        self.close()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            # --room: the children's command lines are written over the spawner's (cli/spawner.py).
            self._proc = subprocess.Popen([*self.command, "mirror", "spawner", "--fd", str(theirs.fileno()),
                                           "--room", "." * ROOM],
                                          pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                                          start_new_session=True)
        except OSError as exc:
            ours.close()
            raise SpawnError(f"cannot start the spawner: {exc}") from exc
        finally:
            theirs.close()
        log.info("spawner started (pid %d): mounts and receivers start by fork", self._proc.pid)
        self._sock = ours
        return ours

    def start(self, args: list[str], stdout: int, stderr: int) -> Child:
        """``hamirror ARGS`` in its own session, stdin from /dev/null, output to the descriptors given."""
        read_end, write_end = os.pipe()
        devnull = os.open(os.devnull, os.O_RDONLY)
        try:
            with self._lock:
                sock = self._connected()
                try:
                    sock.sendmsg([json.dumps({"argv": args}).encode()],
                                 [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                   array.array("i", [devnull, stdout, stderr, write_end]))])
                    answer = json.loads(sock.recv(65536) or b"{}")
                except (OSError, ValueError) as exc:
                    self.close()
                    raise SpawnError(f"the spawner did not answer: {exc}") from exc
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(devnull)
            os.close(write_end)
        if not isinstance(answer.get("pid"), int):
            os.close(read_end)
            raise SpawnError(f"the spawner refused: {answer.get('error')}")
        return Child(answer["pid"], read_end)

    def run(self, args: list[str], timeout: float) -> tuple[int, str]:
        """``hamirror ARGS`` to the end: its exit status and its output (stdout and stderr together).
        ``subprocess.TimeoutExpired`` after ``timeout`` (the child is killed), as ``subprocess.run``."""
        out_r, out_w = os.pipe()
        try:
            child = self.start(args, out_w, out_w)
        except BaseException:
            os.close(out_r)
            raise
        finally:
            os.close(out_w)
        deadline = time.monotonic() + timeout
        output = b""
        try:
            while True:               # until every holder of the output closed it (the child ended)
                ready, _, _ = select.select([out_r], [], [], max(deadline - time.monotonic(), 0.0))
                if not ready:
                    break
                chunk = os.read(out_r, 65536)
                if not chunk:
                    break
                output += chunk
            code = child.wait(max(deadline - time.monotonic(), 0.0))
            if code is None:
                try:
                    os.kill(child.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                raise subprocess.TimeoutExpired(args, timeout, output)
            return code, output.decode(errors="replace")
        finally:
            os.close(out_r)
            child.close()

    def close(self) -> None:
        """Let the spawner go (it exits when its end of the socket closes)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._proc is not None:
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
