"""The actions a decision asks the agent to carry out, in order.

Each action is a small frozen value; the agent maps its type to an executor (resources, link,
journal, resync). A decision lists them in the order they must run: the agent stops at the first
failure and decides again on the next tick from a fresh view.
"""

from __future__ import annotations

import dataclasses
import enum

from hamirror.cluster.states import NodeState
from hamirror.cluster.view import SwapPhase


@dataclasses.dataclass(frozen=True)
class Persist:
    """Write the target state to the module's state file before any other action runs, so an
    agent that dies half-way knows on restart that the module was started (design §2)."""

    state: NodeState


@dataclasses.dataclass(frozen=True)
class StartReceiver:
    """Listen on the replication link and apply the peer's operations (and resync) locally.
    ``listening``: return once the receiver listens. A swap's hand-over does not wait: the new
    primary's mount waits for it anyway (its connection is retried), so this node advertises
    SECOND while the receiver starts, and the two halves of the swap overlap."""

    listening: bool = True


@dataclasses.dataclass(frozen=True)
class StopReceiver:
    """Stop applying the peer's operations; what was applied stays, the journal records where.
    ``grace``: seconds for the receiver to finish its message and close before it is killed
    (short on a takeover: the peer is gone, and every second is a second without service)."""

    grace: float = 10.0


@dataclasses.dataclass(frozen=True)
class MountReplicated:
    """Stack the interception layer on every replicated directory. ``peer_connected``: send each
    write synchronously to the peer (PRIM); otherwise record changes for a resync (ALONE)."""

    peer_connected: bool


@dataclasses.dataclass(frozen=True)
class SetMirroring:
    """Switch a mounted primary between synchronous mirroring (``enabled``) and recording
    changes in the journal, without unmounting: ALONE <-> PRIM keeps the application running."""

    enabled: bool


@dataclasses.dataclass(frozen=True)
class RefuseWrites:
    """Fence this node's mounts: writes blocked by a lost peer fail (EIO) and no later write is
    accepted, so nothing is acknowledged while the node steps down (the peer may be primary)."""


@dataclasses.dataclass(frozen=True)
class Fence:
    """Run the cluster's fence script against the peer and wait for its success: the peer cannot
    be primary afterwards (a takeover or going on alone from an unreachable peer). Who waits
    ``[fence] takeover_delay`` first is the node's fence race (:mod:`hamirror.actions.fence`), so
    that in a partition, where both want to fence, only one shoots. ``takeover`` is for the log."""

    takeover: bool = False


@dataclasses.dataclass(frozen=True)
class RemountDataPath:
    """A mount daemon died under the application: stop the application, clean the dead mount,
    mount again from the journal (the state it records), start the application. Counted in the
    restart window: too many and the node steps down so the peer takes over. ``alone``: the peer
    is lost too: mount ALONE (a new generation), as a mount from the journal would wait for it."""

    alone: bool = False


@dataclasses.dataclass(frozen=True)
class Unmount:
    """Remove the interception layer. ``force``: lazy unmount that waits for no peer ack."""

    force: bool = False


@dataclasses.dataclass(frozen=True)
class AddVip:
    """Add the module's virtual IP here and announce it (gratuitous ARP); no-op without a VIP."""


@dataclasses.dataclass(frozen=True)
class RemoveVip:
    """Remove the module's virtual IP from this node; no-op without a VIP."""


@dataclasses.dataclass(frozen=True)
class RunScript:
    """Run one of the module's scripts (start_prim, stop_prim, start_second, stop_second)."""

    name: str


@dataclasses.dataclass(frozen=True)
class KillApp:
    """forcestop: SIGKILL every process using the replicated directories, skipping stop_prim."""


@dataclasses.dataclass(frozen=True)
class RestartApp:
    """Run stop_prim then start_prim in place. ``counted``: a checker restart, which the agent
    records in the restart window (operator restarts are not counted)."""

    counted: bool


@dataclasses.dataclass(frozen=True)
class StartResync:
    """Send the peer what it lacks: incremental from both journals, or ``full`` (checksums) when
    the histories share nothing. Resumes from the journal if a previous run stopped."""

    full: bool


@dataclasses.dataclass(frozen=True)
class NewGeneration:
    """Start a new generation in the history: we became primary without a synced peer."""


@dataclasses.dataclass(frozen=True)
class ForgetHistory:
    """The operator chose the peer's data after a split brain: drop our history, so both sides
    see UNKNOWN and the primary overwrites us with a full resync."""


@dataclasses.dataclass(frozen=True)
class MarkUpToDate:
    """Persist whether our data is up to date (only up-to-date data may be promoted alone)."""

    value: bool


@dataclasses.dataclass(frozen=True)
class Flush:
    """Wait until every write acknowledged to the application is durable on both sides."""


@dataclasses.dataclass(frozen=True)
class AnnounceVip:
    """Announce the VIP again (gratuitous ARP): the peer stepped down or came back, and clients
    or switches may still send to its MAC address."""


Action = (Persist | StartReceiver | StopReceiver | MountReplicated | SetMirroring | Unmount
          | AddVip | RemoveVip | RunScript | KillApp | RestartApp | StartResync | NewGeneration
          | ForgetHistory | MarkUpToDate | Flush | RefuseWrites | Fence | RemountDataPath | AnnounceVip)


def touches_service(action: Action) -> bool:
    """Whether an action stops, starts or moves the application or its address (what maintenance
    suspends, and what makes the health check say "not serving" while it runs)."""
    return isinstance(action, (AddVip, RemoveVip, KillApp, RestartApp, MountReplicated, Unmount,
                               RemountDataPath)) or (
        isinstance(action, RunScript) and action.name in ("start_prim", "stop_prim"))


class Failover(enum.Enum):
    """The automatic decisions that move the application between nodes (counted for damping)."""

    TAKEOVER = "takeover"      # this SECOND becomes primary without a hand-over
    STEP_DOWN = "step-down"    # this primary stops serving and waits (WAIT)
    HAND_OVER = "hand-over"    # this primary hands over to its SECOND without being asked


@dataclasses.dataclass(frozen=True)
class Decision:
    """The outcome of one tick: the state to be in, the actions to get there, the swap phase to
    advertise, and warnings for the operator (logged and shown by ``hamirror status``).
    The pending operator command is consumed by the decision, whatever it says.
    ``failover``: this automatic decision is a failover (``takeover``, ``step-down``,
    ``hand-over``), which the agent counts for flap damping; ``held``: an automatic decision was
    held back by maintenance or damping (the warning says which)."""

    state: NodeState
    actions: tuple[Action, ...] = ()
    swap: SwapPhase = SwapPhase.NONE
    warnings: tuple[str, ...] = ()
    failover: Failover | None = None
    held: bool = False
