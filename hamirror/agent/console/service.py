"""The console's endpoints on the agent's HTTP server (after its admission control).

- ``GET /``: the page, both nodes, rendered here (a login form without a session);
- ``GET /console/view``: the refreshed part of the page (for its script);
- ``GET /console/node``: this node's console document as JSON (what the peer fetches);
- ``POST /console/login``: token in, session cookie out;
- ``POST /console/action``: one operator command, only with ``[http] console_actions = true``.

The order of checks keeps the cheap ones first: authentication (session cookie or bearer token)
before anything is gathered or fetched from the peer; then, for a command, whether commands are
on, the Origin and the CSRF token. A command goes through the agent's own control handler, the
path ``hamirror swap`` takes, and the timeline records it as the console's, with the client's
address.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from urllib.parse import parse_qs

from hamirror import audit
from hamirror.agent import control
from hamirror.agent.console import auth, render
from hamirror.agent.console.api import Api
from hamirror.agent.console.gather import Gatherer
from hamirror.agent.console.peer import Peer
from hamirror.agent.http import HttpError, Request, Response, authorized

log = logging.getLogger(__name__)

HTML = "text/html; charset=utf-8"
VIA = re.compile(r"[0-9A-Fa-f.:]{1,45}")   # the address a peer's console says a command came from
Handler = Callable[[dict], Awaitable[dict]]
COMMANDS = {"swap": {"cmd": "module", "action": "swap"}, "stop": {"cmd": "module", "action": "stop"},
            "start": {"cmd": "module", "action": "start"}, "restart": {"cmd": "module", "action": "restart"},
            "maintenance-on": {"cmd": "maintenance", "on": True}, "maintenance-off": {"cmd": "maintenance", "on": False},
            # hamirror verify run on the secondary comes here, on the primary's agent (no button)
            "verify": {"cmd": "verify"}, "verify-repair": {"cmd": "verify", "repair": True}}


def form(request: Request) -> dict[str, str]:
    """A urlencoded body's fields (last value wins); 400 for anything else."""
    try:
        return {k: v[-1] for k, v in parse_qs(request.body.decode("utf-8"), errors="strict").items()}
    except UnicodeDecodeError:
        raise HttpError(HTTPStatus.BAD_REQUEST, "the body is not UTF-8") from None


def html(status: HTTPStatus, text: str, headers: dict[str, str] | None = None) -> Response:
    return Response(status, text.encode(), HTML, {"Content-Security-Policy": render.CSP, "X-Frame-Options": "DENY",
                                                  "Referrer-Policy": "same-origin", **(headers or {})})


def json_response(status: HTTPStatus, doc: dict) -> Response:
    return Response(status, json.dumps(doc).encode() + b"\n", "application/json")


class Console:
    """The console's routes; ``handle`` is the agent's control handler (commands)."""

    def __init__(self, gatherer: Gatherer, peer: Peer, node_name: str, peer_name: str, handle: Handler | None,
                 actions: bool, peer_url: str | None = None, clock: Callable[[], float] = time.time,
                 api: Api | None = None) -> None:
        self.gatherer, self.peer, self.handle = gatherer, peer, handle
        self.node_name, self.peer_name = node_name, peer_name
        self.actions, self.peer_url, self.clock = actions and handle is not None, peer_url, clock
        self.api = api

    def handles(self, path: str) -> bool:
        return path in ("/", "/favicon.ico") or path.startswith("/console/") or (
            self.api is not None and self.api.handles(path))

    async def start(self) -> None:
        await self.gatherer.start()
        if self.api is not None:
            await self.api.start()

    async def close(self) -> None:
        await self.gatherer.close()
        if self.api is not None:
            await self.api.close()

    def session(self, request: Request, token: str | None) -> str | None:
        """The client's session ("" for a bearer client, or when no token is configured), or None."""
        if token is None or authorized(request, token):
            return ""
        value = auth.session_cookie(request.headers)
        return value if value and auth.session_valid(token, value, self.clock()) else None

    async def answer(self, request: Request, client: str, token: str | None) -> Response:
        if self.api is not None and self.api.handles(request.path):
            return await self.api.answer(request, client, token)      # scripts: the bearer token only
        path, method = request.path, request.method
        if path == "/favicon.ico":                # asked by every browser: not worth a 401 in the audit log
            raise HttpError(HTTPStatus.NOT_FOUND, "no icon")
        wanted = "POST" if path in ("/console/login", "/console/action") else "GET"
        if method != wanted and not (wanted == "GET" and method == "HEAD"):
            raise HttpError(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} not allowed on {path}",
                            {"Allow": "POST" if wanted == "POST" else "GET, HEAD"})
        if path == "/console/login":
            return self.login(request, client, token)
        session = self.session(request, token)
        if session is None:
            if path == "/":
                return html(HTTPStatus.OK, render.login())
            raise HttpError(HTTPStatus.UNAUTHORIZED, "missing or wrong bearer token",
                            {"WWW-Authenticate": 'Bearer realm="hamirror"'})
        if path == "/console/action":
            return await self.command(request, client, token, session)
        if path == "/console/node":
            return json_response(HTTPStatus.OK, await self.gatherer.document())
        if path not in ("/", "/console/view"):
            raise HttpError(HTTPStatus.NOT_FOUND, f"no such console page {path!r}")
        local, peer = await asyncio.gather(self.gatherer.document(), self.peer.get(token))
        csrf = auth.csrf_token(token, session) if token else ""
        try:
            return self.rendered(path, csrf, local, peer.doc, peer.error, peer.since)
        except Exception as exc:  # noqa: BLE001 - a peer's odd document must not cost us our own page
            log.warning("console: the peer's document could not be shown: %s", exc)
            return self.rendered(path, csrf, local, None, f"its document could not be shown: {exc}", self.clock())

    def rendered(self, path: str, csrf: str, local: dict, doc: dict | None, error: str | None,
                 since: float | None) -> Response:
        args = (local, self.peer_name, doc, error, since)
        if path == "/console/view":
            return html(HTTPStatus.OK, render.view(*args, peer_url=self.peer_url))
        return html(HTTPStatus.OK, render.page(*args, csrf=csrf, peer_url=self.peer_url))

    def login(self, request: Request, client: str, token: str | None) -> Response:
        problem = auth.origin_problem(request.headers)
        if problem is not None:
            audit.refused("http-csrf", client, f"console login refused: {problem}")
            raise HttpError(HTTPStatus.FORBIDDEN, f"refused: {problem}")
        if token is None:
            return Response(HTTPStatus.SEE_OTHER, b"", headers={"Location": "/"})
        given = form(request).get("token", "").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            audit.refused("http-token", client, "wrong token at the console login")
            return html(HTTPStatus.UNAUTHORIZED, render.login("wrong token"))
        return Response(HTTPStatus.SEE_OTHER, b"", headers={
            "Location": "/", "Set-Cookie": auth.set_cookie(auth.new_session(token, self.clock()))})

    async def command(self, request: Request, client: str, token: str | None, session: str) -> Response:
        if not self.actions or token is None or self.handle is None:
            raise HttpError(HTTPStatus.FORBIDDEN, "console commands are off on this node: set [http] "
                                                  "console_actions = true (with token_file) to allow them")
        problem = auth.origin_problem(request.headers)
        if problem is None and not auth.csrf_valid(token, session, request.headers.get(auth.CSRF_HEADER)):
            problem = "missing or wrong CSRF token (reload the console)"
        if problem is not None:
            audit.refused("http-csrf", client, f"console command refused: {problem}")
            raise HttpError(HTTPStatus.FORBIDDEN, f"refused: {problem}")
        fields = form(request)
        action, module, node = fields.get("action", ""), fields.get("module", ""), fields.get("node", self.node_name)
        if action not in COMMANDS or not module or node not in (self.node_name, self.peer_name):
            raise HttpError(HTTPStatus.BAD_REQUEST, f"unknown command {action!r} (one of {', '.join(COMMANDS)}), "
                                                    f"no module or unknown node {node!r}")
        if node == self.peer_name:             # the page shows both nodes: their commands go through us
            log.info("console: %s %s on %s from %s", action, module, node, client)
            return json_response(HTTPStatus.OK, await self.peer.command(token, {"module": module, "action": action},
                                                                        client))
        via = request.headers.get("x-hamirror-via", "") if session == "" else ""
        source = f"http {via} via {client}" if VIA.fullmatch(via) else f"http {client}"
        who = {"user": "console", "login": None, "from": source, "pid": None,
               "command": f"{action} {module} (web console)"}
        log.info("console: %s %s from %s", action, module, source)
        with control.on_behalf_of(who):
            result = await self.handle({**COMMANDS[action], "module": module})
        return json_response(HTTPStatus.OK, result)
