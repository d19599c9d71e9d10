"""The demo key-value server, as a real process on 127.0.0.1: every acknowledged PUT survives kill -9."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.ports import free_port  # noqa: F401 - test_demo_module imports it from here

KVSERVER = os.path.join(REPO, "modules", "demo", "kvserver.py")




def http_request(host: str, port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    """One request on its own connection: (status, body)."""
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class Server:
    """A kvserver process; ``start`` returns once /health answers."""

    def __init__(self, folder: Path) -> None:
        self.db = str(folder / "kv.sqlite3")
        self.pidfile = folder / "kv.pid"
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen([sys.executable, KVSERVER, "--bind", "127.0.0.1", "--port", str(self.port),
                                         "--db", self.db, "--pidfile", str(self.pidfile)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "kvserver exited at start"
            try:
                if self.request("GET", "/health")[0] == 200:
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("kvserver did not answer /health")

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        return http_request("127.0.0.1", self.port, method, path, body)

    def raw(self, data: bytes) -> bytes:
        """Send bytes as they are and return the whole answer."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            return sock.makefile("rb").read()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def server(tmp_path):
    srv = Server(tmp_path)
    srv.start()
    yield srv
    srv.stop()


def test_put_get_list_delete(server):
    assert server.request("GET", "/kv/a") == (404, b"no such key\n")
    assert server.request("PUT", "/kv/a", b"1") == (200, b"ok\n")
    assert server.request("PUT", "/kv/b%20c", b"\x00binary\xff") == (200, b"ok\n")
    assert server.request("PUT", "/kv/a", b"2") == (200, b"ok\n")
    assert server.request("GET", "/kv/a") == (200, b"2")
    assert server.request("GET", "/kv/b%20c") == (200, b"\x00binary\xff")
    assert server.request("GET", "/kv") == (200, b"a\nb c\n")
    assert server.request("DELETE", "/kv/a") == (200, b"ok\n")
    assert server.request("DELETE", "/kv/a") == (404, b"no such key\n")
    assert server.request("GET", "/kv") == (200, b"b c\n")
    assert server.request("GET", "/health") == (200, b"ok\n")


def test_database_is_wal_with_full_sync(server):
    import sqlite3
    with sqlite3.connect(server.db) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_malformed_requests_get_4xx_and_the_server_keeps_serving(server):
    # http.server answers an unparsable request line the HTTP/0.9 way: the error page, no status line.
    assert b"Error code: 400" in server.raw(b"this is not http\r\n\r\n")
    assert server.raw(b"GET /kv HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n").startswith(b"HTTP/1.1 431")
    assert server.raw(b"PUT /kv/x HTTP/1.1\r\nHost: a\r\n\r\n").startswith(b"HTTP/1.1 411")
    assert server.raw(b"PUT /kv/x HTTP/1.1\r\nContent-Length: -3\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert server.raw(b"PUT /kv/x HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n").startswith(b"HTTP/1.1 413")
    assert server.raw(b"PUT /kv/x HTTP/1.1\r\nContent-Length: 10\r\n\r\nshort").startswith(b"HTTP/1.1 400")
    assert server.raw(b"PUT /kv/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").startswith(
        b"HTTP/1.1 411")
    assert server.request("PUT", "/kv/%ff", b"v")[0] == 400
    assert server.request("PUT", "/kv/a%0Ab", b"v")[0] == 400
    assert server.request("PUT", "/kv/" + "k" * 1025, b"v")[0] == 400
    assert server.request("PUT", "/kv", b"v")[0] == 405
    assert server.request("GET", "/elsewhere")[0] == 404
    assert server.request("POST", "/kv/x", b"v")[0] == 501
    assert server.request("GET", "/kv") == (200, b"")
    assert server.request("GET", "/health") == (200, b"ok\n")


def test_every_acknowledged_put_survives_kill_9(server):
    acknowledged: dict[str, bytes] = {}
    stop = threading.Event()

    def writer(prefix: str) -> None:
        n = 0
        while not stop.is_set():
            key, value = f"{prefix}-{n}", f"value {prefix} {n}".encode() * 10
            try:
                status, _ = server.request("PUT", f"/kv/{key}", value)
            except (OSError, http.client.HTTPException):
                return  # the server died under us (maybe mid-answer): this PUT was never acknowledged
            if status == 200:
                acknowledged[key] = value
            n += 1

    threads = [threading.Thread(target=writer, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 20
    while len(acknowledged) < 300 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait()
    stop.set()
    for thread in threads:
        thread.join()
    assert len(acknowledged) >= 300
    server.start()
    listed = set(server.request("GET", "/kv")[1].decode().splitlines())
    assert set(acknowledged) <= listed
    for key, value in acknowledged.items():
        assert server.request("GET", f"/kv/{key}") == (200, value)


def test_sigterm_exits_cleanly_and_removes_the_pidfile(server):
    assert int(server.pidfile.read_text()) == server.process.pid
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=10) == 0
    assert not server.pidfile.exists()
