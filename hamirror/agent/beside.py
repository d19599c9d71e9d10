"""Verdicts on a busy module's blocked mount, made beside its running sequence.

The rule is pure (:mod:`hamirror.cluster.blocked`); here the agent watches the mounts of every
module whose sequence runs on or towards a primary state, and acts on the rule's verdict in a
worker thread, at most one at a time per module. The watch also feeds the heartbeat: a promotion
under way advertises a primary state, and now its blocked mount too (``fenced``), so that the
peer clears its up-to-date flag, which is what lets the grant come.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging

from hamirror.agent.module_runner import ModuleRunner
from hamirror.cluster import blocked
from hamirror.cluster.states import NodeState
from hamirror.cluster.view import PeerView
from hamirror.journal.generations import GenerationHistory, Relation, compare

log = logging.getLogger(__name__)

REFUSE_REASON = "no verdict while a sequence runs: refused so that it ends and the decision comes"
GRANT_REASON = "the peer's copy is stale (granted while a sequence ran)"


def target_state(runner: ModuleRunner) -> NodeState:
    """Where the running sequence goes (the state itself when none runs)."""
    return runner.transition[0] if runner.transition else runner.state


def bound_primary(runner: ModuleRunner) -> bool:
    """A sequence runs on a primary, or towards a primary state."""
    return runner.task is not None and (runner.state.is_primary or target_state(runner).is_primary)


async def watch_mounts(runner: ModuleRunner) -> None:
    """The mounts' states as they are now, in the runner's observation; the rest of it (journals,
    receivers) is observed again when the sequence ends."""
    if runner.obs is not None:
        mounts = tuple(await asyncio.to_thread(runner.datapath.mount_statuses))
        if runner.task is not None and runner.obs is not None:   # not if the sequence ended meanwhile
            runner.obs = dataclasses.replace(runner.obs, mounts=mounts)


class BesideSequences:
    """The verdicts under way, one per module (a verdict repeats only once the last one ended)."""

    def __init__(self) -> None:
        self._running: dict[str, asyncio.Task] = {}

    def act(self, name: str, runner: ModuleRunner, peer: PeerView, quorum: bool | None,
            peer_history: GenerationHistory | None, peer_leased: bool, listened: bool,
            epoch: int | None = None) -> blocked.Blocked | None:
        """Apply :func:`blocked.verdict` to ``runner`` (busy on or towards a primary state).
        ``epoch``: the stall count when the peer was read; a stall since, and nothing is done."""
        if not bound_primary(runner) or runner.obs is None or runner.stale(epoch):
            return None
        running = self._running.get(name)
        if running is not None and not running.done():
            return None
        relation = compare(runner.obs.history, peer_history) if peer.alive and peer_history else Relation.UNKNOWN
        target = target_state(runner)
        promoting = not runner.state.is_primary
        verdict, why = blocked.reasoned_verdict(peer, quorum, relation, fenced=runner.obs.fenced,
                                                staying_primary=target.is_primary, promoting=promoting,
                                                peer_leased=peer_leased, listened=listened)
        if verdict is None:
            return None
        if running is None:
            log.warning("%s: while a sequence runs (to %s), %s", name, target.value, why)
            runner.task.add_done_callback(lambda _: self._running.pop(name, None))
            # The timeline's fencing verdicts, as a decision's (events.decision_events).
            runner.emit("fence-grant" if verdict is blocked.Blocked.GRANT else "fence-refuse",
                        f"while a sequence runs: {why}", beside=target.value)
        if verdict is blocked.Blocked.REFUSE:
            call = asyncio.to_thread(runner.datapath.refuse, REFUSE_REASON)
        else:
            call = asyncio.to_thread(runner.datapath.set_alone, GRANT_REASON)
        task = asyncio.create_task(call)
        task.add_done_callback(lambda t: t.cancelled() or t.exception() is None
                               or log.warning("%s: verdict beside the sequence failed: %s", name, t.exception()))
        self._running[name] = task
        return verdict

