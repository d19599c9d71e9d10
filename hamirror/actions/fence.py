"""The fence hook (``[fence] script``): make sure the unreachable peer cannot be primary.

Run before this node acts without a peer it cannot hear (a takeover, or a primary going on
alone); the action, and so the takeover, waits for exit status 0. The script gets the peer's
name as its argument and in ``HAMIRROR_PEER`` (with ``HAMIRROR_NODE``, ``HAMIRROR_CLUSTER``,
``HAMIRROR_MODULE``): typically it powers the peer off through its BMC or hypervisor, or cuts
its storage or switch port. Output goes to ``<state_dir>/modules/<module>/fence.log``.

Fencing is a matter between two *nodes*, not two modules (a BMC powers off the whole server):
one :class:`NodeFence` per agent runs the script at most once at a time, and its success counts
for every module until the peer is heard again. In a partition both nodes want to fence; if both
did at once, a real BMC (slower than a heartbeat) would power off both. So exactly one node, the
*fence winner*, fences at once, and the other waits ``[fence] takeover_delay`` first (Pacemaker's
``priority-fencing-delay``): the winner is the node that runs more primary modules, by the last
heartbeat both nodes heard, and on a tie the node listed first in the cluster file.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import threading
import time
from collections.abc import Callable

from hamirror.actions.scripts import ScriptResult, run_text
from hamirror.config.cluster import ClusterConfig


@dataclasses.dataclass(frozen=True)
class FenceStanding:
    """What decides the fence race, as this node saw it last: primaries here and on the peer."""

    local_primaries: int
    peer_primaries: int


def fence_delay(standing: FenceStanding, local_listed_first: bool, delay: float) -> float:
    """Seconds to wait before fencing the peer (pure): 0 for the fence winner, ``delay`` for the other.
    Both nodes compute this from the same last heartbeats, so exactly one of them waits."""
    if standing.local_primaries != standing.peer_primaries:
        wins = standing.local_primaries > standing.peer_primaries
    else:
        wins = local_listed_first
    return 0.0 if wins else delay


class NodeFence:
    """The node's one fence of its peer, shared by every module's executor.

    ``standing`` says who wins the fence race; ``last_heard`` is when the peer was last heard
    (on ``clock``), so a success stays valid until the peer shows it is up again."""

    def __init__(self, cluster: ClusterConfig, standing: Callable[[], FenceStanding],
                 last_heard: Callable[[], float | None], clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.script, self.timeout = cluster.fence.script, cluster.fence.timeout
        self.delay = cluster.fence.takeover_delay
        self.peer, self.node, self.cluster = cluster.peer_node.name, cluster.local_name, cluster.name
        self.listed_first = cluster.nodes[0].name == cluster.local_name
        self.standing, self.last_heard, self.clock, self.sleep = standing, last_heard, clock, sleep
        self.state_dir = cluster.module_state_dir
        self._lock = threading.Lock()
        self._fenced_at: float | None = None    # when the last successful fence began

    @property
    def configured(self) -> bool:
        return self.script is not None

    def for_module(self, module: str) -> ModuleFence:
        return ModuleFence(self, module)

    def fenced(self) -> bool:
        """A fence succeeded and the peer has not been heard since it began."""
        if self._fenced_at is None:
            return False
        heard = self.last_heard()
        return heard is None or heard < self._fenced_at

    def run(self, module: str) -> ScriptResult:
        """Fence the peer for ``module``; ok only for exit status 0 within ``[fence] timeout``.
        One run at a time: a module that waited for another's fence gets its verdict."""
        if self.script is None:
            return ScriptResult("fence", False, None, False, 0.0, "no [fence] script configured")
        log_path = os.path.join(self.state_dir(module), "fence.log")
        with self._lock:
            if self.fenced():
                return ScriptResult("fence", True, 0, False, 0.0, "the peer was already fenced for another module")
            wait = fence_delay(self.standing(), self.listed_first, self.delay)
            if wait:
                self.sleep(wait)
            began = self.clock()
            env = dict(os.environ, HAMIRROR_PEER=self.peer, HAMIRROR_NODE=self.node,
                       HAMIRROR_CLUSTER=self.cluster, HAMIRROR_MODULE=module)
            text = f"exec {shlex.quote(self.script)} {shlex.quote(self.peer)}\n"
            result = run_text("fence", text, log_path, self.timeout, env=env)
            if result.ok:
                self._fenced_at = began
            return result


class ModuleFence:
    """One module's view of the node's fence (what the executor calls)."""

    def __init__(self, node_fence: NodeFence, module: str) -> None:
        self.node_fence, self.module = node_fence, module

    @property
    def configured(self) -> bool:
        return self.node_fence.configured

    def run(self, takeover: bool = False) -> ScriptResult:
        """``takeover`` is accepted and ignored: who waits is decided by the node's fence race
        (:func:`fence_delay`), not by this module's role."""
        del takeover
        return self.node_fence.run(self.module)
