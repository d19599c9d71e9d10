"""The event timeline (issue 9): stored, bounded, read and followed; what decisions, observations
and operator commands put in it; served by the HTTP API and the CLI (no processes but the CLI)."""

from __future__ import annotations

import asyncio
import json
import os
import threading

import pytest

from hamirror.agent import control, events
from hamirror.agent.events import EventLog, decision_events, observation_events
from hamirror.agent.http import HttpServer
from hamirror.agent.module_runner import Observation
from hamirror.cluster.actions import Failover, RefuseWrites, SetMirroring, StartResync
from hamirror.cluster.decide import decide
from hamirror.cluster.states import NodeState
from hamirror.cluster.view import MirrorHealth, ModuleView, PeerView
from hamirror.config.cluster import HttpConfig
from hamirror.journal.generations import GenerationHistory, Relation
from tests.conftest import run_cli
from tests.configfiles import write_cluster, write_module
from tests.test_agent_http import Provider, exchange, get, run

S, M = NodeState, MirrorHealth


def test_events_are_appended_numbered_and_read_back_per_module(tmp_path):
    log = EventLog(str(tmp_path), "node1", clock=lambda: 1700000000.25)
    log.add("agent", "agent started")
    log.add("takeover", "peer lost: taking over", module="demo", **{"from": "SECOND", "to": "ALONE"})
    log.add("state", "WAIT -> SECOND", module="db")
    assert [e["seq"] for e in log.read()] == [1, 2, 3]
    assert log.read("demo") == [
        {"seq": 1, "time": 1700000000.25, "node": "node1", "module": None, "kind": "agent", "text": "agent started"},
        {"from": "SECOND", "to": "ALONE", "seq": 2, "time": 1700000000.25, "node": "node1", "module": "demo",
         "kind": "takeover", "text": "peer lost: taking over"}]
    assert [e["seq"] for e in log.read(limit=1)] == [3] and [e["seq"] for e in log.read(since=2)] == [3]
    with open(log.path, "a", encoding="utf-8") as f:
        f.write('{"seq": 4, "kind": "torn')                     # a crash in the middle of a line
    again = EventLog(str(tmp_path), "node1")                    # the agent restarted: numbering goes on
    assert again.add("agent", "agent started")["seq"] == 4
    assert [e["seq"] for e in events.read(str(tmp_path))] == [1, 2, 3, 4]    # the torn line is skipped
    assert again.read() == events.read(str(tmp_path))


def test_the_timeline_is_bounded_by_size(tmp_path):
    log = EventLog(str(tmp_path), "node1", max_bytes=2000)
    for i in range(200):
        log.add("state", f"event {i}", module="demo")
    old, current = events.paths(str(tmp_path))
    assert os.path.getsize(current) < 2000 and os.path.getsize(old) < 2000 + 200
    kept = events.read(str(tmp_path))
    assert kept[-1]["text"] == "event 199" and 10 < len(kept) < 50
    assert len(log.read()) == 200 and len(EventLog(str(tmp_path), "node1").read()) == len(kept)
    assert [e["seq"] for e in kept] == list(range(kept[0]["seq"], 201))   # nothing lost between the files


def test_follow_sees_new_events_across_a_rotation(tmp_path):
    log = EventLog(str(tmp_path), "node1", max_bytes=300)
    log.add("agent", "before following")
    seen: list[str] = []
    numbers = iter(range(6))

    def writer_sleep(_pause: float) -> None:          # the agent writes while the reader sleeps
        for number in numbers:
            log.add("state", f"event {number}")
            break

    for event in events.follow(str(tmp_path), sleep=writer_sleep, stop=lambda: len(seen) >= 6):
        seen.append(event["text"])
    assert seen == [f"event {i}" for i in range(6)]


def test_a_write_failure_is_logged_not_raised(tmp_path, caplog):
    (tmp_path / "file").write_text("")
    log = EventLog(str(tmp_path / "file" / "below"), "node1")
    assert log.add("agent", "x")["seq"] == 1
    assert "event not recorded" in caplog.text


def view(state, mirror=M.NONE, peer=None, **kw) -> ModuleView:
    p = PeerView(alive=peer is not None, state=peer, uptodate=False)
    return ModuleView(module="demo", node="node1", state=state, uptodate=True, peer=p, mirror=mirror,
                      relation=Relation.SAME if peer else Relation.UNKNOWN, **kw)


def test_a_decision_tells_its_failover_fencing_verdict_and_resync():
    takeover = view(S.SECOND)
    assert decision_events(takeover, decide(takeover), ()) == [
        ("takeover", "peer lost: taking over", {"from": "SECOND", "to": "ALONE"})]
    grant = view(S.PRIM, M.FENCED, peer=S.WAIT)
    d = decide(grant)
    assert SetMirroring(False) in d.actions
    assert decision_events(grant, d, ())[-1] == (
        "fence-grant", "blocked writes acknowledged alone: the peer cannot be primary", {"mirror": "fenced"})
    both = view(S.ALONE, M.ALONE, peer=S.ALONE)
    d = decide(both)
    assert RefuseWrites() in d.actions and d.failover is Failover.STEP_DOWN
    assert [k for k, *_ in decision_events(both, d, ())] == ["step-down", "fence-refuse"]
    resync = view(S.ALONE, M.ALONE, peer=S.WAIT)
    assert StartResync(full=False) in decide(resync).actions
    assert decision_events(resync, decide(resync), ()) == [
        ("resync-start", "incremental resync to the peer", {"full": False})]


def test_a_standing_warning_is_recorded_once():
    fenced = view(S.PRIM, M.FENCED, peer=S.SECOND)
    fenced = ModuleView(**{**fenced.__dict__, "peer": PeerView(alive=True, state=S.SECOND, uptodate=True)})
    d = decide(fenced)
    assert [k for k, *_ in decision_events(fenced, d, ())] == ["warning"]
    assert decision_events(fenced, d, d.warnings) == []


def obs(mounts) -> Observation:
    return Observation(GenerationHistory(), True, tuple(mounts), (), False)


def test_the_data_path_tells_when_it_fenced_and_when_a_resync_ended():
    streaming = obs([{"state": "PRIM"}])
    fenced = obs([{"state": "FENCED"}])
    done = obs([{"state": "PRIM", "last_resync": {"mode": "incremental", "done_files": 2, "bytes_sent": 4096,
                                                   "seconds": 1.5, "finished_at": 1700000000.0}}])
    assert observation_events(streaming, fenced, True) == [
        ("fenced", "the peer stopped acknowledging: writes blocked until a fencing verdict", {})]
    assert observation_events(fenced, fenced, True) == []
    assert observation_events(streaming, done, True) == [
        ("resync-end", "resync done (incremental): 4096 bytes, 2 file(s) in 1.5 s",
         {"bytes": 4096, "files": 2, "seconds": 1.5})]
    assert observation_events(done, done, True) == []
    assert observation_events(None, done, True) == []            # agent start: an old resync, not news


def test_the_control_socket_says_who_is_asking(tmp_path):
    path = str(tmp_path / "run" / "control.sock")
    callers: list[dict | None] = []

    async def handler(request: dict) -> dict:
        callers.append(control.caller())
        return {"ok": True}

    async def scenario():
        server = control.ControlServer(path, handler, allowed_uid=os.geteuid())
        await server.start()
        try:
            await asyncio.to_thread(control.request, path, {"cmd": "status"})
        finally:
            await server.close()

    asyncio.run(scenario())
    [who] = callers
    assert (who["pid"], who["uid"]) == (os.getpid(), os.geteuid())     # the kernel's word (SO_PEERCRED)
    assert who["command"] and "python" in who["command"] and who["from"]
    assert control.caller() is None


def test_http_serves_the_timeline_with_the_token(tmp_path):
    log = EventLog(str(tmp_path), "node1")
    for i in range(5):
        log.add("state", f"event {i}", module="demo" if i % 2 else "db")
    token = tmp_path / "token"
    token.write_text("t" * 20)
    token.chmod(0o600)

    async def scenario():
        server = HttpServer(HttpConfig("127.0.0.1:0", token_file=str(token)), Provider(), log.read)
        assert await server.start(), server.error
        auth = "Authorization: Bearer " + "t" * 20
        try:
            return [await exchange(server.port, raw) for raw in (
                get("/events", auth), get("/events/demo?limit=1", auth), get("/events?since=3", auth),
                get("/events"), get("/events?limit=x", auth))]
        finally:
            await server.close()

    (c1, h1, all_), (c2, _, demo), (c3, _, since), (c4, _, _), (c5, _, bad) = run(scenario())
    assert (c1, h1["Content-Type"]) == (200, "application/json")
    assert [e["text"] for e in json.loads(all_)["events"]] == [f"event {i}" for i in range(5)]
    assert json.loads(demo) == {"node": "node1", "module": "demo", "events": log.read("demo")[-1:]}
    assert [e["seq"] for e in json.loads(since)["events"]] == [4, 5]
    assert (c4, c5, bad) == (401, 400, b"limit must be a whole number from 0 to 5000\n")


@pytest.fixture
def config(tmp_path):
    path = write_cluster(tmp_path)
    write_module(tmp_path)
    return path


def test_cli_events_reads_the_state_directory_without_the_agent(tmp_path, config):
    log = EventLog(str(tmp_path / "state"), "node1", clock=lambda: 1700000000.5)
    log.add("takeover", "peer lost: taking over", module="app")
    log.add("command", "swap by root (local, pid 1)", module="other")
    text = run_cli("events", "app", "-c", config, check=True).stdout
    assert text.splitlines() == [text.splitlines()[0]]
    assert text.split(" ", 2)[2] == "node1 app takeover: peer lost: taking over\n"
    lines = run_cli("events", "--json", "-n", "1", "-c", config, check=True).stdout.splitlines()
    assert [json.loads(line)["kind"] for line in lines] == ["command"]


def test_cli_logs_shows_the_scripts_output(tmp_path, config):
    folder = tmp_path / "state" / "modules" / "app"
    missing = run_cli("logs", "app", "-c", config)
    assert missing.returncode == 1 and missing.stderr == (
        f"hamirror: no script output for module 'app' yet (looked for {folder}/scripts.log and "
        f"{folder}/fence.log)\n")
    folder.mkdir(parents=True)
    (folder / "scripts.log").write_text("".join(f"line {i}\n" for i in range(100)))
    out = run_cli("logs", "app", "-n", "2", "-c", config, check=True).stdout
    assert out == f"==> {folder}/scripts.log <==\nline 98\nline 99\n"


def test_follow_lines_waits_for_whole_lines(tmp_path):
    path = tmp_path / "scripts.log"
    path.write_text("old\n")
    writes = iter(["par", "tial\nnext\n"])
    seen: list[str] = []

    def sleep(_pause: float) -> None:
        with open(path, "a", encoding="utf-8") as f:
            f.write(next(writes, ""))

    for _, line in events.follow_lines([str(path)], sleep=sleep, stop=lambda: len(seen) >= 2):
        seen.append(line)
    assert seen == ["partial", "next"]
    assert threading.active_count() >= 1


def test_the_receiving_side_tells_when_a_resync_begins_and_ends():
    idle = Observation(GenerationHistory(), False, (), ({"resyncing": False},), True)
    busy = Observation(GenerationHistory(), False, (), ({"resyncing": True},), True)
    assert observation_events(idle, busy, False) == [
        ("resync-receive-start", "the peer started a resync to this node", {})]
    assert observation_events(busy, busy, False) == []
    assert observation_events(busy, idle, False) == [("resync-receive-end", "the resync from the peer ended", {})]


def test_cli_says_the_state_directory_is_roots():
    from hamirror.cli.common import CommandError
    from hamirror.cli.events import _readable

    def denied(args):
        raise PermissionError(13, "Permission denied", "/var/lib/hamirror/events.jsonl")

    with pytest.raises(CommandError) as caught:
        _readable(denied)(None)
    assert str(caught.value) == ("/var/lib/hamirror/events.jsonl: permission denied (the state directory is "
                                 "root's: run this command as root)")


def test_the_agent_keeps_only_the_last_events_in_memory(tmp_path, monkeypatch):
    monkeypatch.setattr(events, "IN_MEMORY", 3)
    log = EventLog(str(tmp_path), "node1")
    for i in range(5):
        log.add("state", f"event {i}")
    assert [e["seq"] for e in log.read()] == [3, 4, 5] and len(events.read(str(tmp_path))) == 5
    assert [e["seq"] for e in EventLog(str(tmp_path), "node1").read()] == [3, 4, 5]


def test_a_resync_failing_the_same_way_three_times_is_one_alarm_event_with_its_text():
    def failing(count: int, error: str = "peer refused operation 9: [Errno 28] No space left on device"):
        return obs([{"state": "ALONE", "resync_failures": {"count": count, "error": error}}])

    assert observation_events(failing(1), failing(2), True) == []
    assert observation_events(failing(2), failing(3), True) == [
        ("resync-alarm", "the resync failed 3 times in a row the same way: peer refused operation 9: [Errno 28] "
                         "No space left on device",
         {"failures": 3, "error": "peer refused operation 9: [Errno 28] No space left on device"})]
    assert observation_events(failing(3), failing(4), True) == []      # a standing alarm is recorded once
    assert observation_events(None, failing(5), True)[0][0] == "resync-alarm"   # still news at agent start
