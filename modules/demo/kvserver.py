#!/usr/bin/env python3
"""Demo key-value service over HTTP, storing every key in SQLite inside the replicated directory.

It exists to prove that every acknowledged write survives a failover: ``PUT`` answers 200 only
after the transaction committed (WAL, ``synchronous=FULL``: the commit is fsynced, and through
hamirror that fsync is on both nodes).

    PUT    /kv/KEY   body = value         200 "ok" once committed
    GET    /kv/KEY                        200 value, or 404
    DELETE /kv/KEY                        200, or 404
    GET    /kv                            200 the keys, sorted, one per line (text/plain)
    GET    /health                        200 "ok"

Keys are URL-decoded UTF-8, 1 to 1024 characters, without control characters; values are bytes
up to 1 MiB. Malformed requests get a 4xx answer. Standard library only.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sqlite3
import sys
import threading
import urllib.parse
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_KEY = 1024
MAX_VALUE = 1 << 20


class Store:
    """One SQLite connection shared by the request threads, behind a lock (SQLite writes serially anyway)."""

    def __init__(self, path: str) -> None:
        self.lock = threading.Lock()
        self.db: sqlite3.Connection | None = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL)")

    def _run(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self.lock:
            if self.db is None:
                raise sqlite3.OperationalError("the store is closed")
            return self.db.execute(sql, params).fetchall()

    def put(self, key: str, value: bytes) -> None:
        """Returns once committed: in autocommit mode each statement is its own transaction."""
        self._run("INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                  (key, value))

    def get(self, key: str) -> bytes | None:
        rows = self._run("SELECT value FROM kv WHERE key = ?", (key,))
        return bytes(rows[0][0]) if rows else None

    def delete(self, key: str) -> bool:
        return bool(self._run("DELETE FROM kv WHERE key = ? RETURNING key", (key,)))

    def keys(self) -> list[str]:
        return [row[0] for row in self._run("SELECT key FROM kv ORDER BY key")]

    def close(self) -> None:
        with self.lock:
            if self.db is not None:
                self.db.close()
                self.db = None


class BadRequest(Exception):
    """A client error: status and one-line reason."""

    def __init__(self, status: HTTPStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class Handler(BaseHTTPRequestHandler):
    server_version = "hamirror-demo-kv/1"
    protocol_version = "HTTP/1.1"
    timeout = 30  # a client that stops sending does not hold a thread forever
    store: Store

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
        sys.stderr.write("%s %s\n" % (self.address_string(), format % args))

    def _answer(self, status: HTTPStatus, body: bytes = b"", content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _key(self) -> str | None:
        """The key of a /kv/KEY path, None for /kv itself; BadRequest for anything else."""
        path = urllib.parse.urlsplit(self.path).path
        if path in ("/kv", "/kv/"):
            return None
        if not path.startswith("/kv/"):
            raise BadRequest(HTTPStatus.NOT_FOUND, "no such resource")
        try:
            key = urllib.parse.unquote(path[4:], errors="strict")
        except UnicodeDecodeError:
            raise BadRequest(HTTPStatus.BAD_REQUEST, "key is not UTF-8") from None
        if not 1 <= len(key) <= MAX_KEY or any(ord(c) < 32 or ord(c) == 127 for c in key):
            raise BadRequest(HTTPStatus.BAD_REQUEST, f"key must be 1 to {MAX_KEY} characters, no control characters")
        return key

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise BadRequest(HTTPStatus.LENGTH_REQUIRED, "chunked bodies are not supported; send Content-Length")
        length = self.headers.get("Content-Length")
        if length is None:
            raise BadRequest(HTTPStatus.LENGTH_REQUIRED, "Content-Length required")
        if not length.strip().isdigit():
            raise BadRequest(HTTPStatus.BAD_REQUEST, "Content-Length must be a number")
        if int(length) > MAX_VALUE:
            raise BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"value larger than {MAX_VALUE} bytes")
        body = self.rfile.read(int(length))
        if len(body) != int(length):
            raise BadRequest(HTTPStatus.BAD_REQUEST, "body shorter than Content-Length")
        return body

    def _dispatch(self, action: Callable[[], None]) -> None:
        try:
            action()
        except BadRequest as exc:
            self.close_connection = True
            self._answer(exc.status, f"{exc}\n".encode())
        except sqlite3.Error as exc:
            self.close_connection = True
            self._answer(HTTPStatus.SERVICE_UNAVAILABLE, f"storage error: {exc}\n".encode())

    def do_GET(self) -> None:
        self._dispatch(self._get)

    def do_HEAD(self) -> None:
        self._dispatch(self._get)

    def do_PUT(self) -> None:
        self._dispatch(self._put)

    def do_DELETE(self) -> None:
        self._dispatch(self._delete)

    def _get(self) -> None:
        if urllib.parse.urlsplit(self.path).path == "/health":
            self.store.get("")  # proves the database answers
            self._answer(HTTPStatus.OK, b"ok\n")
            return
        key = self._key()
        if key is None:
            self._answer(HTTPStatus.OK, "".join(k + "\n" for k in self.store.keys()).encode())
            return
        value = self.store.get(key)
        if value is None:
            raise BadRequest(HTTPStatus.NOT_FOUND, "no such key")
        self._answer(HTTPStatus.OK, value, "application/octet-stream")

    def _put(self) -> None:
        key = self._key()
        if key is None:
            raise BadRequest(HTTPStatus.METHOD_NOT_ALLOWED, "PUT needs /kv/KEY")
        self.store.put(key, self._body())
        self._answer(HTTPStatus.OK, b"ok\n")

    def _delete(self) -> None:
        key = self._key()
        if key is None:
            raise BadRequest(HTTPStatus.METHOD_NOT_ALLOWED, "DELETE needs /kv/KEY")
        if not self.store.delete(key):
            raise BadRequest(HTTPStatus.NOT_FOUND, "no such key")
        self._answer(HTTPStatus.OK, b"ok\n")


class Server(ThreadingHTTPServer):
    """Binds with IP_FREEBIND so that starting a moment before the VIP is up does not fail."""

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET:
            self.socket.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_FREEBIND", 15), 1)
        super().server_bind()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="hamirror demo: HTTP key-value store on SQLite")
    parser.add_argument("--bind", default="127.0.0.1", help="address to listen on (the VIP)")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--db", required=True, help="SQLite file, inside the replicated directory")
    parser.add_argument("--pidfile", default=None, help="written once listening, removed at a clean exit")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    store = Store(args.db)
    Handler.store = store
    Server.address_family = socket.AF_INET6 if ":" in args.bind else socket.AF_INET
    server = Server((args.bind, args.port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if args.pidfile:
        with open(args.pidfile + ".tmp", "w") as stream:
            stream.write(f"{os.getpid()}\n")
        os.replace(args.pidfile + ".tmp", args.pidfile)
    print(f"kvserver listening on {args.bind}:{args.port}, database {args.db}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        store.close()
        if args.pidfile:
            try:
                os.unlink(args.pidfile)
            except FileNotFoundError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
