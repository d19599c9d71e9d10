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
from hamirror.cluster.view import PeerView
from hamirror.journal.generations import GenerationHistory, Relation, compare

log = logging.getLogger(__name__)

REFUSE_REASON = "this node lost its quorum"
GRANT_REASON = "the peer's copy is stale (granted while a sequence ran)"


def bound_primary(runner: ModuleRunner) -> bool:
    """A sequence runs on a primary, or towards a primary state."""
    target = runner.transition[0] if runner.transition else runner.state
    return runner.task is not None and (runner.state.is_primary or target.is_primary)


async def watch_mounts(runner: ModuleRunner) -> None:
    """The mounts' states as they are now, in the runner's observation; the rest of it (journals,
    receivers) is observed again when the sequence ends."""
    if runner.obs is not None:
        mounts = tuple(await asyncio.to_thread(runner.datapath.mount_statuses))
        runner.obs = dataclasses.replace(runner.obs, mounts=mounts)


class BesideSequences:
    """The verdicts under way, one per module (a verdict repeats only once the last one ended)."""

    def __init__(self) -> None:
        self._running: dict[str, asyncio.Task] = {}

    def act(self, name: str, runner: ModuleRunner, peer: PeerView, quorum: bool | None,
            peer_history: GenerationHistory | None) -> blocked.Blocked | None:
        """Apply :func:`blocked.verdict` to ``runner`` (busy on or towards a primary state)."""
        if not bound_primary(runner) or runner.obs is None:
            return None
        running = self._running.get(name)
        if running is not None and not running.done():
            return None
        relation = compare(runner.obs.history, peer_history) if peer.alive and peer_history else Relation.UNKNOWN
        target = runner.transition[0] if runner.transition else runner.state
        verdict = blocked.verdict(peer, quorum, relation, runner.obs.fenced, target.is_primary)
        if verdict is None:
            return None
        if running is None:
            log.warning("%s: while a sequence runs (to %s), %s", name, target.value,
                        "the witness refuses and the peer is not heard: refusing writes now, as stepping "
                        "down will" if verdict is blocked.Blocked.REFUSE else
                        "writes are blocked and the peer's copy is stale: granting ALONE now, as the "
                        "verdict after it would")
            runner.task.add_done_callback(lambda _: self._running.pop(name, None))
        if verdict is blocked.Blocked.REFUSE:
            call = asyncio.to_thread(runner.datapath.refuse, REFUSE_REASON)
        else:
            call = asyncio.to_thread(runner.datapath.set_alone, GRANT_REASON)
        task = asyncio.create_task(call)
        task.add_done_callback(lambda t: t.cancelled() or t.exception() is None
                               or log.warning("%s: verdict beside the sequence failed: %s", name, t.exception()))
        self._running[name] = task
        return verdict
