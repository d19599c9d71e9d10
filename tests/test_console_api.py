"""The scriptable command API (issue 17, item 6): bearer token only, commands through the agent's
control handler, a switchover scheduled, kept across a restart, run once when due, cancelled."""

from __future__ import annotations

import asyncio
import json
import time

from hamirror.agent.console import Console, Gatherer, Peer
from hamirror.agent.console.api import Api
from hamirror.agent.http import HttpServer
from hamirror.config.cluster import HttpConfig
from tests.test_agent_http import TOKEN, exchange, write_token
from tests.test_console_http import Source, request, run

BEARER = f"Authorization: Bearer {TOKEN}"


async def api_server(tmp_path, source: Source, actions: bool = True, clock=time.time):
    events: list[tuple[str, str]] = []
    api = Api(str(tmp_path / "state"), source.handle, actions, lambda kind, text, **f: events.append((kind, text)),
              clock=clock)
    console = Console(Gatherer(source, actions, None), Peer(None, 0), source.node, source.peer, source.handle,
                      actions, api=api)
    server = HttpServer(HttpConfig("127.0.0.1:0", token_file=write_token(tmp_path)), source.status, None, console)
    assert await server.start(), server.error
    return server, api, events


def post(server, path: str, doc: object, *headers: str) -> bytes:
    return request("POST", path, *headers, "Content-Type: application/json", body=json.dumps(doc), port=server.port)


def test_a_command_runs_through_the_control_handler_with_the_token_only(tmp_path):
    source = Source("node1", "node2", "PRIM", "SECOND")

    async def scenario():
        server, api, _ = await api_server(tmp_path, source)
        try:
            done = await exchange(server.port, post(server, "/api/v1/command", {"module": "demo", "action": "swap"},
                                                    BEARER))
            cookie = await exchange(server.port, post(server, "/api/v1/command", {"module": "demo", "action": "swap"},
                                                      "Cookie: hamirror_session=x.y.z"))
            bad = await exchange(server.port, post(server, "/api/v1/command", {"module": "demo", "action": "rm"},
                                                   BEARER))
            return done, cookie, bad
        finally:
            await server.close()

    (code, _, body), (code2, *_), (code3, _, body3) = run(scenario())
    assert code == 200 and json.loads(body)["ok"] is True
    [(sent, who)] = source.handled
    assert sent == {"cmd": "module", "action": "swap", "module": "demo"}
    assert who["user"] == "api" and who["from"].startswith("api 127.0.0.1")
    assert code2 == 401 and code3 == 400 and b"one of swap, stop" in body3


def test_commands_are_refused_unless_console_actions_is_on(tmp_path):
    source = Source("node1", "node2", "PRIM", "SECOND")

    async def scenario():
        server, *_ = await api_server(tmp_path, source, actions=False)
        try:
            return await exchange(server.port, post(server, "/api/v1/command", {"module": "demo", "action": "swap"},
                                                    BEARER))
        finally:
            await server.close()

    code, _, body = run(scenario())
    assert code == 403 and b"console_actions = true" in body and source.handled == []


def test_a_scheduled_switchover_is_kept_across_a_restart_and_runs_once_when_due(tmp_path):
    source = Source("node1", "node2", "PRIM", "SECOND")
    now = [time.time()]

    async def scenario():
        server, api, events = await api_server(tmp_path, source, clock=lambda: now[0])
        try:
            late = await exchange(server.port, post(server, "/api/v1/command", {"module": "demo", "action": "stop",
                                                                                "at": now[0] + 60}, BEARER))
            made = await exchange(server.port, post(server, "/api/v1/command", {"module": "demo", "action": "swap",
                                                                                "at": now[0] + 60}, BEARER))
            other = await exchange(server.port, post(server, "/api/v1/command", {"module": "demo", "action": "swap",
                                                                                 "at": now[0] + 120}, BEARER))
            cancel = await exchange(server.port, post(server, "/api/v1/scheduled/cancel", {"id": 2}, BEARER))
        finally:
            await server.close()
        assert source.handled == []                                # scheduled, not run
        # The agent restarts; the entry is still there, and runs once when due.
        server, api, events = await api_server(tmp_path, source, clock=lambda: now[0])
        try:
            listed = await exchange(server.port, request("GET", "/api/v1/scheduled", BEARER, port=server.port))
            now[0] += 61
            await asyncio.sleep(2.5)
        finally:
            await server.close()
        return late, made, cancel, listed

    (c1, _, b1), (c2, _, b2), (c3, *_), (c4, _, b4) = run(scenario())
    assert c1 == 400 and b"only a swap" in b1
    assert c2 == c3 == c4 == 200 and json.loads(b2)["scheduled"]["id"] == 1
    assert [e["id"] for e in json.loads(b4)["scheduled"]] == [1]
    assert len(source.handled) == 1 and source.handled[0][1]["from"].endswith(", scheduled")
    assert json.loads((tmp_path / "state" / "scheduled.json").read_text()) == {"scheduled": []}


def test_an_entry_missed_while_the_agent_was_down_is_dropped_not_run(tmp_path):
    source = Source("node1", "node2", "PRIM", "SECOND")
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "scheduled.json").write_text(json.dumps({"scheduled": [
        {"id": 1, "module": "demo", "action": "swap", "at": time.time() - 3600, "by": "api 10.0.0.5"}]}))

    async def scenario():
        server, api, events = await api_server(tmp_path, source)
        try:
            await asyncio.sleep(1.5)
        finally:
            await server.close()
        return api, events

    api, events = run(scenario())
    assert api.entries == [] and source.handled == []
    assert events and events[0][0] == "scheduled" and "dropped: the agent was not running" in events[0][1]
