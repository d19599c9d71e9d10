"""The web console on real HTTP servers (loopback): both nodes on one page, unreachable peers, login,
commands with their CSRF and Origin checks. The agent behind each server is a small fake source;
the real agent and a real browser are in test_console_browser.py."""

from __future__ import annotations

import asyncio
import json
import re
import time
from types import SimpleNamespace

import pytest

from hamirror.actions.checkers import Checker
from hamirror.agent import control
from hamirror.agent.checks import CheckerState
from hamirror.agent.console import Console, Gatherer, Peer, auth, gather, view
from hamirror.agent.http import HttpServer
from hamirror.config.cluster import HttpConfig
from tests.test_agent_http import TOKEN, exchange, write_token


class Ok(Checker):
    def check(self) -> str | None:
        return None


def module_status(state: str, peer_state: str | None, **more) -> dict:
    return {"name": "demo", "state": state, "peer_state": peer_state, "uptodate": state in ("PRIM", "SECOND", "ALONE"),
            "mirror": "streaming" if state == "PRIM" else None, "serving": state in ("PRIM", "ALONE"),
            "resync": None, "last_resync": None, "failovers": {"recent": 0, "max": 3, "window": 600.0},
            "warnings": [], "error": None, **more}


class Source:
    """What the console reads from an agent: status, runners (counters, checkers), module configs."""

    def __init__(self, node: str, peer: str, state: str, peer_state: str | None) -> None:
        self.node, self.peer = node, peer
        self.entry = module_status(state, peer_state)
        checkers = CheckerState("demo", [Ok("http-port", interval=2.0)])
        checkers.results["http-port"] = (time.time(), None)
        self.runners = {"demo": SimpleNamespace(name="demo", checkers=checkers, executor=SimpleNamespace(vip=None),
                                                obs=SimpleNamespace(mounts=({"bytes_sent": 0, "ops_sent": 0,
                                                                             "in_flight": 3},), receivers=()))}
        self.modules = [SimpleNamespace(name="demo", mode="sync", vip=SimpleNamespace(address="198.18.0.100/24"))]
        self.handled: list[tuple[dict, dict | None]] = []

    def status(self) -> dict:
        return {"node": self.node, "cluster": "lab", "peer": {"name": self.peer, "alive": True},
                "modules": [self.entry], "witness": None}

    async def handle(self, request: dict) -> dict:
        self.handled.append((request, control.caller()))
        return {"ok": True, "state": "SECOND", "warnings": [], "error": None, "maintenance": False}


def console(source: Source, peer_port: int | None, actions: bool = True) -> Console:
    return Console(Gatherer(source, actions, lambda module, limit: [
        {"seq": 1, "time": time.time(), "node": source.node, "module": "demo", "kind": "state",
         "text": f"STOP -> {source.entry['state']}"}]),
        Peer("127.0.0.1" if peer_port else None, peer_port or 0), source.node, source.peer, source.handle, actions)


def request(method: str, path: str, *headers: str, body: str = "", port: int = 0) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", *headers]
    if body:
        lines.append(f"Content-Length: {len(body.encode())}")
    return ("\r\n".join([*lines, "", ""]) + body).encode()


async def started(source: Source, peer_port: int | None, token: str | None, actions: bool = True):
    server = HttpServer(HttpConfig("127.0.0.1:0", token_file=token), source.status, None,
                        console(source, peer_port, actions))
    assert await server.start(), server.error
    return server


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def state_cell(page: str, node: str) -> str:
    found = re.search(rf'data-node="{node}" data-field="state"><strong>([^<]*)</strong>', page)
    assert found, page
    return found.group(1)


def test_one_page_shows_both_nodes_and_a_dead_peer_as_unreachable_since(tmp_path):
    token = write_token(tmp_path)
    node1, node2 = Source("node1", "node2", "PRIM", "SECOND"), Source("node2", "node1", "SECOND", "PRIM")
    bearer = f"Authorization: Bearer {TOKEN}"

    async def scenario():
        second = await started(node2, None, token)
        first = await started(node1, second.port, token)
        try:
            both = await exchange(first.port, request("GET", "/", bearer, port=first.port))
            await second.close()
            await asyncio.sleep(1.1)                      # past the reuse of the last answer
            dead = await exchange(first.port, request("GET", "/console/view", bearer, port=first.port))
            return both, dead
        finally:
            await first.close()

    (code, headers, body), (code2, _, body2) = run(scenario())
    page, fragment = body.decode(), body2.decode()
    assert (code, code2) == (200, 200)
    assert (state_cell(page, "node1"), state_cell(page, "node2")) == ("PRIM", "SECOND")
    assert 'VIP 198.18.0.100/24' in page and "3 in flight" in page and "http-port: ok" in page
    assert page.count('<span class="badge healthy" data-field="reachability">REACHABLE</span>') == 2
    assert '<span class="badge healthy" data-field="module-health">HEALTHY</span>' in page
    assert "STOP -&gt; SECOND" in page and "STOP -&gt; PRIM" in page        # both nodes' events, escaped
    assert headers["Content-Security-Policy"].startswith("default-src 'none'; style-src 'sha256-")
    assert " src=" not in page and "<link" not in page and "innerHTML" not in page
    # node2 gone: UNREACHABLE since the failed fetch, and nothing of its last state.
    assert state_cell(fragment, "node2") == "UNREACHABLE"
    assert re.search(r'UNREACHABLE</span>\nsince \d\d:\d\d:\d\d \(\d+ s ago\)', fragment)
    assert "SECOND" not in fragment.split('data-node="node2" data-field="state">')[1].split("</td>")[0]
    assert '<span class="badge unreachable" data-field="module-health">UNREACHABLE</span>' in fragment


def test_loopback_without_token_shows_the_page_and_says_why_the_peer_is_not_fetched():
    source = Source("node1", "node2", "ALONE", None)

    async def scenario():
        server = await started(source, None, None, actions=False)
        try:
            return await exchange(server.port, request("GET", "/", port=server.port))
        finally:
            await server.close()

    code, _, body = run(scenario())
    page = body.decode()
    assert code == 200 and state_cell(page, "node1") == "ALONE"
    assert "primary without a mirror" in page and 'class="state degraded"' in page
    assert "not fetched: this node&#39;s HTTP API listens on loopback only" in page
    assert 'data-action="swap"' not in page                      # commands off: no buttons


def login(port: int, token: str, origin: str | None = None) -> bytes:
    headers = [f"Origin: {origin or f'http://127.0.0.1:{port}'}", "Content-Type: application/x-www-form-urlencoded"]
    return request("POST", "/console/login", *headers, body=f"token={token}", port=port)


def test_login_gives_a_strict_session_cookie_and_the_page_its_csrf_token(tmp_path, audit_lines):
    token = write_token(tmp_path)
    source = Source("node1", "node2", "PRIM", "SECOND")

    async def scenario():
        server = await started(source, None, token)
        p = server.port
        try:
            anonymous = await exchange(p, request("GET", "/", port=p))
            refused = await exchange(p, request("GET", "/console/view", port=p))
            wrong = await exchange(p, login(p, "not-the-token"))
            foreign = await exchange(p, login(p, TOKEN, "http://evil.example"))
            ok = await exchange(p, login(p, TOKEN))
            cookie = ok[1]["Set-Cookie"].split(";")[0]
            page = await exchange(p, request("GET", "/", f"Cookie: {cookie}", port=p))
            return anonymous, refused, wrong, foreign, ok, page
        finally:
            await server.close()

    anonymous, refused, wrong, foreign, ok, page = run(scenario())
    assert anonymous[0] == 200 and b'<form id="login" method="post" action="/console/login">' in anonymous[2]
    assert b"node1" not in anonymous[2]                                   # no data before the token
    assert (refused[0], refused[2]) == (401, b"missing or wrong bearer token\n")
    assert wrong[0] == 401 and b"wrong token" in wrong[2]
    assert foreign[0] == 403 and foreign[2].startswith(b"refused: Origin 'http://evil.example' is not this console "
                                                       b"('127.0.0.1:")
    assert ok[0] == 303 and ok[1]["Location"] == "/"
    assert re.fullmatch(r"hamirror_session=\d+\.[0-9a-f]{16}\.[0-9a-f]{64}; Path=/; Max-Age=43200; HttpOnly; "
                        r"SameSite=Strict", ok[1]["Set-Cookie"])
    session = ok[1]["Set-Cookie"].split(";")[0].split("=", 1)[1]
    assert page[0] == 200 and state_cell(page[2].decode(), "node1") == "PRIM"
    csrf = auth.csrf_token(TOKEN, session)
    assert f'<meta name="hamirror-csrf" content="{csrf}">'.encode() in page[2]
    lines = audit_lines()          # one line per kind and source per minute: the wrong login is counted
    assert lines[0] == "audit: http-token from 127.0.0.1: missing or wrong bearer token for '/console/view'"
    assert lines[1].startswith("audit: http-csrf from 127.0.0.1: console login refused: Origin 'http://evil.example'")


def test_commands_need_configuration_origin_and_csrf(tmp_path, audit_lines):
    token = write_token(tmp_path)
    on, off = Source("node1", "node2", "PRIM", "SECOND"), Source("node1", "node2", "PRIM", "SECOND")

    async def scenario():
        server, closed = await started(on, None, token), await started(off, None, token, actions=False)
        p, q = server.port, closed.port
        try:
            ok = await exchange(p, login(p, TOKEN))
            cookie = ok[1]["Set-Cookie"].split(";")[0]
            csrf = auth.csrf_token(TOKEN, cookie.split("=", 1)[1])
            own = f"Origin: http://127.0.0.1:{p}"
            body = "module=demo&action=swap"

            def post(*headers: str, port: int = p) -> bytes:
                return request("POST", "/console/action", f"Cookie: {cookie}", *headers, body=body, port=port)

            answers = {
                "no csrf": await exchange(p, post(own)),
                "wrong csrf": await exchange(p, post(own, "X-Hamirror-CSRF: " + "0" * 64)),
                "foreign origin": await exchange(p, post("Origin: http://evil.example", f"X-Hamirror-CSRF: {csrf}")),
                "no origin": await exchange(p, post(f"X-Hamirror-CSRF: {csrf}")),
                "no session": await exchange(p, request("POST", "/console/action", own, f"X-Hamirror-CSRF: {csrf}",
                                                        body=body, port=p)),
                "not configured": await exchange(q, post(f"Origin: http://127.0.0.1:{q}", f"X-Hamirror-CSRF: {csrf}",
                                                         port=q)),
                "get": await exchange(p, request("GET", "/console/action", f"Cookie: {cookie}", port=p)),
            }
            handled_before = list(on.handled)
            answers["ok"] = await exchange(p, post(own, f"X-Hamirror-CSRF: {csrf}"))
            return answers, handled_before
        finally:
            await server.close()
            await closed.close()

    answers, handled_before = run(scenario())
    bodies = {name: (a[0], a[2].decode().strip()) for name, a in answers.items() if name != "ok"}
    assert bodies["no csrf"] == bodies["wrong csrf"] == (403, "refused: missing or wrong CSRF token (reload the console)")
    assert bodies["foreign origin"][0] == 403
    assert bodies["foreign origin"][1].startswith("refused: Origin 'http://evil.example' is not this console")
    assert bodies["no origin"] == (403, "refused: no Origin header")
    assert bodies["no session"] == (401, "missing or wrong bearer token")
    assert bodies["not configured"] == (403, "console commands are off on this node: set [http] console_actions = "
                                             "true (with token_file) to allow them")
    assert bodies["get"][0] == 405
    assert handled_before == [] and off.handled == []                     # nothing refused reached the agent
    assert answers["ok"][0] == 200 and json.loads(answers["ok"][2])["ok"] is True
    [(sent, who)] = on.handled
    assert sent == {"cmd": "module", "action": "swap", "module": "demo"}
    assert (who["user"], who["from"]) == ("console", "http 127.0.0.1")
    assert any("http-csrf from 127.0.0.1: console command refused" in line for line in audit_lines())


@pytest.mark.parametrize("entry, colour", [
    (module_status("PRIM", "SECOND"), "healthy"),
    (module_status("SECOND", "PRIM"), "healthy"),
    (module_status("ALONE", None), "degraded"),
    (module_status("WAIT", None), "degraded"),
    (module_status("SECOND", "PRIM", uptodate=False), "degraded"),
    (module_status("PRIM", "SECOND", mirror="syncing"), "degraded"),
    (module_status("PRIM", "SECOND", maintenance=True), "degraded"),
    (module_status("PRIM", "SECOND", failovers={"damped": True}), "degraded"),
    (module_status("PRIM", "SECOND", target="SECOND"), "degraded"),
    (module_status("PRIM", "SECOND", relation="diverged"), "failed"),
    (module_status("STOP", None), "stopped"),
])
def test_colours(entry, colour):
    assert view.health(entry)[0] == colour


def test_rate_samples_are_bounded_and_survive_a_counter_reset():
    rates = gather.Rates()
    for i in range(gather.SAMPLES + 10):
        rates.add(gather.Counters(float(i * 2), i * 2_000_000, i * 10, 1))
    assert len(rates.samples) == gather.SAMPLES and rates.samples[-1] == (318.0, 1_000_000.0, 5.0)
    rates.add(gather.Counters(320.0, 0, 0, 0))                          # a mount restarted: counters from 0
    assert rates.samples[-1] == (320.0, 0.0, 0.0)
    drawn = view.plot([list(s) for s in rates.samples], now=320.0)
    assert drawn["peak"] == 1_000_000.0 and drawn["count"] == 150


@pytest.mark.parametrize("answer, shown", [
    (b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 30\r\n\r\nmissing or wrong bearer token\n",
     "HTTP 401: missing or wrong bearer token"),
    (b"HTTP/1.1 200 OK\r\n\r\n[1, 2]", "the answer is not a console document"),
    (b"HTTP/1.1 200 OK\r\n\r\n" + json.dumps({"node": "node2", "status": {"modules": [
        {"name": "demo", "state": "SECOND", "last_resync": {"seconds": "soon"}}]}}).encode(),
     "its document could not be shown: "),
])
def test_a_peer_that_answers_oddly_is_shown_unreachable_and_the_page_still_works(tmp_path, answer, shown):
    token = write_token(tmp_path)
    source = Source("node1", "node2", "PRIM", "SECOND")

    async def odd_peer(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    async def scenario():
        peer = await asyncio.start_server(odd_peer, "127.0.0.1", 0)
        server = await started(source, peer.sockets[0].getsockname()[1], token)
        try:
            return await exchange(server.port, request("GET", "/", f"Authorization: Bearer {TOKEN}", port=server.port))
        finally:
            await server.close()
            peer.close()

    code, _, body = run(scenario())
    page = body.decode()
    assert code == 200 and state_cell(page, "node1") == "PRIM" and state_cell(page, "node2") == "UNREACHABLE"
    assert shown in page.replace("&#39;", "'")


def test_a_command_for_the_peer_goes_through_this_node_with_the_clients_address(tmp_path):
    token = write_token(tmp_path)
    node1, node2 = Source("node1", "node2", "SECOND", "PRIM"), Source("node2", "node1", "PRIM", "SECOND")

    async def scenario():
        second = await started(node2, None, token)
        first = await started(node1, second.port, token)
        p = first.port
        try:
            ok = await exchange(p, login(p, TOKEN))
            cookie = ok[1]["Set-Cookie"].split(";")[0]
            headers = (f"Cookie: {cookie}", f"Origin: http://127.0.0.1:{p}",
                       f"X-Hamirror-CSRF: {auth.csrf_token(TOKEN, cookie.split('=', 1)[1])}")
            page = await exchange(p, request("GET", "/", f"Cookie: {cookie}", port=p))
            forwarded = await exchange(p, request("POST", "/console/action", *headers,
                                                  body="module=demo&action=swap&node=node2", port=p))
            stranger = await exchange(p, request("POST", "/console/action", *headers,
                                                 body="module=demo&action=swap&node=node9", port=p))
            await second.close()
            dead = await exchange(p, request("POST", "/console/action", *headers,
                                             body="module=demo&action=stop&node=node2", port=p))
            return page, forwarded, stranger, dead
        finally:
            await first.close()

    page, forwarded, stranger, dead = run(scenario())
    assert 'data-action="swap" data-module="demo" data-node="node2"' in page[2].decode()   # both columns
    assert forwarded[0] == 200 and json.loads(forwarded[2])["ok"] is True
    [(sent, who)] = node2.handled
    assert sent == {"cmd": "module", "action": "swap", "module": "demo"} and node1.handled == []
    assert who["from"] == "http 127.0.0.1 via 127.0.0.1"            # the browser's address, then ours
    assert (stranger[0], stranger[2]) == (400, b"unknown command 'swap' (one of swap, stop, start, restart, "
                                               b"maintenance-on, maintenance-off, verify, verify-repair), no module "
                                               b"or unknown node "
                                               b"'node9'\n")
    answer = json.loads(dead[2])
    assert dead[0] == 200 and answer["ok"] is False
    assert answer["error"].startswith("the peer could not be asked: [Errno 111] Connect call failed")
