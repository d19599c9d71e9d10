"""The scriptable command API: ``POST /api/v1/command`` with the bearer token, no browser session,
like Patroni's ``POST /switchover``; a switchover may be scheduled (``"at"``).

- ``POST /api/v1/command``, JSON ``{"module", "action", "at"?}``: ``action`` one of swap, stop,
  start, restart, maintenance-on, maintenance-off; the answer is the control handler's, as for
  ``hamirror swap``. With ``"at"`` (Unix time, a swap only) it is recorded, not run: the answer
  names the schedule entry.
- ``GET /api/v1/scheduled``: the entries; ``POST /api/v1/scheduled/cancel``, ``{"id"}``.

Only the bearer token authenticates here (a session cookie is refused), so a page of another site
cannot make a browser send a command: it cannot set the Authorization header without a CORS
preflight this server never grants. Commands need ``[http] console_actions = true``, as the
console's do. Schedules are kept in ``STATE_DIR/scheduled.json`` across restarts; an entry found
more than ``LATE`` seconds overdue (the agent was down at that time) is dropped with an event, not run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus

from hamirror.agent import control
from hamirror.agent.http import HttpError, Request, Response, authorized
from hamirror.durablefile import write_json

log = logging.getLogger(__name__)

ACTIONS = {"swap": {"cmd": "module", "action": "swap"}, "stop": {"cmd": "module", "action": "stop"},
           "start": {"cmd": "module", "action": "start"}, "restart": {"cmd": "module", "action": "restart"},
           "maintenance-on": {"cmd": "maintenance", "on": True},
           "maintenance-off": {"cmd": "maintenance", "on": False}}
LATE = 60.0              # seconds an entry may be overdue at start and still run
MAX_ENTRIES = 32
FILENAME = "scheduled.json"
Handler = Callable[[dict], Awaitable[dict]]


def json_answer(status: HTTPStatus, doc: object) -> Response:
    return Response(status, json.dumps(doc).encode() + b"\n", "application/json")


def body_of(request: Request) -> dict:
    try:
        doc = json.loads(request.body.decode("utf-8") or "{}")
    except (UnicodeDecodeError, ValueError):
        raise HttpError(HTTPStatus.BAD_REQUEST, "the body is not a JSON object") from None
    if not isinstance(doc, dict):
        raise HttpError(HTTPStatus.BAD_REQUEST, "the body is not a JSON object")
    return doc


class Api:
    """The ``/api/v1/`` routes and the schedule; ``emit(kind, text, module=...)`` is the timeline."""

    def __init__(self, state_dir: str, handle: Handler | None, actions: bool,
                 emit: Callable[..., object] = lambda *a, **k: None, clock: Callable[[], float] = time.time) -> None:
        self.path, self.handle, self.actions = os.path.join(state_dir, FILENAME), handle, actions and handle is not None
        self.emit, self.clock = emit, clock
        self.entries: list[dict] = self._load()
        self._task: asyncio.Task | None = None

    @staticmethod
    def handles(path: str) -> bool:
        return path.startswith("/api/")

    async def start(self) -> None:
        self._drop_missed()
        self._task = asyncio.create_task(self._run_due(), name="api-schedule")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def answer(self, request: Request, client: str, token: str | None) -> Response:
        if token is None or not authorized(request, token):
            raise HttpError(HTTPStatus.UNAUTHORIZED, "the API needs the bearer token ([http] token_file)",
                            {"WWW-Authenticate": 'Bearer realm="hamirror"'})
        route = (request.method, request.path)
        if route in (("GET", "/api/v1/scheduled"), ("HEAD", "/api/v1/scheduled")):
            return json_answer(HTTPStatus.OK, {"scheduled": self.entries})
        if route not in (("POST", "/api/v1/command"), ("POST", "/api/v1/scheduled/cancel")):
            raise HttpError(HTTPStatus.NOT_FOUND, f"no such API endpoint: {request.method} {request.path} "
                                                  "(POST /api/v1/command, GET /api/v1/scheduled, "
                                                  "POST /api/v1/scheduled/cancel)")
        if not self.actions:
            raise HttpError(HTTPStatus.FORBIDDEN, "commands are off on this node: set [http] console_actions = "
                                                  "true (with token_file) to allow them")
        doc = body_of(request)
        if request.path == "/api/v1/scheduled/cancel":
            return self.cancel(doc.get("id"), client)
        module, action, at = doc.get("module"), doc.get("action"), doc.get("at")
        if not isinstance(module, str) or not module or action not in ACTIONS:
            raise HttpError(HTTPStatus.BAD_REQUEST, f"give a module and an action (one of {', '.join(ACTIONS)})")
        if at is not None:
            return self.schedule(module, action, at, client)
        return json_answer(HTTPStatus.OK, await self.run(module, action, f"api {client}"))

    async def run(self, module: str, action: str, source: str) -> dict:
        assert self.handle is not None
        who = {"user": "api", "login": None, "from": source, "pid": None, "command": f"{action} {module} (API)"}
        with control.on_behalf_of(who):
            return await self.handle({**ACTIONS[action], "module": module})

    def schedule(self, module: str, action: str, at: object, client: str) -> Response:
        if action != "swap":
            raise HttpError(HTTPStatus.BAD_REQUEST, "only a swap (switchover) can be scheduled")
        if isinstance(at, bool) or not isinstance(at, (int, float)) or not self.clock() < at < self.clock() + 366 * 86400:
            raise HttpError(HTTPStatus.BAD_REQUEST, "at must be a Unix time in the coming year")
        if len(self.entries) >= MAX_ENTRIES:
            raise HttpError(HTTPStatus.CONFLICT, f"{MAX_ENTRIES} entries are scheduled already")
        entry = {"id": max((e["id"] for e in self.entries), default=0) + 1, "module": module, "action": action,
                 "at": float(at), "by": f"api {client}"}
        self._save(self.entries + [entry])
        self.emit("scheduled", f"{action} scheduled for {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(at))} "
                               f"by {entry['by']} (entry {entry['id']})", module=module, entry=entry["id"])
        return json_answer(HTTPStatus.OK, {"scheduled": entry})

    def cancel(self, ident: object, client: str) -> Response:
        found = [e for e in self.entries if e["id"] == ident]
        if not found:
            raise HttpError(HTTPStatus.NOT_FOUND, f"no scheduled entry {ident!r}")
        self._save([e for e in self.entries if e["id"] != ident])
        self.emit("scheduled", f"entry {ident} ({found[0]['action']}) cancelled by api {client}",
                  module=found[0]["module"], entry=ident)
        return json_answer(HTTPStatus.OK, {"cancelled": found[0]})

    async def _run_due(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            for entry in [e for e in self.entries if e["at"] <= self.clock()]:
                self._save([e for e in self.entries if e["id"] != entry["id"]])     # at most once
                try:
                    result = await self.run(entry["module"], entry["action"], f"{entry['by']}, scheduled")
                except Exception:  # noqa: BLE001 - one entry's failure must not stop the schedule
                    log.exception("scheduled entry %s failed", entry["id"])
                    continue
                log.info("scheduled %s of %s: %s", entry["action"], entry["module"], result)

    def _drop_missed(self) -> None:
        missed = [e for e in self.entries if e["at"] < self.clock() - LATE]
        for entry in missed:
            self.emit("scheduled", f"entry {entry['id']} ({entry['action']} at {entry['at']:.0f}) dropped: the "
                                   f"agent was not running at that time", module=entry["module"], entry=entry["id"])
        if missed:
            self._save([e for e in self.entries if e not in missed])

    def _load(self) -> list[dict]:
        try:
            with open(self.path, encoding="utf-8") as f:
                entries = json.load(f)["scheduled"]
            return [e for e in entries if isinstance(e, dict) and {"id", "module", "action", "at", "by"} <= set(e)
                    and e["action"] in ACTIONS]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("%s unreadable (%s): no scheduled entries", self.path, exc)
            return []

    def _save(self, entries: list[dict]) -> None:
        write_json(self.path, {"scheduled": entries})
        self.entries = entries
