"""Fetching the peer's console document over the cluster network, for the page that shows both.

The browser talks to one node; that node asks its peer's agent (``GET /console/node`` with the
same bearer token) with a short timeout. A peer that does not answer is *unreachable since* the
first failure after its last answer: its last document is dropped, never shown as its state.
One fetch at a time, and an answer is reused for ``REUSE`` seconds, so many browsers cost the
peer one request per refresh period. A command the page sends for the peer is passed on the same
way (``POST /console/action``), so the peer checks and records it like one of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlencode

from hamirror.agent.console import auth

TIMEOUT = 1.5         # seconds for the whole exchange with the peer
REUSE = 1.0           # seconds an answer (or a failure) is reused
MAX_ANSWER = 4 << 20  # bytes
COMMAND_TIMEOUT = 120.0   # seconds a command forwarded to the peer may take (a swap waits for its end)


@dataclass(frozen=True)
class PeerAnswer:
    """The peer's document, or why there is none and since when (wall clock)."""

    doc: dict | None
    error: str | None = None
    since: float | None = None


def split_answer(data: bytes) -> tuple[int, bytes]:
    """The status code and body of a raw HTTP/1.1 answer; ValueError if it is none."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise ValueError("incomplete HTTP answer")
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise ValueError(f"not an HTTP answer: {status_line[:80]!r}")
    return int(parts[1]), body


def parse_answer(data: bytes) -> dict:
    """The console document in a raw HTTP/1.1 answer; ValueError saying what is wrong."""
    code, body = split_answer(data)
    if code != 200:
        raise ValueError(f"HTTP {code}: {body.decode('utf-8', 'replace').strip()[:200]}")
    doc = json.loads(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("status"), dict):
        raise ValueError("the answer is not a console document")
    return doc


async def exchange(host: str, port: int, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    """One HTTP/1.1 request to the peer's API, the raw answer back (at most ``MAX_ANSWER`` bytes)."""
    reader, writer = await asyncio.open_connection(host, port, limit=MAX_ANSWER)
    try:
        lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items()),
                 f"Content-Length: {len(body)}", "Connection: close"]
        writer.write("\r\n".join([*lines, "", ""]).encode() + body)
        await writer.drain()
        data = await reader.read(MAX_ANSWER + 1)
        while chunk := await reader.read(MAX_ANSWER + 1 - len(data)):
            data += chunk
        if len(data) > MAX_ANSWER:
            raise ValueError(f"answer over {MAX_ANSWER} bytes")
        return data
    finally:
        writer.close()
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 0.2)


def peer_headers(host: str, port: int, token: str | None) -> dict[str, str]:
    name = f"[{host}]" if ":" in host else host
    return {"Host": f"{name}:{port}", **({"Authorization": f"Bearer {token}"} if token else {})}


async def fetch(host: str, port: int, token: str | None, timeout: float = TIMEOUT) -> dict:
    """``GET /console/node`` from the peer; OSError, TimeoutError or ValueError on failure."""
    answer = await asyncio.wait_for(exchange(host, port, "GET", "/console/node", peer_headers(host, port, token)),
                                    timeout)
    return parse_answer(answer)


async def command(host: str, port: int, token: str, fields: dict[str, str], via: str,
                  timeout: float = COMMAND_TIMEOUT) -> dict:
    """A console command run on the peer (``POST /console/action`` with the token, the CSRF token of
    a bearer client and the peer's own Origin); the peer's answer, or ``ok: false`` and why not."""
    headers = {**peer_headers(host, port, token), "Content-Type": "application/x-www-form-urlencoded",
               "X-Hamirror-CSRF": auth.csrf_token(token, ""), "X-Hamirror-Via": via}
    headers["Origin"] = "http://" + headers["Host"]
    try:
        data = await asyncio.wait_for(exchange(host, port, "POST", "/console/action", headers,
                                               urlencode(fields).encode()), timeout)
        code, body = split_answer(data)
        if code == 200:
            answer = json.loads(body)
            if isinstance(answer, dict):
                return answer
        return {"ok": False, "error": f"the peer answered HTTP {code}: {body.decode('utf-8', 'replace').strip()[:300]}"}
    except asyncio.TimeoutError:
        return {"ok": False, "error": f"no answer from the peer within {timeout:.0f} s (the command may still run)"}
    except (OSError, ValueError) as exc:
        return {"ok": False, "error": f"the peer could not be asked: {exc}"}


def can_ask(http) -> bool:
    """Whether this node's ``[http]`` lets it run commands on the peer (``hamirror verify`` from the
    secondary, ``--all``): a cluster-network listen address, a token and console commands on."""
    return http is not None and bool(http.token_file) and http.console_actions and not http.loopback


async def ask(cluster, fields: dict[str, str], timeout: float = COMMAND_TIMEOUT) -> dict:
    """``fields`` run on the peer of ``cluster`` (a ClusterConfig that :func:`can_ask` allows)."""
    from hamirror.agent.http import load_token

    http = cluster.http
    return await command(cluster.peer_node.addresses[0], http.endpoint[1], load_token(http.token_file),
                         fields, "", timeout)


class Peer:
    """The peer's console document as last fetched, with its reachability."""

    def __init__(self, host: str | None, port: int, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.host, self.port, self.clock, self.monotonic = host, port, clock, monotonic
        self.down_since: float | None = None
        self._last: tuple[float, PeerAnswer] | None = None
        self._running: asyncio.Task | None = None

    async def get(self, token: str | None) -> PeerAnswer:
        if self.host is None:
            return PeerAnswer(None, "not fetched: this node's HTTP API listens on loopback only, so its peer's "
                                    "does too (set [http] listen to the cluster address, with token_file)")
        if self._last is not None and self.monotonic() - self._last[0] < REUSE:
            return self._last[1]
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(self._fetch(token))
        return await asyncio.shield(self._running)

    async def command(self, token: str, fields: dict[str, str], via: str) -> dict:
        """Run a console command on the peer, for a client of ours at ``via``."""
        if self.host is None:
            return {"ok": False, "error": "the peer's console is not reachable from here (loopback listen)"}
        return await command(self.host, self.port, token, fields, via)

    async def _fetch(self, token: str | None) -> PeerAnswer:
        try:
            doc = await fetch(self.host, self.port, token)
            self.down_since = None
            answer = PeerAnswer(doc)
        except (OSError, asyncio.TimeoutError, ValueError) as exc:
            if self.down_since is None:
                self.down_since = self.clock()
            reason = "no answer within %.1f s" % TIMEOUT if isinstance(exc, asyncio.TimeoutError) else str(exc)
            answer = PeerAnswer(None, reason or type(exc).__name__, self.down_since)
        self._last = (self.monotonic(), answer)
        return answer
