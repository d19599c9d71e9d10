"""The HTTP status API, served for real on loopback (ephemeral ports) with a fake status provider."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from hamirror.agent import http
from hamirror.agent.http import HttpServer, render_metrics
from hamirror.config.cluster import HttpConfig

TOKEN = "s3cret-token-0123456789"


def status_doc(state: str = "PRIM", resync: dict | None = None) -> dict:
    return {
        "node": "node1", "cluster": "lab",
        "peer": {"name": "node2", "alive": True, "networks": [], "rejected": {"bad_mac": 3, "replay": 1}},
        "modules": [{"name": "demo", "state": state, "peer_state": "SECOND", "uptodate": True, "resync": resync,
                     "relation": "same", "warnings": [], "error": None, "mirror": "fenced", "maintenance": True,
                     "failovers": {"recent": 2, "max": 3, "window": 600.0, "damped": True}},
                    {"name": "db", "state": "WAIT", "peer_state": None, "uptodate": False,
                     "resync": {"done_bytes": 123456789012, "total_bytes": 234567890123}}],
    }


class Provider:
    """The agent's ``status()``: returns ``doc``, or raises when ``fail`` is set."""

    def __init__(self, doc: dict | None = None) -> None:
        self.doc = doc or status_doc()
        self.fail = False

    def __call__(self) -> dict:
        if self.fail:
            raise RuntimeError("runner exploded")
        return self.doc


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


async def exchange(port: int, raw: bytes, host: str = "127.0.0.1") -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(raw)
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert int(headers["Content-Length"]) == len(body) or raw.startswith(b"HEAD ")
    return int(lines[0].split()[1]), headers, body


def get(path: str, *extra: str, method: str = "GET") -> bytes:
    return "\r\n".join([f"{method} {path} HTTP/1.1", "Host: 127.0.0.1:9453", *extra, "", ""]).encode()


async def serving(provider, *requests: bytes, config: HttpConfig | None = None, host: str = "127.0.0.1"):
    """Start a server, send each request on its own connection, return the answers."""
    server = HttpServer(config or HttpConfig("127.0.0.1:0"), provider)
    assert await server.start(), server.error
    try:
        return [await exchange(server.port, raw, host) for raw in requests]
    finally:
        await server.close()


def test_status_is_the_status_document():
    provider = Provider()
    [(code, headers, body)] = run(serving(provider, get("/status")))
    assert (code, headers["Content-Type"], headers["Connection"]) == (200, "application/json", "close")
    assert json.loads(body) == provider.doc
    assert body == json.dumps(provider.doc, indent=1).encode() + b"\n"   # as `hamirror status --json` prints it


@pytest.mark.parametrize("state, code", [("PRIM", 200), ("ALONE", 200), ("SECOND", 503), ("WAIT", 503),
                                         ("STOP", 503)])
def test_health_code_per_state(state, code):
    answers = run(serving(Provider(status_doc(state)), get("/health/demo"), get("/health/demo", method="HEAD")))
    assert answers[0][0] == code and answers[0][2] == f"{state}\n".encode()
    assert answers[1][0] == code and answers[1][2] == b""
    assert answers[1][1]["Content-Length"] == str(len(state) + 1)


def test_health_of_an_unknown_module_is_404():
    [(code, _, body)] = run(serving(Provider(), get("/health/nope")))
    assert (code, body) == (404, b"no module 'nope' on this node\n")


def test_metrics_exact_text():
    [(code, headers, body)] = run(serving(Provider(status_doc("ALONE")), get("/metrics")))
    assert (code, headers["Content-Type"]) == (200, "text/plain; version=0.0.4; charset=utf-8")
    reasons = ["oversized", "malformed", "bad_mac", "wrong_cluster", "unknown_sender", "own_name",
               "wrong_network", "replay", "skew", "version"]
    counts = {"bad_mac": 3, "replay": 1}
    states = ["STOP", "WAIT", "SECOND", "PRIM", "ALONE"]
    expected = [
        "# HELP hamirror_info This node, its cluster and its peer (always 1).",
        "# TYPE hamirror_info gauge",
        'hamirror_info{node="node1",cluster="lab",peer="node2"} 1',
        "# HELP hamirror_peer_alive 1 when the peer's heartbeats are heard on some network.",
        "# TYPE hamirror_peer_alive gauge",
        'hamirror_peer_alive{peer="node2"} 1',
        "# HELP hamirror_heartbeat_rejected_total Heartbeat datagrams rejected, by reason.",
        "# TYPE hamirror_heartbeat_rejected_total counter",
        *[f'hamirror_heartbeat_rejected_total{{reason="{r}"}} {counts.get(r, 0)}' for r in reasons],
        "# HELP hamirror_module_state 1 for the module's current state on this node, else 0.",
        "# TYPE hamirror_module_state gauge",
        *[f'hamirror_module_state{{module="demo",state="{s}"}} {int(s == "ALONE")}' for s in states],
        *[f'hamirror_module_state{{module="db",state="{s}"}} {int(s == "WAIT")}' for s in states],
        "# HELP hamirror_module_serving 1 when the module's application serves here (health check 200).",
        "# TYPE hamirror_module_serving gauge",
        'hamirror_module_serving{module="demo"} 1',
        'hamirror_module_serving{module="db"} 0',
        "# HELP hamirror_module_target_state 1 for the state a running action sequence leads to, else 0.",
        "# TYPE hamirror_module_target_state gauge",
        *[f'hamirror_module_target_state{{module="{m}",state="{s}"}} 0' for m in ("demo", "db") for s in states],
        "# HELP hamirror_module_uptodate 1 when this node's copy of the module's data is up to date.",
        "# TYPE hamirror_module_uptodate gauge",
        'hamirror_module_uptodate{module="demo"} 1',
        'hamirror_module_uptodate{module="db"} 0',
        "# HELP hamirror_module_mirror 1 for what the primary's mounts really do (streaming, syncing, alone, "
        "fenced, refused, dead).",
        "# TYPE hamirror_module_mirror gauge",
        *[f'hamirror_module_mirror{{module="{m}",mirror="{h}"}} {int(m == "demo" and h == "fenced")}'
          for m in ("demo", "db") for h in ("streaming", "syncing", "alone", "fenced", "refused", "dead")],
        "# HELP hamirror_module_fenced 1 while the module's writes are blocked waiting for a fencing verdict "
        "(the peer stopped acknowledging).",
        "# TYPE hamirror_module_fenced gauge",
        'hamirror_module_fenced{module="demo"} 1',
        'hamirror_module_fenced{module="db"} 0',
        "# HELP hamirror_module_maintenance 1 while the module is in maintenance (a cluster-wide setting; "
        "checkers and automatic failover suspended).",
        "# TYPE hamirror_module_maintenance gauge",
        'hamirror_module_maintenance{module="demo"} 1',
        'hamirror_module_maintenance{module="db"} 0',
        "# HELP hamirror_module_failovers Failovers of this node within the flap-damping window.",
        "# TYPE hamirror_module_failovers gauge",
        'hamirror_module_failovers{module="demo"} 2',
        'hamirror_module_failovers{module="db"} 0',
        "# HELP hamirror_module_failover_damped 1 while failovers are held back (flap damping) until "
        "`hamirror clear MODULE`.",
        "# TYPE hamirror_module_failover_damped gauge",
        'hamirror_module_failover_damped{module="demo"} 1',
        'hamirror_module_failover_damped{module="db"} 0',
        "# HELP hamirror_resync_failures Resync attempts in a row that failed the same way (0 after a completed "
        "resync).",
        "# TYPE hamirror_resync_failures gauge",
        'hamirror_resync_failures{module="demo"} 0',
        'hamirror_resync_failures{module="db"} 0',
        "# HELP hamirror_resync_alarm 1 when the resync failed the same way 3 times in a row (label error: the "
        "failure).",
        "# TYPE hamirror_resync_alarm gauge",
        'hamirror_resync_alarm{module="demo",error=""} 0',
        'hamirror_resync_alarm{module="db",error=""} 0',
        "# HELP hamirror_resync_done_bytes Bytes copied by the running resync (0 when none runs).",
        "# TYPE hamirror_resync_done_bytes gauge",
        'hamirror_resync_done_bytes{module="demo"} 0',
        'hamirror_resync_done_bytes{module="db"} 123456789012',
        "# HELP hamirror_resync_total_bytes Bytes the running resync has to copy (0 when none runs).",
        "# TYPE hamirror_resync_total_bytes gauge",
        'hamirror_resync_total_bytes{module="demo"} 0',
        'hamirror_resync_total_bytes{module="db"} 234567890123',
        "# HELP hamirror_heartbeat_network_up 1 when the peer's heartbeats are heard on this network.",
        "# TYPE hamirror_heartbeat_network_up gauge",
        "# HELP hamirror_module_checker_failing 1 while one of the module's checkers fails here.",
        "# TYPE hamirror_module_checker_failing gauge",
        'hamirror_module_checker_failing{module="demo"} 0',
        'hamirror_module_checker_failing{module="db"} 0',
    ]
    assert body.decode().split("\n") == [*expected, *NO_VERIFY, *NO_DIFFERENCE, ""]


def test_metrics_of_each_heartbeat_network_the_checkers_the_witness_lease_and_the_notify_hook():
    """Issue 17, alerts: a lost network, a failing checker, a lost lease, a failing hook are visible."""
    from hamirror.agent.http import render_metrics
    doc = status_doc("PRIM")
    doc["peer"]["networks"] = [{"local": "10.0.0.1:7401", "peer": "10.0.0.2:7401", "up": True},
                               {"local": "192.168.5.1:7401", "peer": "192.168.5.2:7401", "up": False}]
    doc["modules"][0]["checker"] = "port: connection refused"
    doc["witness"] = {"witness": "198.18.0.9:7402", "holds": True, "answer_age": 0.25}
    doc["notify"] = {"script": "/etc/hamirror/notify", "sent": 7, "failed": 2, "dropped": 0}
    lines = render_metrics(doc).split("\n")
    for line in ('hamirror_heartbeat_network_up{local="10.0.0.1:7401",peer="10.0.0.2:7401"} 1',
                 'hamirror_heartbeat_network_up{local="192.168.5.1:7401",peer="192.168.5.2:7401"} 0',
                 'hamirror_module_checker_failing{module="demo"} 1',
                 'hamirror_module_checker_failing{module="db"} 0',
                 'hamirror_witness_lease_held{witness="198.18.0.9:7402"} 1',
                 'hamirror_witness_answer_age_seconds{witness="198.18.0.9:7402"} 0.25',
                 'hamirror_notify_total{result="sent"} 7', 'hamirror_notify_total{result="failed"} 2',
                 'hamirror_notify_total{result="dropped"} 0'):
        assert line in lines, line


# The online verify's families (hamirror/agent/verify.py) for modules never verified.
NO_VERIFY = [
    "# HELP hamirror_verify_out_of_sync_bytes Bytes out of sync found by the last verify on this node (before any repair).",
    "# TYPE hamirror_verify_out_of_sync_bytes gauge",
    'hamirror_verify_out_of_sync_bytes{module="demo"} 0',
    'hamirror_verify_out_of_sync_bytes{module="db"} 0',
    "# HELP hamirror_verify_remaining_bytes Bytes still out of sync after the last verify (and its repair, if asked).",
    "# TYPE hamirror_verify_remaining_bytes gauge",
    'hamirror_verify_remaining_bytes{module="demo"} 0',
    'hamirror_verify_remaining_bytes{module="db"} 0',
    "# HELP hamirror_verify_differences Differences (ranges and entries) the last verify found.",
    "# TYPE hamirror_verify_differences gauge",
    'hamirror_verify_differences{module="demo"} 0',
    'hamirror_verify_differences{module="db"} 0',
    "# HELP hamirror_verify_last_timestamp_seconds When the last verify ended (Unix time; 0: never).",
    "# TYPE hamirror_verify_last_timestamp_seconds gauge",
    'hamirror_verify_last_timestamp_seconds{module="demo"} 0',
    'hamirror_verify_last_timestamp_seconds{module="db"} 0',
    "# HELP hamirror_verify_failed 1 when the last verify could not complete.",
    "# TYPE hamirror_verify_failed gauge",
    'hamirror_verify_failed{module="demo"} 0',
    'hamirror_verify_failed{module="db"} 0',
]

# The agreement's families (hamirror/agent/agreement.py) for a document that reports no difference.
NO_DIFFERENCE = [
    "# HELP hamirror_config_differs 1 when this node's configuration differs from the peer's (scope cluster: "
    "the cluster file's shared part, or modules configured on one node only; scope module: that module's folder).",
    "# TYPE hamirror_config_differs gauge",
    'hamirror_config_differs{scope="cluster",module=""} 0',
    'hamirror_config_differs{scope="module",module="demo"} 0',
    'hamirror_config_differs{scope="module",module="db"} 0',
    "# HELP hamirror_peer_incompatible 1 while the peer's heartbeats are refused: it speaks a protocol newer "
    "than this node knows.",
    "# TYPE hamirror_peer_incompatible gauge",
    "hamirror_peer_incompatible 0",
    "# HELP hamirror_version_info The release of this node and of its peer (always 1).",
    "# TYPE hamirror_version_info gauge",
    'hamirror_version_info{software="",peer_software=""} 1',
]


def test_a_resync_failing_the_same_way_three_times_is_an_alarm_in_the_metrics():
    doc = {"node": "n", "cluster": "lab", "peer": {"name": "p", "alive": True},
           "modules": [{"name": "db", "resync_failures": {"count": 3, "alarm": True,
                                                          "error": 'peer refused operation 7: [Errno 28] "full"'}}]}
    lines = render_metrics(doc).split("\n")
    assert 'hamirror_resync_failures{module="db"} 3' in lines
    assert 'hamirror_resync_alarm{module="db",error="peer refused operation 7: [Errno 28] \\"full\\""} 1' in lines


def test_metrics_escape_label_values():
    doc = {"node": 'a"b\\c\nd', "cluster": "lab", "peer": {"name": "p", "alive": False}, "modules": []}
    assert 'hamirror_info{node="a\\"b\\\\c\\nd",cluster="lab",peer="p"} 1' in render_metrics(doc).split("\n")
    assert 'hamirror_peer_alive{peer="p"} 0' in render_metrics(doc).split("\n")


def test_errors_404_405_413_and_malformed_requests():
    requests = {
        "404": get("/nothing"),
        "405": get("/status", "Content-Length: 0", method="POST"),
        "413": get("/status", "Content-Length: 100000000"),
        "bad line": b"NONSENSE\r\n\r\n",
        "bad version": b"GET /status HTTP/2.0\r\n\r\n",
        "not a version": b"GET /status FTP/1.0\r\n\r\n",
        "bad header": get("/status", "no colon here"),
        "bad length": get("/status", "Content-Length: -1"),
        "two lengths": get("/status", "Content-Length: 0", "Content-Length: 0"),
        "chunked": get("/status", "Transfer-Encoding: chunked"),
        "absolute target": b"GET http://example.org/status HTTP/1.1\r\n\r\n",
        "binary": b"GET /st\xffatus HTTP/1.1\r\n\r\n",
        "bad utf-8 path": get("/health/%ff"),
        "huge head": get("/status", *[f"X-Pad-{i}: {'x' * 200}" for i in range(60)]),
        "huge line": b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n",
    }
    answers = dict(zip(requests, run(serving(Provider(), *requests.values()))))
    codes = {name: answer[0] for name, answer in answers.items()}
    assert codes == {"404": 404, "405": 405, "413": 413, "bad line": 400, "bad version": 505,
                     "not a version": 400, "bad header": 400, "bad length": 400, "two lengths": 400,
                     "chunked": 501, "absolute target": 400, "binary": 400, "bad utf-8 path": 400,
                     "huge head": 431, "huge line": 431}
    assert answers["405"][1]["Allow"] == "GET, HEAD"
    assert answers["405"][2] == b"POST not allowed: this API is read-only\n"
    assert answers["404"][2] == b"no such endpoint '/nothing' (try /, /status, /health/MODULE, /metrics, /events)\n"
    assert answers["413"][2] == b"request body over 1024 bytes\n"


def test_a_small_body_and_a_query_string_are_accepted_lf_only_lines_too():
    answers = run(serving(Provider(), get("/health/demo?x=1", "Content-Length: 4") + b"abcd",
                          b"GET /health/demo HTTP/1.0\n\n"))
    assert [(code, body) for code, _, body in answers] == [(200, b"PRIM\n"), (200, b"PRIM\n")]


def test_a_failing_provider_gives_500_and_the_server_keeps_serving():
    provider = Provider()

    async def scenario():
        server = HttpServer(HttpConfig("127.0.0.1:0"), provider)
        assert await server.start()
        try:
            provider.fail = True
            first = await exchange(server.port, get("/status"))
            provider.fail = False
            return first, await exchange(server.port, get("/health/demo"))
        finally:
            await server.close()

    (code, _, body), (code2, _, body2) = run(scenario())
    assert (code, body) == (500, b"internal error: runner exploded\n")
    assert (code2, body2) == (200, b"PRIM\n")


def test_silent_half_open_and_slow_clients_do_not_block_others(monkeypatch):
    monkeypatch.setattr(http, "HEAD_TIMEOUT", 0.5)

    async def scenario():
        server = HttpServer(HttpConfig("127.0.0.1:0"), Provider())
        assert await server.start()
        try:
            silent = await asyncio.open_connection("127.0.0.1", server.port)
            partial = await asyncio.open_connection("127.0.0.1", server.port)
            partial[1].write(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n")      # never finished
            closed = await asyncio.open_connection("127.0.0.1", server.port)
            closed[1].close()                                                     # nothing sent
            ok = await exchange(server.port, get("/health/demo"))                 # served meanwhile
            timed_out = await asyncio.wait_for(partial[0].read(), 5)
            silent_answer = await asyncio.wait_for(silent[0].read(), 5)
            for _, writer in (silent, partial):
                writer.close()
            return ok, timed_out, silent_answer
        finally:
            await server.close()

    ok, timed_out, silent_answer = run(scenario())
    assert ok[0] == 200
    assert timed_out.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert silent_answer.startswith(b"HTTP/1.1 408 ")


def test_dns_names_in_host_are_refused_without_a_token():
    answers = run(serving(Provider(), get("/status").replace(b"Host: 127.0.0.1:9453", b"Host: evil.example:9453"),
                          get("/status").replace(b"Host: 127.0.0.1:9453", b"Host: localhost:9453"),
                          get("/status").replace(b"Host: 127.0.0.1:9453", b"Host: [::1]:9453"),
                          b"GET /status HTTP/1.0\r\n\r\n"))
    assert [code for code, _, _ in answers] == [421, 200, 200, 200]


def write_token(tmp_path, text: str = TOKEN, mode: int = 0o600) -> str:
    path = tmp_path / "http.token"
    path.write_text(text + "\n")
    os.chmod(path, mode)
    return str(path)


def test_token_is_required_when_configured(tmp_path):
    """127.0.0.2 stands for a network address: the rule follows the configuration, not the address."""
    config = HttpConfig("127.0.0.2:0", token_file=write_token(tmp_path))
    answers = run(serving(Provider(), get("/status"), get("/metrics", "Authorization: Bearer wrong"),
                          get("/health/demo", "Authorization: Basic " + TOKEN),
                          get("/status", f"Authorization: Bearer {TOKEN}"),
                          get("/health/demo", f"Authorization: bearer {TOKEN}"),
                          get("/status").replace(b"127.0.0.1:9453", b"alpha.example:9453"),
                          get("/nope"),
                          config=config, host="127.0.0.2"))
    codes = [code for code, _, _ in answers]
    assert codes == [401, 401, 401, 200, 200, 401, 401]      # the token first, even for a 404
    assert answers[0][1]["WWW-Authenticate"] == 'Bearer realm="hamirror"'
    assert answers[0][2] == b"missing or wrong bearer token\n"
    assert json.loads(answers[3][2])["node"] == "node1"


def test_a_token_allows_host_names(tmp_path):
    config = HttpConfig("127.0.0.2:0", token_file=write_token(tmp_path))
    raw = get("/health/demo", f"Authorization: Bearer {TOKEN}").replace(b"127.0.0.1:9453", b"alpha.example")
    [(code, _, body)] = run(serving(Provider(), raw, config=config, host="127.0.0.2"))
    assert (code, body) == (200, b"PRIM\n")


@pytest.mark.parametrize("text, mode, problem", [
    (TOKEN, 0o644, "token file is accessible by other users (mode 0644); chmod 600 it"),
    ("short", 0o600, "the token must be one word of at least 16 characters"),
    ("two words here and more", 0o600, "the token must be one word of at least 16 characters"),
])
def test_bad_token_files_keep_the_api_closed(tmp_path, text, mode, problem):
    path = write_token(tmp_path, text, mode)

    async def scenario():
        server = HttpServer(HttpConfig("127.0.0.1:0", token_file=path), Provider())
        return await server.start(), server.error, server.server

    assert run(scenario()) == (False, f"{path}: {problem}", None)


def test_missing_token_file_and_open_bind_without_token_are_refused(tmp_path):
    async def scenario(config):
        server = HttpServer(config, Provider())
        return await server.start(), server.error

    missing = str(tmp_path / "none")
    ok, error = run(scenario(HttpConfig("127.0.0.1:0", token_file=missing)))
    assert not ok and "No such file or directory" in error
    assert run(scenario(HttpConfig("0.0.0.0:0"))) == (
        False, "http.listen 0.0.0.0:0 is not a loopback address and http.token_file is not set")


def test_address_in_use_is_reported_not_raised():
    async def scenario():
        first = HttpServer(HttpConfig("127.0.0.1:0"), Provider())
        assert await first.start()
        try:
            second = HttpServer(HttpConfig(f"127.0.0.1:{first.port}"), Provider())
            return await second.start(), second.error
        finally:
            await first.close()

    ok, error = run(scenario())
    assert not ok and "address already in use" in error.lower()


def test_a_large_body_sent_anyway_still_gets_its_413():
    raw = get("/status", "Content-Length: 2000000", method="PUT") + b"x" * 2_000_000
    [(code, _, body)] = run(serving(Provider(), raw))
    assert (code, body) == (413, b"request body over 1024 bytes\n")


def test_connections_beyond_the_cap_get_429_never_503(monkeypatch, audit_lines):
    """503 is the health check's "not primary": a full server must not say it."""
    monkeypatch.setattr(http, "MAX_CONNECTIONS", 1)
    monkeypatch.setattr(http, "LOCAL_RESERVE", 0)

    async def scenario():
        server = HttpServer(HttpConfig("127.0.0.1:0"), Provider())
        assert await server.start()
        try:
            idle = await asyncio.open_connection("127.0.0.1", server.port)
            await asyncio.sleep(0.2)                        # the idle client holds the only slot
            refused = [await exchange(server.port, get("/status")) for _ in range(3)]
            idle[1].write(get("/health/demo"))
            served = await asyncio.wait_for(idle[0].read(), 5)
            idle[1].close()
            return refused, served
        finally:
            await server.close()

    refused, served = run(scenario())
    assert [(code, headers["Retry-After"], body) for code, headers, body in refused] == \
        [(429, "1", b"too many connections\n")] * 3
    assert served.startswith(b"HTTP/1.1 200 OK\r\n")
    assert audit_lines() == ["audit: http-connections from 127.0.0.1: connection refused: 1 connections open (cap 1)"]


async def open_idle(port: int, source: str, count: int) -> list:
    """``count`` connections from ``source`` that never send a byte."""
    return [await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0)) for _ in range(count)]


def test_unauthenticated_clients_cannot_take_the_slots_of_health_checks(monkeypatch, tmp_path, audit_lines):
    """Finding: 32 idle connections without a token made the primary's health check answer 503.

    Only 127.0.0.1 counts as this host here, so 127.0.0.2 and 127.0.0.3 stand for the network."""
    monkeypatch.setattr(http, "is_local", lambda host: host == "127.0.0.1")
    monkeypatch.setattr(http, "HEAD_TIMEOUT", 1.0)
    config = HttpConfig("127.0.0.1:0", token_file=write_token(tmp_path))
    health = get("/health/demo", f"Authorization: Bearer {TOKEN}")

    async def scenario():
        server = HttpServer(config, Provider())
        assert await server.start()
        try:
            idle = await open_idle(server.port, "127.0.0.2", 40)           # an attacker's flood
            await asyncio.sleep(0.2)
            refused = [await asyncio.wait_for(r.read(), 5) for r, _ in idle[http.MAX_PER_SOURCE:]]
            local = await exchange(server.port, health)                    # the local health check
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port, local_addr=("127.0.0.3", 0))
            writer.write(health)                                           # the load balancer
            remote = await asyncio.wait_for(reader.read(), 5)
            timed_out = [await asyncio.wait_for(r.read(), 5) for r, _ in idle[:http.MAX_PER_SOURCE]]
            for _, w in idle + [(reader, writer)]:
                w.close()
            return refused, local, remote, timed_out
        finally:
            await server.close()

    refused, local, remote, timed_out = run(scenario())
    assert local[0] == 200 and local[2] == b"PRIM\n"
    assert remote.startswith(b"HTTP/1.1 200 OK\r\n") and remote.endswith(b"PRIM\n")
    assert all(r.startswith(b"HTTP/1.1 429 Too Many Requests\r\n") for r in refused) and len(refused) == 36
    assert all(r.startswith(b"HTTP/1.1 408 ") for r in timed_out)          # a slot is held 1 s at most
    assert audit_lines() == ["audit: http-connections from 127.0.0.2: connection refused: 4 connections open from "
                     "127.0.0.2 (cap 4 per source)"]                      # 36 refusals, one line


def test_the_last_slots_are_kept_for_loopback_clients(monkeypatch):
    monkeypatch.setattr(http, "is_local", lambda host: host == "127.0.0.1")
    monkeypatch.setattr(http, "MAX_PER_SOURCE", 100)

    async def scenario():
        server = HttpServer(HttpConfig("127.0.0.1:0"), Provider())
        assert await server.start()
        try:
            idle = await open_idle(server.port, "127.0.0.2", http.MAX_CONNECTIONS)
            await asyncio.sleep(0.2)
            refused = [await asyncio.wait_for(r.read(), 5) for r, _ in idle[-http.LOCAL_RESERVE:]]
            served = await exchange(server.port, get("/health/demo"))
            for _, w in idle:
                w.close()
            return refused, served
        finally:
            await server.close()

    refused, served = run(scenario())
    assert all(r.startswith(b"HTTP/1.1 429 ") for r in refused)
    assert served[0] == 200


def test_rejected_tokens_are_audited_with_their_source(tmp_path, audit_lines):
    config = HttpConfig("127.0.0.2:0", token_file=write_token(tmp_path))
    answers = run(serving(Provider(), *[get("/status", "Authorization: Bearer wrong")] * 3,
                          config=config, host="127.0.0.2"))
    assert [code for code, _, _ in answers] == [401] * 3
    assert audit_lines() == ["audit: http-token from 127.0.0.1: missing or wrong bearer token for '/status'"]


@pytest.mark.parametrize("host, local, key", [
    ("127.0.0.1", True, "127.0.0.1"), ("127.9.9.9", True, "127.9.9.9"), ("::1", True, "::1"),
    ("::ffff:127.0.0.1", True, "127.0.0.1"), ("198.18.0.7", False, "198.18.0.7"),
    ("2001:db8::1:2:3:4", False, "2001:db8::/64"), ("fe80::1%eth0", False, "fe80::/64"),
])
def test_local_clients_and_source_keys(host, local, key):
    assert (http.is_local(host), http.source_key(host)) == (local, key)
