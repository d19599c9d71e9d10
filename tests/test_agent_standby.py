"""``hamirror node standby|online`` (issue 17, item 6): the setting survives a restart, a primary is
swapped away, and the node promotes nothing by itself while in standby."""

from __future__ import annotations

import asyncio
import os

from hamirror.agent import standby
from hamirror.cluster.states import NodeState
from hamirror.cluster.view import PeerView
from tests.agent_fakes import FakeJournal, history
from tests.test_agent_runner import attached, make, peer, step

S = NodeState


def primary(tmp_path, state: NodeState):
    """A runner primary in ``state`` with its mount, and the rest of make()'s fakes."""
    made = make(tmp_path, state, journal=FakeJournal(("g1",), True))
    made[1].mounts = [{"state": state.value, "mounted": True, "pid": 7}]
    return made


async def standby_beside(runner, the_peer: PeerView) -> dict:
    """``node standby`` while the runner ticks once beside ``the_peer``: the per-module answer."""
    await attached(runner)
    applying = asyncio.ensure_future(standby.apply({"demo": runner}, True, timeout=10))
    await asyncio.sleep(0)
    await step(runner, the_peer, history("g1"))
    return await applying


def test_standby_swaps_the_primary_away_and_then_holds_the_takeover(tmp_path):
    runner, dp, vip, scripts, journal, store, clock = primary(tmp_path, S.PRIM)

    async def scenario():
        result = await standby_beside(runner, peer(S.SECOND, True))        # the swap's first half
        assert result == {"demo": {"ok": True, "state": "SECOND", "moved": True, "error": None}}
        assert runner.standby and not vip.up
        await step(runner, peer(S.PRIM, True), history("g1"))              # the peer finished the swap
        # The peer is lost later: a SECOND takes over, except on a node in standby.
        clock.now += 10
        await step(runner, PeerView(alive=False), None)
        assert runner.state is S.SECOND and "standby" in runner.warnings[0]
        result = await standby.apply({"demo": runner}, False, timeout=10)
        assert result["demo"] == {"ok": True, "state": "SECOND", "moved": False, "error": None}
        await step(runner, PeerView(alive=False), None)
        assert runner.state is S.ALONE                                      # online: it takes over

    asyncio.run(scenario())


def test_a_primary_that_cannot_be_swapped_is_reported(tmp_path):
    runner = primary(tmp_path, S.ALONE)[0]
    result = asyncio.run(standby_beside(runner, peer(S.WAIT, False)))
    assert result["demo"]["ok"] is False and result["demo"]["state"] == "ALONE"
    assert result["demo"]["error"] == "`swap` refused in ALONE: the peer is not an up-to-date SECOND"


def test_the_setting_is_durable_and_an_unreadable_file_means_online(tmp_path):
    assert standby.load(str(tmp_path)) is False
    standby.save(str(tmp_path), True)
    assert standby.load(str(tmp_path)) is True
    (tmp_path / standby.FILENAME).write_text("{torn")
    assert standby.load(str(tmp_path)) is False
    standby.save(str(tmp_path), False)
    assert standby.load(str(tmp_path)) is False and os.listdir(tmp_path) == [standby.FILENAME]


def test_the_agent_records_standby_before_acting_and_keeps_it_across_a_restart(tmp_path):
    from hamirror.agent import control
    from hamirror.agent.runtime import Agent
    from hamirror.config import load_cluster, load_modules
    from tests.configfiles import write_cluster, write_module, write_secrets

    config = write_cluster(tmp_path)
    write_module(tmp_path)
    write_secrets(tmp_path)
    cluster = load_cluster(config)
    agent = Agent(cluster, load_modules(cluster))

    async def scenario():
        control._CALLER.set((os.getpid(), os.geteuid()))
        return await agent.handle({"cmd": "node", "action": "standby", "timeout": 5})

    answer = asyncio.run(scenario())
    assert answer == {"ok": True, "standby": True, "error": None,
                      "modules": {"app": {"ok": True, "state": "WAIT", "moved": False, "error": None}}}
    assert agent.status()["standby"] is True
    again = Agent(cluster, load_modules(cluster))
    assert again.standby and all(r.standby for r in again.runners.values())
    kinds = [e["kind"] for e in agent.events.read()]
    assert kinds[-2:] == ["command", "command-result"]
