"""The immutable view of one module that the agent builds every tick for :func:`decide`.

Everything the decision needs is here, already reduced to plain values (Patroni's "decide, then
act"): the agent gathers heartbeats, journal, witness, checkers and operator commands; the
decision never looks anywhere else, so it is tested without processes or clocks.
"""

from __future__ import annotations

import dataclasses
import enum

from hamirror.cluster.states import NodeState
from hamirror.journal.generations import Relation


class Command(enum.Enum):
    """The operator's pending command for this module on this node (``hamirror CMD MODULE``)."""

    NONE = "none"
    START = "start"
    STOP = "stop"
    PRIM = "prim"
    SECOND = "second"
    SWAP = "swap"
    FORCESTOP = "forcestop"
    RESTART = "restart"


class ResyncStatus(enum.Enum):
    """This node's side of the resync (sender on a primary, receiver in WAIT)."""

    NONE = "none"          # none started since the last change of state
    RUNNING = "running"
    DONE = "done"          # finished: both sides hold the same data
    FAILED = "failed"      # stopped on an error; it resumes from its journal when started again


class SwapPhase(enum.Enum):
    """Swap hand-shake advertised in heartbeats (see docs/cluster.md, "swap").

    REQUEST: a secondary was told ``swap`` and asks its primary to hand over.
    HANDOVER: the old primary has stopped the application, flushed and become SECOND; it asks
    the peer to become PRIM.
    """

    NONE = "none"
    REQUEST = "request"
    HANDOVER = "handover"


class MirrorHealth(enum.Enum):
    """What this node's replicated mounts really do (meaningful only in a primary state).

    Several directories: the worst one counts (``WORST_FIRST``). A status that says PRIM over a
    mount that does something else is never silent: the decision acts on this, not on the state.
    """

    NONE = "none"            # nothing observed (not a primary)
    STREAMING = "streaming"  # every mount mirrors synchronously to the peer
    SYNCING = "syncing"      # online resync to the peer in progress
    ALONE = "alone"          # serving locally, recording changes for a resync
    FENCED = "fenced"        # the peer stopped acknowledging: writes blocked until a verdict
    REFUSED = "refused"      # ALONE was refused (or the block timed out): writes fail with EIO
    DEAD = "dead"            # a mount daemon died, or a directory is not mounted at all


WORST_FIRST = (MirrorHealth.DEAD, MirrorHealth.REFUSED, MirrorHealth.FENCED, MirrorHealth.ALONE,
               MirrorHealth.SYNCING, MirrorHealth.STREAMING)


def mirror_health(mount_states: list[str | None]) -> MirrorHealth:
    """Combine each directory's mount state (None: not mounted or dead) into one health."""
    if not mount_states:
        return MirrorHealth.NONE
    found = {MirrorHealth.DEAD if s is None else _MOUNT_STATES.get(s, MirrorHealth.DEAD) for s in mount_states}
    return next(h for h in WORST_FIRST if h in found)


_MOUNT_STATES = {"PRIM": MirrorHealth.STREAMING, "SYNCING": MirrorHealth.SYNCING, "ALONE": MirrorHealth.ALONE,
                 "FENCED": MirrorHealth.FENCED, "REFUSED": MirrorHealth.REFUSED}


@dataclasses.dataclass(frozen=True)
class CheckerHealth:
    """Checkers' verdict: ``restarts`` counts restarts-in-place inside the policy's window."""

    ok: bool = True
    restarts: int = 0
    max_restarts: int = 3

    @property
    def may_restart(self) -> bool:
        """Whether one more restart in place is within the restart policy."""
        return self.restarts < self.max_restarts


@dataclasses.dataclass(frozen=True)
class FailoverHealth:
    """Flap damping (``[failover]`` in module.toml): ``recent`` failovers of this node within the
    window, at most ``max`` allowed (0: no damping). ``latched``: the limit was reached and stays
    reached until the operator clears it, even once the window has passed."""

    recent: int = 0
    max: int = 0
    window: float = 600.0
    latched: bool = False

    @property
    def damped(self) -> bool:
        """Whether automatic failovers are held back."""
        return self.latched or (self.max > 0 and self.recent >= self.max)


@dataclasses.dataclass(frozen=True)
class PeerView:
    """What the peer last advertised for this module (meaningful only while ``alive``)."""

    alive: bool = False
    state: NodeState | None = None
    uptodate: bool = False
    swap: SwapPhase = SwapPhase.NONE
    fenced: bool = False      # the peer's mount lost us and waits for us to confirm we are stale
    silent: bool = False      # not heard for half a heartbeat timeout (it may be about to be lost)
    woke: bool = False        # the peer stalled (frozen, restarted) and has not listened a full timeout since
    leaving: bool = False     # the peer has not heard us for half a timeout and will take over at a full one
    yielded: bool = False     # the peer recorded durably that this node may lead beside it: never vouched for since

    @property
    def is_primary(self) -> bool:
        """The peer is alive and runs the application."""
        return self.alive and self.state is not None and self.state.is_primary

    @property
    def is_synced_second(self) -> bool:
        """The peer is an alive, up-to-date SECOND: a valid target for a hand-over."""
        return self.alive and self.state is NodeState.SECOND and self.uptodate


@dataclasses.dataclass(frozen=True)
class ModuleView:
    """One module on this node at one tick.

    ``relation`` compares our generation history with the peer's (UNKNOWN when the peer is not
    seen). ``quorum`` is the witness's answer to "may this node act alone?", None without a
    witness. ``cold_start`` is True only when both nodes are seen and neither has any history.
    ``swap`` is the phase this node advertises now (the previous decision's ``swap``).
    ``mirror`` is what the mounts really do (primary states); ``fence_script``: a fence script is
    configured, and runs before this node acts without an unreachable peer. ``maintenance``: the
    operator suspended automatic actions on this node (``hamirror maintenance on``);
    ``failovers``: the flap-damping count. ``listened``: this node has listened for its peer for a
    full heartbeat timeout since its agent started or last stalled (frozen, suspended, starved):
    until then the peer's silence proves nothing, and no decision may rest on it. ``linked``: the
    peer's heartbeats are lost but the replication link shows it alive (our receiver heard its
    mount within the timeout, or our mount streams to it): its silence proves nothing either.
    ``vouched``: the witness grants this node the lease and it was also the last holder before
    this tenure: the peer has not held it since, so it cannot have acted alone meanwhile.
    ``peer_leased``: the witness's latest answer says the peer holds the lease and asked for it
    within two intervals: an unheard peer that is alive and may go on alone (a one-way loss).
    ``standby``: the operator keeps every module off this node (``hamirror node standby``): no
    automatic promotion here. ``peer_asks``: the witness's latest fresh answer lists the peer among the nodes it heard within
    its lease: an unheard peer may still be alive (cut one way from this node), so a forced
    ``prim`` here could run beside it. ``resync_settled``: this node's resync to the peer has been
    DONE long enough (a few heartbeat intervals) for the peer's heartbeats to show the end, so a
    peer that still says WAIT, stale, on our generation marked its copy stale after the end; and
    the last pass was asked for long enough ago that a new one may start (the failed resync's
    backoff). ``renewed``: the witness answered this tick's request (a renewal), not only the belief
    from earlier answers that lapses by itself: a node cut from the witness too must not act alone
    on a lease it can no longer renew (once it lapses, the peer takes over without what this node
    acknowledged meanwhile; campaign 3009). True without a witness. ``outdated``: the witness's
    latest answer marks this node's copy outdated (the peer acted alone for this module: what it
    acknowledged is not here, whatever this node's own flag says). ``peer_outdated``: it marks the
    peer's copy outdated, so this node may act alone without losing anything it acknowledges
    (:mod:`quorum`, "Outdated copies"); True where nothing records marks (no witness, or one older
    than marks).
    """

    module: str
    node: str
    state: NodeState
    uptodate: bool
    peer: PeerView = PeerView()
    relation: Relation = Relation.UNKNOWN
    quorum: bool | None = None
    command: Command = Command.NONE
    default_primary: bool = False
    cold_start: bool = False
    checker: CheckerHealth = CheckerHealth()
    resync: ResyncStatus = ResyncStatus.NONE
    swap: SwapPhase = SwapPhase.NONE
    mirror: MirrorHealth = MirrorHealth.NONE
    fence_script: bool = False
    app_stopped: bool = False     # a data-path repair stopped the application; start it once writable
    maintenance: bool = False
    standby: bool = False         # the operator put this node in standby (`hamirror node standby`)
    failovers: FailoverHealth = FailoverHealth()
    listened: bool = True
    linked: bool = False
    vouched: bool = False
    peer_leased: bool = False
    peer_asks: bool = False
    resync_settled: bool = False
    renewed: bool = True
    outdated: bool = False
    peer_outdated: bool = True
