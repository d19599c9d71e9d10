"""The read-only HTTP status API: ``[http] listen`` in the cluster file; absent section, no listener.

Endpoints (GET or HEAD; nothing here changes state: operator commands stay on the root-only
control socket, and on the console's own POSTs when ``[http] console_actions`` allows them):

- ``/status``: the ``hamirror status --json`` document;
- ``/health/MODULE``: 200 when the module's application serves here (send traffic here), else
  503 (also from the moment a swap or a stop begins); the body is the state on one line;
- ``/metrics``: Prometheus text format;
- ``/events``, ``/events/MODULE``: the node's event timeline as JSON (``{"node", "events": [...]}``,
  oldest first; ``?limit=N`` the last N, default 500; ``?since=SEQ`` only later ones, for polling);
- ``/`` and ``/console/...``: the web console (``hamirror/agent/console/``: both nodes on one page,
  its own login, and operator commands only with ``[http] console_actions``).

Access: with ``[http] token_file`` every API request must send ``Authorization: Bearer TOKEN``
(the console takes the token once and then uses a session cookie); the configuration refuses a
non-loopback ``listen`` without one.
Without a token the ``Host`` header must be an IP address or ``localhost``, so a web page
visited on this host cannot read the API through a DNS name rebound to 127.0.0.1.

One minimal HTTP/1.1 handler on the agent's asyncio loop: one request per connection, bounded
head size, a deadline per request and a cap on concurrent connections; a malformed request gets a
4xx answer and never reaches the agent.

Admission comes before anything an unauthenticated client could hold: a client has
``HEAD_TIMEOUT`` seconds to send its request head, one remote address (one /64 for IPv6) holds at
most ``MAX_PER_SOURCE`` connections, and the last ``LOCAL_RESERVE`` of the ``MAX_CONNECTIONS``
slots only take loopback clients, so a local health check always gets through. The token is
checked before any data is gathered. A refused connection gets ``429 Too Many Requests``, never
503: 503 is the health check's "not primary", and a balancer must not pull a primary because
someone flooded its port. Refused connections and rejected tokens go to the audit log.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import ipaddress
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Protocol
from urllib.parse import parse_qs, unquote

from hamirror import audit
from hamirror.agent import agreement, verify
from hamirror.cluster.heartbeat import Reason
from hamirror.cluster.states import NodeState
from hamirror.cluster.view import MirrorHealth
from hamirror.config.cluster import HttpConfig
from hamirror.secretfile import read_secret

log = logging.getLogger(__name__)

StatusProvider = Callable[[], dict]
EventsProvider = Callable[..., list[dict]]     # (module, limit, since) -> events, oldest first

MAX_HEAD = 8192            # request line and headers, bytes
MAX_HEADERS = 64
MAX_BODY = 1024            # a GET may carry a small body, read and ignored
HEAD_TIMEOUT = 2.0         # seconds to send the request head: the longest an unknown client holds a slot
REQUEST_TIMEOUT = 5.0      # seconds to send the answer
MAX_CONNECTIONS = 32       # concurrent connections, all clients together
LOCAL_RESERVE = 4          # of those, the last ones only for loopback clients (the local health check)
MAX_PER_SOURCE = 4         # concurrent connections from one remote address (one /64 for IPv6)
SERVING = (NodeState.PRIM, NodeState.ALONE)
SERVING_NAMES = frozenset(s.value for s in SERVING)
TEXT = "text/plain; charset=utf-8"
EVENTS_LIMIT = 500         # events in one /events answer unless ?limit= says otherwise (at most 10 times more)


class HttpError(Exception):
    """A request answered with an error status and a one-line reason."""

    def __init__(self, status: HTTPStatus, text: str = "", headers: dict[str, str] | None = None) -> None:
        super().__init__(text or status.phrase)
        self.status, self.text, self.headers = status, text or status.phrase, headers or {}


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    query: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass
class Response:
    status: HTTPStatus
    body: bytes
    content_type: str = TEXT
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self, head_only: bool) -> bytes:
        lines = [f"HTTP/1.1 {self.status.value} {self.status.phrase}", f"Content-Type: {self.content_type}",
                 f"Content-Length: {len(self.body)}", "Connection: close", "Cache-Control: no-store",
                 "X-Content-Type-Options: nosniff"]
        lines += [f"{name}: {value}" for name, value in self.headers.items()]
        return "\r\n".join(lines).encode() + b"\r\n\r\n" + (b"" if head_only else self.body)


def text_response(status: HTTPStatus, text: str, headers: dict[str, str] | None = None) -> Response:
    return Response(status, (text + "\n").encode(), headers=headers or {})


# -- reading a request ------------------------------------------------------------------------

async def read_request(reader: asyncio.StreamReader) -> Request:
    """Parse one request head (and skip a small body); HttpError for anything malformed or too big."""
    size = 0

    async def line() -> str:
        nonlocal size
        try:
            raw = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            raise HttpError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE) from None
        except asyncio.IncompleteReadError as exc:
            raise ConnectionResetError("client closed before the end of the request head") from exc
        size += len(raw)
        if size > MAX_HEAD:
            raise HttpError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
        try:
            return raw.decode("ascii").rstrip("\r\n")
        except UnicodeDecodeError:
            raise HttpError(HTTPStatus.BAD_REQUEST, "request head is not ASCII") from None

    parts = (await line()).split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[1]:
        raise HttpError(HTTPStatus.BAD_REQUEST, "malformed request line")
    method, target, version = parts
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise HttpError(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED if version.startswith("HTTP/")
                        else HTTPStatus.BAD_REQUEST, f"unsupported version {version!r}")
    headers: dict[str, str] = {}
    while header := await line():
        name, colon, value = header.partition(":")
        if not colon or not name or name != name.strip() or len(headers) >= MAX_HEADERS:
            raise HttpError(HTTPStatus.BAD_REQUEST, "malformed header")
        name = name.lower()
        if name in headers and name in ("content-length", "host", "authorization"):
            raise HttpError(HTTPStatus.BAD_REQUEST, f"repeated {name} header")
        headers[name] = value.strip()
    if "transfer-encoding" in headers:
        raise HttpError(HTTPStatus.NOT_IMPLEMENTED, "request bodies are not accepted")
    length = headers.get("content-length", "0")
    if not length.isdigit():
        raise HttpError(HTTPStatus.BAD_REQUEST, "bad Content-Length")
    if int(length) > MAX_BODY:
        raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"request body over {MAX_BODY} bytes")
    body = b""
    with contextlib.suppress(asyncio.IncompleteReadError):
        body = await reader.readexactly(int(length))
    if not target.startswith("/"):
        raise HttpError(HTTPStatus.BAD_REQUEST, "the target must be a path")
    path_part, _, query_part = target.partition("?")
    try:
        path = unquote(path_part, errors="strict")
        query = {key: values[-1] for key, values in parse_qs(query_part, errors="strict").items()}
    except UnicodeDecodeError:
        raise HttpError(HTTPStatus.BAD_REQUEST, "path or query is not UTF-8") from None
    return Request(method.upper(), path, headers, query, body)


# -- answering --------------------------------------------------------------------------------

def serving(entry: dict) -> bool:
    """A status document's module entry: whether its application serves here (older agents'
    documents have no ``serving``: PRIM or ALONE then)."""
    return bool(entry.get("serving", entry.get("state") in SERVING_NAMES))


def health(doc: dict, module: str) -> Response:
    """200 when ``module`` serves here, 503 otherwise; 404 for an unknown module.

    Serving is the status's ``serving`` (PRIM or ALONE with no task under way that stops, starts
    or moves the application), so a swap answers 503 from the moment the application stops. The
    body is the state, or ``STATE -> TARGET`` while a task leads elsewhere.
    """
    for entry in doc.get("modules", []):
        if entry.get("name") == module:
            state, target = str(entry.get("state")), entry.get("target")
            text = f"{state} -> {target}" if target and target != state else state
            if not serving(entry) and state in SERVING_NAMES and text == state:
                text += " (not serving)"            # e.g. the application being restarted in place
            return text_response(HTTPStatus.OK if serving(entry) else HTTPStatus.SERVICE_UNAVAILABLE, text)
    return text_response(HTTPStatus.NOT_FOUND, f"no module {module!r} on this node")


def _label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def operations_families(doc: dict) -> list[tuple[str, str, str, list[tuple[dict, int | float]]]]:
    """Each heartbeat network, the checkers, the witness lease and the notify hook (issue 17, alerts)."""
    peer, modules = doc.get("peer") or {}, doc.get("modules", [])
    witness, notify = doc.get("witness"), doc.get("notify")
    families = [
        ("hamirror_heartbeat_network_up", "gauge", "1 when the peer's heartbeats are heard on this network.",
         [({"local": n.get("local"), "peer": n.get("peer")}, int(bool(n.get("up")))) for n in peer.get("networks") or []]),
        ("hamirror_module_checker_failing", "gauge", "1 while one of the module's checkers fails here.",
         [({"module": m["name"]}, int(bool(m.get("checker")))) for m in modules]),
    ]
    if witness:
        families += [
            ("hamirror_witness_lease_held", "gauge", "1 while this node holds the witness's lease (by its own reckoning).",
             [({"witness": witness.get("witness")}, int(bool(witness.get("holds"))))]),
            ("hamirror_witness_answer_age_seconds", "gauge",
             "Seconds since the witness last answered this node (-1: never).",
             [({"witness": witness.get("witness")},
               round(witness["answer_age"], 3) if witness.get("answer_age") is not None else -1)]),
        ]
    if notify:
        families.append(("hamirror_notify_total", "counter", "Events given to the notify hook, by outcome.",
                         [({"result": r}, int(notify.get(r) or 0)) for r in ("sent", "failed", "dropped")]))
    return families


def render_metrics(doc: dict) -> str:
    """The status document in Prometheus text format (0.0.4)."""
    out: list[str] = []

    def family(name: str, kind: str, help_text: str, samples: list[tuple[dict, int]]) -> None:
        out.extend((f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"))
        for labels, value in samples:
            text = ",".join(f'{key}="{_label(val)}"' for key, val in labels.items())
            out.append(f"{name}{{{text}}} {value}" if text else f"{name} {value}")

    peer = doc.get("peer") or {}
    modules = doc.get("modules", [])
    family("hamirror_info", "gauge", "This node, its cluster and its peer (always 1).",
           [({"node": doc.get("node"), "cluster": doc.get("cluster"), "peer": peer.get("name")}, 1)])
    family("hamirror_peer_alive", "gauge", "1 when the peer's heartbeats are heard on some network.",
           [({"peer": peer.get("name")}, int(bool(peer.get("alive"))))])
    rejected = peer.get("rejected") or {}
    family("hamirror_heartbeat_rejected_total", "counter", "Heartbeat datagrams rejected, by reason.",
           [({"reason": r.value}, int(rejected.get(r.value, 0))) for r in Reason])
    family("hamirror_module_state", "gauge", "1 for the module's current state on this node, else 0.",
           [({"module": m["name"], "state": s.value}, int(m.get("state") == s.value))
            for m in modules for s in NodeState])
    family("hamirror_module_serving", "gauge", "1 when the module's application serves here (health check 200).",
           [({"module": m["name"]}, int(serving(m))) for m in modules])
    family("hamirror_module_target_state", "gauge", "1 for the state a running action sequence leads to, else 0.",
           [({"module": m["name"], "state": s.value}, int(m.get("target") == s.value))
            for m in modules for s in NodeState])
    family("hamirror_module_uptodate", "gauge", "1 when this node's copy of the module's data is up to date.",
           [({"module": m["name"]}, int(bool(m.get("uptodate")))) for m in modules])
    family("hamirror_module_mirror", "gauge",
           "1 for what the primary's mounts really do (streaming, syncing, alone, fenced, refused, dead).",
           [({"module": m["name"], "mirror": h.value}, int(m.get("mirror") == h.value))
            for m in modules for h in MirrorHealth if h is not MirrorHealth.NONE])
    family("hamirror_module_fenced", "gauge",
           "1 while the module's writes are blocked waiting for a fencing verdict (the peer stopped acknowledging).",
           [({"module": m["name"]}, int(m.get("mirror") == MirrorHealth.FENCED.value)) for m in modules])
    family("hamirror_module_maintenance", "gauge",
           "1 while the module is in maintenance (a cluster-wide setting; checkers and automatic failover suspended).",
           [({"module": m["name"]}, int(bool(m.get("maintenance")))) for m in modules])
    family("hamirror_module_failovers", "gauge", "Failovers of this node within the flap-damping window.",
           [({"module": m["name"]}, int((m.get("failovers") or {}).get("recent") or 0)) for m in modules])
    family("hamirror_module_failover_damped", "gauge",
           "1 while failovers are held back (flap damping) until `hamirror clear MODULE`.",
           [({"module": m["name"]}, int(bool((m.get("failovers") or {}).get("damped")))) for m in modules])
    family("hamirror_resync_failures", "gauge",
           "Resync attempts in a row that failed the same way (0 after a completed resync).",
           [({"module": m["name"]}, int((m.get("resync_failures") or {}).get("count") or 0)) for m in modules])
    family("hamirror_resync_alarm", "gauge",
           "1 when the resync failed the same way 3 times in a row (label error: the failure).",
           [({"module": m["name"], "error": (m.get("resync_failures") or {}).get("error") or ""},
             int(bool((m.get("resync_failures") or {}).get("alarm")))) for m in modules])
    for key, help_text in (("done_bytes", "Bytes copied by the running resync (0 when none runs)."),
                           ("total_bytes", "Bytes the running resync has to copy (0 when none runs).")):
        family(f"hamirror_resync_{key}", "gauge", help_text,
               [({"module": m["name"]}, int((m.get("resync") or {}).get(key) or 0)) for m in modules])
    for name, kind, help_text, samples in operations_families(doc):
        family(name, kind, help_text, samples)
    for name, kind, help_text, samples in verify.metric_families(modules):   # online verify
        family(name, kind, help_text, samples)
    for name, kind, help_text, samples in agreement.metric_families(doc):   # same configuration, releases
        family(name, kind, help_text, samples)
    return "\n".join(out) + "\n"


def host_allowed(host: str | None) -> bool:
    """Whether a Host header names this host by address (or ``localhost``), not by a DNS name."""
    if host is None:
        return True
    name = host[1:host.find("]")] if host.startswith("[") else host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if name.lower() == "localhost":
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def authorized(request: Request, token: str | None) -> bool:
    if token is None:
        return True
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def query_int(request: Request, name: str, default: int, high: int) -> int:
    """A whole-number query parameter within [0, high]; 400 for anything else."""
    text = request.query.get(name)
    if text is None:
        return default
    if not text.isdigit() or int(text) > high:
        raise HttpError(HTTPStatus.BAD_REQUEST, f"{name} must be a whole number from 0 to {high}")
    return int(text)


def events_answer(request: Request, events: EventsProvider | None, node: str | None) -> Response:
    """``/events`` and ``/events/MODULE``: the timeline (``since``: for a client that polls)."""
    if events is None:
        raise HttpError(HTTPStatus.NOT_FOUND, "no event timeline on this server")
    module = request.path.removeprefix("/events").removeprefix("/") or None
    limit = query_int(request, "limit", EVENTS_LIMIT, 10 * EVENTS_LIMIT)
    found = events(module, limit or None, query_int(request, "since", 0, 2**62))
    return Response(HTTPStatus.OK, json_bytes({"node": node, "module": module, "events": found}), "application/json")


def check_host(request: Request, token: str | None) -> None:
    """Without a token, only a Host that is an address (DNS rebinding); HttpError otherwise."""
    if token is None and not host_allowed(request.headers.get("host")):
        raise HttpError(HTTPStatus.MISDIRECTED_REQUEST, "use an IP address or localhost in the URL")


def answer(request: Request, status: StatusProvider, token: str | None,
           events: EventsProvider | None = None) -> Response:
    """Route one parsed API request; HttpError for the error answers."""
    if request.method not in ("GET", "HEAD"):
        raise HttpError(HTTPStatus.METHOD_NOT_ALLOWED, f"{request.method} not allowed: this API is read-only",
                        {"Allow": "GET, HEAD"})
    check_host(request, token)
    if not authorized(request, token):
        raise HttpError(HTTPStatus.UNAUTHORIZED, "missing or wrong bearer token",
                        {"WWW-Authenticate": 'Bearer realm="hamirror"'})
    known = request.path in ("/status", "/metrics", "/events") or request.path.startswith(("/health/", "/events/"))
    if not known:
        raise HttpError(HTTPStatus.NOT_FOUND, f"no such endpoint {request.path!r} (try /, /status, "
                                              "/health/MODULE, /metrics, /events)")
    doc = status()
    if request.path == "/events" or request.path.startswith("/events/"):
        return events_answer(request, events, doc.get("node"))
    if request.path == "/status":
        return Response(HTTPStatus.OK, json_bytes(doc), "application/json")
    if request.path == "/metrics":
        return Response(HTTPStatus.OK, render_metrics(doc).encode(), "text/plain; version=0.0.4; charset=utf-8")
    return health(doc, request.path.removeprefix("/health/"))


def json_bytes(doc: dict) -> bytes:
    return json.dumps(doc, indent=1).encode() + b"\n"


# -- the server -------------------------------------------------------------------------------

async def _discard(reader: asyncio.StreamReader) -> None:
    while await reader.read(65536):
        pass


def is_local(host: str) -> bool:
    """Whether a client address is this host's loopback (the reserved slots are for it)."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def source_key(host: str) -> str:
    """What the per-source cap counts: the address, or its /64 for IPv6 (one host's usual share)."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if getattr(address, "ipv4_mapped", None):
        return str(address.ipv4_mapped)
    if address.version == 6 and not address.is_loopback:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def load_token(path: str) -> str:
    """The bearer token in ``path``; ValueError if the file is empty or readable by other users."""
    raw = read_secret(path, "token file", 4096)
    try:
        token = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ValueError(f"{path}: token file is not ASCII text") from None
    if len(token) < 16 or any(c.isspace() for c in token):
        raise ValueError(f"{path}: the token must be one word of at least 16 characters")
    return token


class Routes(Protocol):
    """More endpoints on the same server (the web console), answered after admission."""

    def handles(self, path: str) -> bool: ...
    async def answer(self, request: Request, client: str, token: str | None) -> Response: ...
    async def start(self) -> None: ...
    async def close(self) -> None: ...


class HttpServer:
    """Serves the status API (and the console, if given) on the agent's loop until closed."""

    def __init__(self, config: HttpConfig, status: StatusProvider, events: EventsProvider | None = None,
                 console: Routes | None = None) -> None:
        self.config, self.status, self.events, self.console = config, status, events, console
        self.server: asyncio.base_events.Server | None = None
        self.token: str | None = None
        self.error: str | None = None
        self._open = 0                                   # connections being served
        self._per_source: collections.Counter[str] = collections.Counter()

    @property
    def port(self) -> int:
        """The bound port (useful with port 0 in tests)."""
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def start(self) -> bool:
        """Listen; on failure (token file, address in use) log why, keep ``error`` and return False.

        The agent runs on without the API: a node must not stop managing its modules over it.
        """
        host, port = self.config.endpoint
        try:
            if self.config.token_file is not None:
                self.token = load_token(self.config.token_file)
            elif not self.config.loopback:
                raise ValueError(f"http.listen {self.config.listen} is not a loopback address and "
                                 f"http.token_file is not set")
            self.server = await asyncio.start_server(self._serve, host, port, limit=MAX_HEAD)
            if self.console is not None:
                await self.console.start()
        except (OSError, ValueError) as exc:
            self.error = str(exc)
            log.error("HTTP status API not started: %s", exc)
            return False
        log.info("HTTP status API on %s (%s)", self.config.listen,
                 "bearer token required" if self.token else "no token: loopback only")
        return True

    async def close(self) -> None:
        if self.console is not None:
            await self.console.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    def _admit(self, host: str, source: str) -> str | None:
        """Take a slot for a new connection, or say why there is none (synchronous: no race)."""
        local = is_local(host)
        limit = MAX_CONNECTIONS if local else MAX_CONNECTIONS - LOCAL_RESERVE
        if self._open >= limit:
            return f"{self._open} connections open (cap {limit}{'' if local else ' for remote clients'})"
        if not local and self._per_source[source] >= MAX_PER_SOURCE:
            return f"{self._per_source[source]} connections open from {source} (cap {MAX_PER_SOURCE} per source)"
        self._open += 1
        if not local:
            self._per_source[source] += 1
        return None

    def _release(self, host: str, source: str) -> None:
        self._open -= 1
        if not is_local(host):
            self._per_source[source] -= 1
            if self._per_source[source] <= 0:
                del self._per_source[source]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        host = str(peer[0]) if peer else "unknown"
        source = source_key(host)
        try:
            refusal = self._admit(host, source)
            if refusal is not None:
                audit.refused("http-connections", host, f"connection refused: {refusal}")
                writer.write(text_response(HTTPStatus.TOO_MANY_REQUESTS, "too many connections",
                                           {"Retry-After": "1"}).encode(False))
                await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)
                return
            try:
                await self._exchange(reader, writer, host)
            finally:
                self._release(host, source)
        except (ConnectionError, asyncio.TimeoutError) as exc:
            log.debug("HTTP connection: %s", exc or type(exc).__name__)
        except Exception:  # noqa: BLE001 - a request must never take the agent down
            log.exception("HTTP connection failed")
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        head_only = False
        try:
            try:
                request = await asyncio.wait_for(read_request(reader), HEAD_TIMEOUT)
            except asyncio.TimeoutError:
                raise HttpError(HTTPStatus.REQUEST_TIMEOUT, "request not received in time") from None
            head_only = request.method == "HEAD"
            if self.console is not None and self.console.handles(request.path):
                check_host(request, self.token)
                response = await self.console.answer(request, host, self.token)
            else:
                response = answer(request, self.status, self.token, self.events)
        except HttpError as exc:
            response = text_response(exc.status, exc.text, exc.headers)
            if exc.status is HTTPStatus.UNAUTHORIZED:
                audit.refused("http-token", host, f"missing or wrong bearer token for {request.path!r}")
        except (ConnectionError, asyncio.TimeoutError):
            raise
        except Exception as exc:  # noqa: BLE001 - the status provider failed: say so, keep serving
            log.exception("HTTP request failed")
            response = text_response(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {exc}")
        writer.write(response.encode(head_only))
        await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)
        if response.status >= 400 and writer.can_write_eof():
            # Lingering close: unread bytes at close() would make the kernel reset the connection,
            # and the client could lose the answer that says what was wrong.
            writer.write_eof()
            with contextlib.suppress(ConnectionError, asyncio.TimeoutError):
                await asyncio.wait_for(_discard(reader), 0.5)


__all__ = ["HttpError", "HttpServer", "Request", "Response", "Routes", "answer", "authorized", "health", "is_local", "load_token", "read_request", "render_metrics", "source_key"]
