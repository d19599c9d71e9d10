"""The audit log: its rate limit (fake clock), and the replication link's refused CURVE clients
(a real ZAP authenticator and sockets over loopback)."""

from __future__ import annotations

import logging
import time

import zmq

from hamirror.audit import AuditLog
from hamirror.link import keys
from tests.conftest import run_cli


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def audit_log(clock: Clock, per_kind: int = 20) -> tuple[AuditLog, list[str]]:
    lines: list[str] = []
    logger = logging.getLogger("test.audit")
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())   # type: ignore[method-assign]
    logger.handlers[:] = [handler]
    logger.propagate = False
    return AuditLog(logger, interval=60.0, per_kind=per_kind, clock=clock), lines


def test_one_line_per_kind_and_source_per_interval_then_the_count_of_suppressed_ones():
    clock = Clock()
    log, lines = audit_log(clock)
    assert log.refused("http-token", "198.18.0.9", "wrong token")
    assert not any(log.refused("http-token", "198.18.0.9", "wrong token") for _ in range(41))
    assert log.refused("heartbeat", "198.18.0.9", "bad_mac")             # another kind: its own line
    assert log.refused("http-token", "198.18.0.10", "wrong token")       # another source: its own line
    clock.now += 60
    assert log.refused("http-token", "198.18.0.9", "wrong token")
    assert lines == ["audit: http-token from 198.18.0.9: wrong token",
                     "audit: heartbeat from 198.18.0.9: bad_mac",
                     "audit: http-token from 198.18.0.10: wrong token",
                     "audit: http-token from 198.18.0.9: wrong token (41 more from this source since the last line)"]


def test_a_flood_from_many_sources_is_bounded_per_kind():
    clock = Clock()
    log, lines = audit_log(clock, per_kind=3)
    logged = [log.refused("heartbeat", f"10.0.{i // 256}.{i % 256}", "bad_mac") for i in range(1000)]
    assert logged == [True] * 3 + [False] * 997 and len(lines) == 3
    clock.now += 61
    log.refused("heartbeat", "10.9.9.9", "bad_mac")
    assert lines[3:] == ["audit: heartbeat: 997 more refusal(s) from other sources were not logged in the last 60 s",
                         "audit: heartbeat from 10.9.9.9: bad_mac"]


def test_a_client_with_an_unknown_curve_key_is_audited_with_its_address(tmp_path, audit_lines):
    """Finding: failed CURVE handshakes were only visible to the client."""
    server_keys, intruder_keys = str(tmp_path / "server"), str(tmp_path / "intruder")
    run_cli("keygen", "--keys", server_keys, "--name", "node1", check=True)
    run_cli("keygen", "--keys", intruder_keys, "--name", "intruder", check=True)
    own, intruder = keys.load_own(server_keys), keys.load_own(intruder_keys)
    context = zmq.Context()
    try:
        keys.start_authenticator(context, server_keys)
        server = context.socket(zmq.ROUTER)
        keys.secure_server(server, own)
        port = server.bind_to_random_port("tcp://127.0.0.1")
        client = context.socket(zmq.DEALER)
        keys.secure_client(client, intruder, own.public)
        client.connect(f"tcp://127.0.0.1:{port}")
        client.send(b"hello", zmq.NOBLOCK)
        deadline = time.monotonic() + 10
        while not audit_lines() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.poll(100) == 0                                  # nothing got through
        for sock in (client, server):
            sock.close(0)
    finally:
        keys.stop_authenticator(context)
        context.term()
    public = intruder.public.decode()
    assert audit_lines() == [f"audit: curve from 127.0.0.1: replication link refused a client: Unknown key "
                             f"(public key {public})"]
