"""The agent's local control socket: ``<run_dir>/control.sock``, JSON lines, root only.

One request line, one answer line. The socket file is mode 0600 and each connection's peer is
checked with SO_PEERCRED (uid 0), so only root can stop or promote modules even if the run
directory's permissions are loosened. Requests:

- ``{"cmd": "status"}`` -> ``{"ok": true, "status": {...}}`` (the ``hamirror status --json`` document)
- ``{"cmd": "module", "module": NAME, "action": "start|stop|prim|second|swap|forcestop|restart"}``
  -> ``{"ok": bool, "state": ..., "warnings": [...], "error": ...}`` once the decision's actions ended
- ``{"cmd": "maintenance", "module": NAME, "on": bool}``, ``{"cmd": "clear", "module": NAME}``
  -> ``{"ok": bool, "state": ..., "maintenance": bool}`` at once (no decision involved)
- ``{"cmd": "verify", "module": NAME, "repair": bool, "timeout": SECONDS}`` -> the module command's keys
  plus ``"verify"``: the outcome, every out-of-sync range (:mod:`hamirror.agent.verify`)

Who sent a request (for the event timeline) is what the kernel says, not what the request says:
:func:`caller` gives the connection's SO_PEERCRED pid and uid, the login user behind them
(``/proc/PID/loginuid``, which sudo does not change) and where that login came from (the SSH
client address in the environment of the process or its parents, else its terminal).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import os
import pwd
from collections.abc import Awaitable, Callable, Iterator

import psutil

from hamirror.localsock import MAX_LINE, bind_private, exchange, peer_credentials

log = logging.getLogger(__name__)

SOCKET_NAME = "control.sock"
Handler = Callable[[dict], Awaitable[dict]]
_CALLER: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar("control_caller", default=None)
_ON_BEHALF: contextvars.ContextVar[dict | None] = contextvars.ContextVar("control_on_behalf", default=None)
NO_LOGIN = 4294967295        # /proc/PID/loginuid of a process outside any login session


def caller() -> dict | None:
    """Who sent the request being handled (inside a handler), or None outside one. Looked up
    only when asked: status requests, the most frequent, never need it."""
    given = _ON_BEHALF.get()
    if given is not None:
        return given
    creds = _CALLER.get()
    return describe_caller(*creds) if creds else None


@contextlib.contextmanager
def on_behalf_of(who: dict) -> Iterator[None]:
    """Requests handled inside the block come from ``who`` (the web console: its client's
    address), not from a process on the control socket."""
    token = _ON_BEHALF.set(who)
    try:
        yield
    finally:
        _ON_BEHALF.reset(token)


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def describe_caller(pid: int, uid: int) -> dict:
    """``{"pid", "uid", "user", "login", "from", "command"}`` for a peer process (best effort:
    a process that already exited keeps only its pid and uid)."""
    found: dict = {"pid": pid, "uid": uid, "user": _user(uid), "login": None, "from": "local", "command": None}
    try:
        proc = psutil.Process(pid)
        found["command"] = " ".join(proc.cmdline())[:200] or None
        with open(f"/proc/{pid}/loginuid", encoding="ascii") as f:
            login = int(f.read().strip() or NO_LOGIN)
        found["login"] = _user(login) if login != NO_LOGIN else None
        for process in (proc, *proc.parents()):
            env = process.environ()
            if env.get("SSH_CONNECTION") or env.get("SSH_CLIENT"):
                found["from"] = "ssh " + (env.get("SSH_CONNECTION") or env.get("SSH_CLIENT", "")).split()[0]
                break
        else:
            found["from"] = proc.terminal() or "local"
    except (psutil.Error, OSError, ValueError):
        pass
    return found


class AgentNotRunning(Exception):
    """No agent answers on the control socket."""


def socket_path(run_dir: str) -> str:
    return os.path.join(run_dir, SOCKET_NAME)


class ControlServer:
    """Serves the control socket until closed; ``handler`` answers each request."""

    def __init__(self, path: str, handler: Handler, allowed_uid: int = 0) -> None:
        self.path, self.handler, self.allowed_uid = path, handler, allowed_uid
        self.server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)            # a stale socket of a dead agent (the pid lock says so)
        self.server = await asyncio.start_unix_server(self._serve, sock=bind_private(self.path), limit=MAX_LINE)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            pid, uid, _gid = peer_credentials(writer.get_extra_info("socket"))
            if uid != self.allowed_uid:
                answer = {"ok": False, "error": f"permission denied (uid {uid}; the control socket is root only)"}
                # Take the request off the socket first: closing a unix socket with unread data
                # resets it, and the caller could lose the answer that says why it was refused.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(reader.readline(), 1.0)
            else:
                line = await reader.readline()
                _CALLER.set((pid, uid))
                answer = await self._answer(line)
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError) as exc:
            log.debug("control connection: %s", exc)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, line: bytes) -> dict:
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            return {"ok": False, "error": f"bad request: {exc}"}
        try:
            return await self.handler(request)
        except Exception as exc:  # noqa: BLE001 - one bad request must not stop the agent
            log.exception("control request %r failed", request)
            return {"ok": False, "error": str(exc)}


def request(path: str, message: dict, timeout: float = 30.0) -> dict:
    """Send one request to the agent and return its answer; AgentNotRunning if nobody listens."""
    if not os.path.exists(path):
        raise AgentNotRunning(f"agent not running (no control socket at {path})")
    try:
        data = exchange(path, message, timeout)
    except (ConnectionRefusedError, FileNotFoundError) as exc:
        raise AgentNotRunning(f"agent not running (control socket {path}: {exc.strerror})") from exc
    if not data:
        raise AgentNotRunning(f"the agent closed the control socket {path} without answering")
    return json.loads(data)
