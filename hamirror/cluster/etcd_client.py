"""A small, blocking client of etcd v3's HTTP/JSON gateway (``/v3/...``, etcd 3.4 and later).

Only what the quorum backend (:mod:`etcd_quorum`) needs: leases (grant, keep-alive, revoke,
time-to-live) and transactions. Standard library only (``http.client``): the calls are a handful
of JSON posts, and the Python etcd clients either speak gRPC (a large dependency) or are
unmaintained (``etcd3`` had no release since 2020, ``python-etcd`` speaks v2).

Several endpoints: a call goes to the endpoint that answered last; a transport failure, a timeout
or an "unavailable" answer (no leader, member stopping) moves it to the next, each endpoint tried
once per call. An answer that is etcd's final word (a lease not found, a bad request) is not
retried. Callers run it in a thread (:class:`EtcdWitness` uses one worker), so one connection per
endpoint is kept open and never used by two calls at once.
"""

from __future__ import annotations

import base64
import dataclasses
import http.client
import json
import logging
import ssl
import urllib.parse
from collections.abc import Sequence

log = logging.getLogger(__name__)

# gRPC status codes worth another endpoint: unavailable (no leader, stopping), deadline exceeded,
# unknown (a member cut from the leader answers "leader changed"/"timed out" with it).
RETRY_CODES = frozenset({2, 4, 14})
UNAUTHENTICATED = 16
INVALID_TOKEN = "invalid auth token"


class EtcdUnavailable(Exception):
    """No endpoint answered (the message says what each one did)."""


class EtcdError(Exception):
    """etcd's final answer to a request (``code``: the gRPC status code)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"etcd: {message} (code {code})")
        self.code, self.message = code, message


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def unb64(text: str | None) -> str:
    return base64.b64decode(text or "").decode(errors="replace")


def prefix_end(prefix: str) -> str:
    """The ``range_end`` (base64) that selects every key starting with ``prefix``."""
    raw = bytearray(prefix.encode())
    raw[-1] += 1            # prefixes here end with "/", never 0xff
    return base64.b64encode(bytes(raw)).decode()


@dataclasses.dataclass(frozen=True)
class Endpoint:
    scheme: str
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        """``http://HOST:PORT`` or ``https://HOST:PORT`` (checked by the config already)."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.port is None:
            raise ValueError(f"not an etcd endpoint (http[s]://HOST:PORT): {url!r}")
        return cls(parts.scheme, parts.hostname, parts.port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


class EtcdClient:
    """Posts JSON to the gateway of the first endpoint that answers.

    ``timeout`` bounds each connect and each read (seconds). ``tls``: the context for https
    endpoints (CA, client certificate). ``credentials``: (user, password) for etcd's
    authentication; the token is fetched on first use and again when etcd says it expired.
    """

    def __init__(self, endpoints: Sequence[str], timeout: float, tls: ssl.SSLContext | None = None,
                 credentials: tuple[str, str] | None = None) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        self.endpoints = [Endpoint.parse(url) for url in endpoints]
        self.timeout, self.tls, self.credentials = timeout, tls, credentials
        self.current = 0
        self.token: str | None = None
        self._connections: dict[int, http.client.HTTPConnection] = {}

    @property
    def endpoint(self) -> str:
        return str(self.endpoints[self.current])

    def close(self) -> None:
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()

    # ------------------------------------------------------------------ transport

    def _connection(self, index: int) -> http.client.HTTPConnection:
        connection = self._connections.get(index)
        if connection is None:
            endpoint = self.endpoints[index]
            if endpoint.scheme == "https":
                connection = http.client.HTTPSConnection(endpoint.host, endpoint.port, timeout=self.timeout,
                                                         context=self.tls or ssl.create_default_context())
            else:
                connection = http.client.HTTPConnection(endpoint.host, endpoint.port, timeout=self.timeout)
            self._connections[index] = connection
        return connection

    def _post(self, index: int, path: str, body: dict) -> dict:
        """One request to one endpoint; the decoded answer (a stream's first message)."""
        headers = {"Content-Type": "application/json"}
        if self.token is not None and not path.startswith("/v3/auth/"):
            headers["Authorization"] = self.token
        connection = self._connection(index)
        try:
            connection.request("POST", path, json.dumps(body).encode(), headers)
            response = connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            connection.close()
            self._connections.pop(index, None)
            raise
        try:
            answer = json.loads(data.splitlines()[0] if data else b"{}")
        except ValueError as exc:
            raise EtcdUnavailable(f"{self.endpoints[index]}: not a JSON answer (HTTP {response.status})") from exc
        if not isinstance(answer, dict):
            raise EtcdUnavailable(f"{self.endpoints[index]}: not a JSON object (HTTP {response.status})")
        if "result" in answer and isinstance(answer["result"], dict):     # a stream's message
            answer = answer["result"]
        error = answer.get("error")
        if error is not None or response.status != 200:
            detail = error if isinstance(error, dict) else answer
            raise EtcdError(int(detail.get("code", 2) or 2), str(detail.get("message") or detail.get("error") or
                                                                   f"HTTP {response.status}"))
        return answer

    def _authenticate(self, index: int) -> None:
        assert self.credentials is not None
        user, password = self.credentials
        self.token = None
        answer = self._post(index, "/v3/auth/authenticate", {"name": user, "password": password})
        self.token = str(answer.get("token") or "") or None

    def call(self, path: str, body: dict) -> dict:
        """Post ``body`` to ``path``: the answer of the first endpoint that gives one."""
        failures = []
        for step in range(len(self.endpoints)):
            index = (self.current + step) % len(self.endpoints)
            try:
                if self.credentials is not None and self.token is None:
                    self._authenticate(index)
                try:
                    answer = self._post(index, path, body)
                except EtcdError as exc:
                    if self.credentials is None or (exc.code != UNAUTHENTICATED and INVALID_TOKEN not in exc.message):
                        raise
                    self._authenticate(index)           # the token expired: once more with a new one
                    answer = self._post(index, path, body)
            except EtcdError as exc:
                if exc.code not in RETRY_CODES:
                    raise
                failures.append(f"{self.endpoints[index]}: {exc.message}")
            except (OSError, http.client.HTTPException, EtcdUnavailable) as exc:
                failures.append(f"{self.endpoints[index]}: {exc or type(exc).__name__}")
            else:
                self.current = index
                return answer
        raise EtcdUnavailable("; ".join(failures))

    # ------------------------------------------------------------------ the calls the quorum needs

    def grant(self, ttl: int) -> tuple[int, int]:
        """A new lease: (id, granted TTL in seconds; etcd may raise a TTL below its minimum)."""
        answer = self.call("/v3/lease/grant", {"TTL": str(ttl)})
        return int(answer["ID"]), int(answer["TTL"])

    def keepalive(self, lease: int) -> int:
        """Renew ``lease``: its TTL, 0 when it no longer exists (expired or revoked)."""
        return int(self.call("/v3/lease/keepalive", {"ID": str(lease)}).get("TTL", 0))

    def revoke(self, lease: int) -> None:
        """Revoke ``lease`` (its keys are deleted); one already gone is no error."""
        try:
            self.call("/v3/lease/revoke", {"ID": str(lease)})
        except EtcdError as exc:
            if "lease not found" not in exc.message:
                raise

    def time_to_live(self, lease: int) -> tuple[int, int]:
        """(remaining TTL in whole seconds, rounded down, -1 when gone; granted TTL)."""
        answer = self.call("/v3/lease/timetolive", {"ID": str(lease)})
        return int(answer.get("TTL", -1)), int(answer.get("grantedTTL", 0))

    def put(self, key: str, value: str, lease: int = 0) -> None:
        self.call("/v3/kv/put", {"key": b64(key), "value": b64(value), "lease": str(lease)})

    def txn(self, compare: list[dict], success: list[dict], failure: list[dict]) -> tuple[bool, int, list[dict]]:
        """(succeeded, revision after it, the responses of the branch that ran)."""
        answer = self.call("/v3/kv/txn", {"compare": compare, "success": success, "failure": failure})
        return bool(answer.get("succeeded")), int(answer["header"]["revision"]), list(answer.get("responses", []))


def kvs(response: dict) -> list[dict]:
    """The key-values of one ``response_range`` of a transaction."""
    return list(response.get("response_range", {}).get("kvs", []))
