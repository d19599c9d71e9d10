"""One module on this node: observe, build the view, decide, act, every tick.

The tick never blocks the event loop: observing (journals, mount and receiver status) runs in a
worker thread, and a decision's actions run as one task in a worker thread that only reports back
(Patroni's "decide, then act"). While that task runs, the module keeps its advertised state and
no new decision is made; a failed sequence is retried from the failed action after a pause.

The advertised state changes when the sequence completes (the *persisted* state changes first,
through ``Persist``), or, when it fails, only if what the peer relies on is done
(:func:`~hamirror.cluster.steps.state_after`): a peer that sees our new state can rely on it (e.g. a swap's new primary
connects only once we are SECOND, the application stopped, flushed and unmounted, and the
receiver started: its mount's connection waits for that receiver to listen).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable

from hamirror.agent import damping, journal_info
from hamirror.agent.checks import CheckerState
from hamirror.agent.events import decision_events, observation_events
from hamirror.agent.executor import ActionFailed, Executor, NeedsDecision, describe
from hamirror.agent.observation import Observation
from hamirror.agent.persist import ModuleRecord, Store
from hamirror.agent.stall import always_listening
from hamirror.cluster import actions as a
from hamirror.cluster import outdate
from hamirror.cluster.decide import UNMARKED, decide, takes_over_at_timeout
from hamirror.cluster.steps import state_after, undone_by_deciding_again
from hamirror.cluster.heartbeat import ModuleInfo
from hamirror.cluster.states import NodeState
from hamirror.cluster.view import (
    CheckerHealth, Command, FailoverHealth, MirrorHealth, ModuleView, PeerView, ResyncStatus, SwapPhase,
)
from hamirror.journal.generations import GenerationHistory, Relation, compare

log = logging.getLogger(__name__)
S = NodeState

SAFE_TO_SERVE = (MirrorHealth.STREAMING, MirrorHealth.SYNCING, MirrorHealth.ALONE)
NOT_WRITABLE = (MirrorHealth.DEAD, MirrorHealth.FENCED, MirrorHealth.REFUSED)
RETRY_PAUSE = 5.0        # seconds before a failed action sequence is tried again
RESYNC_GRACE = 3.0       # a just-requested resync counts as running while the mount starts it; a done
                         # one settles this long before a peer still stale is resynced again
RESYNC_BACKOFF = 10.0    # a failed resync (or one the peer stays stale after) is restarted at most this often


@dataclasses.dataclass(frozen=True)
class Retry:
    """The rest of a failed sequence, tried again from ``when``; ``swap``: the phase its decision
    advertises once it completes."""

    actions: tuple[a.Action, ...]
    target: NodeState
    when: float
    swap: SwapPhase | None = None


@dataclasses.dataclass
class Outcome:
    """What an operator command led to (the control socket's answer)."""

    ok: bool
    state: str
    warnings: list[str]
    error: str | None = None


class ModuleRunner:
    """Per-module loop state: persisted record, advertised state, running task, pending command."""

    def __init__(self, name: str, node: str, default_primary: bool, store: Store, executor: Executor,
                 datapath, journals, checkers: CheckerState, max_restarts: int, window: float,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 fence_script: bool = False, failover_max: int = 0, failover_window: float = 600.0) -> None:
        self.name, self.node, self.default_primary = name, node, default_primary
        self.store, self.executor, self.datapath, self.checkers = store, executor, datapath, checkers
        self.journals = journals          # .read() -> journal_info.JournalInfo
        self.max_restarts, self.window, self.clock, self.wall = max_restarts, window, clock, wall
        self.fence_script = fence_script
        self.failover_max, self.failover_window = failover_max, failover_window
        self.vip_withdrawn = False        # after a stall: the VIP comes back only with a decision
        self.listening = always_listening()   # the agent's (stall detection), shared by its runners
        self.record = store.load()
        self.state = self.record.state
        self.swap = self.record.swap
        self.obs: Observation | None = None
        self.relation = Relation.UNKNOWN
        self.peer_history: GenerationHistory | None = None
        self.peer = PeerView()
        self.leaving = False     # advertised: the primary is unheard for half a timeout and this node would take over
        self.peer_maintenance_version = 0   # the newest maintenance version the peer advertised
        self.standby = False                # the node is in standby (set by the agent: agent/standby.py)
        self.warnings: tuple[str, ...] = ()
        self.error: str | None = None
        self.task: asyncio.Task | None = None
        self.transition: tuple[NodeState, tuple[a.Action, ...]] | None = None   # the task's target, actions
        self.retry: Retry | None = None
        self.command = Command.NONE
        self.waiters: list[asyncio.Future] = []
        self.resync_requested: float | None = None
        self.resync_done_at: float | None = None     # when this node's resync was first seen DONE
        self.on_change: Callable[[], None] = lambda: None
        self.emit: Callable[..., object] = lambda kind, text, **fields: None   # the event timeline
        executor.persist = self.persist
        executor.count_restart = self.count_restart

    # ----------------------------------------------------------------- persistence

    def persist(self, state: NodeState) -> None:
        """Durably record the state being entered (called by the Persist action)."""
        self.record = self.store.save(dataclasses.replace(self.record, state=state))

    def count_restart(self) -> None:
        now = self.wall()
        kept = damping.recent(self.record.restarts, now, self.window)
        self.record = self.store.save(dataclasses.replace(self.record, restarts=kept + (now,)))

    def restarts_in_window(self) -> int:
        return len(damping.recent(self.record.restarts, self.wall(), self.window))

    @property
    def maintenance(self) -> bool:
        return self.record.maintenance

    def failovers(self) -> FailoverHealth:
        """The flap-damping count the decision sees (:class:`FailoverHealth`)."""
        return damping.health(self.record, self.wall(), self.failover_max, self.failover_window)

    def count_failover(self, kind: a.Failover) -> None:
        """Record a failover this node decided; say so once the limit is reached."""
        was = self.record.damped
        self.record = self.store.save(damping.counted(self.record, self.wall(), self.failover_max,
                                                      self.failover_window))
        if self.record.damped and not was:
            text = (f"failover limit reached ({self.failover_max} within {self.failover_window:g} s, the last a "
                    f"{kind.value}): further failovers are held back until `hamirror clear {self.name}`")
            log.warning("%s: %s", self.name, text)
            self.emit("damped", text)

    def set_maintenance(self, on: bool) -> None:
        """``hamirror maintenance on|off``: off also clears flap damping (the operator is back).
        The setting is for the cluster: its version, newer than any seen from the peer, travels in
        the heartbeats and the peer adopts it (:meth:`follow_peer_maintenance`)."""
        version = max(self.record.maintenance_version, self.peer_maintenance_version) + 1
        self._apply_maintenance(on, version)

    def follow_peer_maintenance(self, on: bool, version: int, peer: str) -> None:
        """The peer advertises a newer maintenance setting (set there by the operator): adopt it,
        so automatic failover is suspended (or resumed) on both nodes, not only where it was typed."""
        self.peer_maintenance_version = max(self.peer_maintenance_version, version)
        if version <= self.record.maintenance_version:
            return
        self._apply_maintenance(on, version)
        text = f"maintenance {'on' if on else 'off'} (set on {peer})"
        log.warning("%s: %s", self.name, text)
        self.emit("maintenance", text, on=on)

    def _apply_maintenance(self, on: bool, version: int) -> None:
        record = dataclasses.replace(self.record, maintenance=on, maintenance_version=version)
        self.record = self.store.save(record if on else damping.cleared(record))
        self.checkers.reset()        # a failure seen before (or during) maintenance is not acted on
        self.on_change()

    def clear(self) -> None:
        """``hamirror clear``: forget the failover and restart counts."""
        self.record = self.store.save(damping.cleared(self.record))
        self.on_change()

    # ----------------------------------------------------------------- observation

    def observe(self) -> Observation:
        """Blocking: journals, mounts and receivers (run in a worker thread)."""
        info = self.journals.read()
        mounts = tuple(self.datapath.mount_statuses())
        receivers = tuple(self.datapath.receiver_status(i) for i in range(len(self.datapath.dirs)))
        return Observation(info.history, info.uptodate, mounts, receivers, self.datapath.receivers_alive(),
                           info.changed)

    async def attach(self) -> None:
        """Agent start: adopt a running data path in the persisted state, else start in WAIT."""
        self.obs = obs = await asyncio.to_thread(self.observe)
        persisted = self.record.state
        if persisted is S.STOP:
            return
        if persisted.is_primary and obs.mounted:
            states = obs.mount_states
            # A fenced mount under PRIM stays PRIM: only the verdict of a decision makes it ALONE.
            streaming_or_fenced = states <= {"PRIM", "FENCED", "REFUSED"}
            self.state = S.PRIM if persisted is S.PRIM and streaming_or_fenced else S.ALONE
            if self.state is not persisted:
                await asyncio.to_thread(self.persist, self.state)
            log.info("%s: re-attached to the running mount as %s", self.name, self.state.value)
            self.emit("attach", f"agent started: re-attached to the running mount as {self.state.value}")
            # The VIP is a lease this agent keeps: take it over (or back, if it lapsed while no
            # agent ran) once the data path shows this node may serve; a fenced one waits.
            if obs.mirror in SAFE_TO_SERVE:
                self.start_task((a.AnnounceVip(),), self.state, "agent start")
            else:
                self.vip_withdrawn = True
            return
        cut_short = not persisted.is_primary and any(m is not None for m in obs.mounts)
        if persisted is S.SECOND and obs.receivers_alive and obs.uptodate and not cut_short:
            log.info("%s: re-attached to the running receiver as SECOND", self.name)
            self.emit("attach", "agent started: re-attached to the running receiver as SECOND")
            return
        actions: tuple[a.Action, ...] = ()
        if persisted.is_primary or cut_short:
            # The data path is gone under a primary (never run the application unreplicated), or a
            # mount still runs under a state that has none: a hand-over or a step-down was cut
            # short after its Persist. Either way: the application stopped, no VIP, unmounted.
            log.warning("%s: was %s with %s: cleaning up, then WAIT", self.name, persisted.value,
                        "a mount still running" if cut_short else "the mount gone")
            actions = (a.RunScript("stop_prim"), a.RemoveVip(), a.Unmount(force=True))
        self.state = S.WAIT
        self.start_task((a.Persist(S.WAIT),) + actions + (a.StartReceiver(),), S.WAIT, "agent start")

    # ----------------------------------------------------------------- one tick

    async def withdraw_vip(self) -> None:
        """After a stall (frozen node): stop serving at once; the next decision says if we still may."""
        if self.state.is_primary and self.task is None:
            try:
                await asyncio.to_thread(self.executor.run, a.RemoveVip(), self.state)
                self.vip_withdrawn = True
            except ActionFailed as exc:
                log.error("%s: %s", self.name, exc)

    def submit(self, command: Command) -> asyncio.Future:
        """Queue an operator command for the next decision; the future gets an :class:`Outcome`."""
        self.command = command
        future = asyncio.get_running_loop().create_future()
        self.waiters.append(future)
        return future

    def peer_generation(self) -> str | None:
        """The peer's generation ids as last heard (for status), or None."""
        return journal_info.to_wire(self.peer_history) if self.peer_history is not None else None

    async def tick(self, peer: PeerView, peer_history: GenerationHistory | None, quorum: bool | None,
                   listened: bool, epoch: int | None = None, linked: bool = False,
                   vouched: bool = False, peer_leased: bool = False, peer_asks: bool = False,
                   observed: bool = False, renewed: bool = True, outdated: bool = False,
                   peer_outdated: bool = True) -> None:
        """Observe, then (unless busy) decide and start the actions. ``listened``: the peer's
        silence may be believed (:mod:`stall`); ``epoch``: the stall count when ``peer`` was read:
        a stall since makes the view stale, and nothing is decided from it; ``linked``: the
        replication link shows the peer alive (:attr:`ModuleView.linked`); ``vouched``: the
        witness's (:attr:`ModuleView.vouched`), as ``peer_leased``, ``peer_asks``, ``renewed``,
        ``outdated`` and ``peer_outdated``; ``observed``:
        the agent observed every module this tick already (:meth:`Agent._observe`)."""
        if self.task is not None:
            return
        if not observed:
            await self.refresh()
        announce = self.state.is_primary and self.task is None and (
            (self.peer.is_primary and not peer.is_primary) or (not self.peer.alive and peer.alive))
        self.peer, self.leaving = peer, False
        self.peer_history = peer_history
        self.relation = compare(self.obs.history, peer_history) if peer.alive and peer_history else Relation.UNKNOWN
        if self.task is not None or self.stale(epoch):
            return
        if outdate.yields_beside(self.state, peer):
            self.note_peer_led(f"the peer, heard beside this {self.state.value} node, may act alone")
        if self.retry is not None and self.command is Command.NONE and not self.retry_over_dead_mount():
            retry = self.retry
            # A retry carries on a decision that may have rested on the peer's silence: not before
            # this node has listened again after a stall.
            if self.clock() >= retry.when and ((listened and not linked) or peer.alive):
                self.start_task(retry.actions, retry.target, "retry", swap=retry.swap)
            return
        self.retry = None
        if self.state in (S.WAIT, S.SECOND) and not self.obs.receivers_alive:
            log.warning("%s: receiver not running in %s: starting it", self.name, self.state.value)
            self.start_task((a.StartReceiver(),), self.state, "receiver restart")
            return
        view = dataclasses.replace(self.view(peer, quorum, peer_history, listened), linked=linked,
                                   vouched=vouched, peer_leased=peer_leased, peer_asks=peer_asks,
                                   renewed=renewed, outdated=outdated, peer_outdated=peer_outdated)
        decision = decide(view)
        self.leaving = takes_over_at_timeout(view)
        if self.vip_withdrawn and decision.state.is_primary and self.proven_primary(view):
            self.vip_withdrawn = False
            decision = dataclasses.replace(decision, actions=decision.actions + (a.AddVip(),))
        elif self.vip_withdrawn and not decision.state.is_primary:
            self.vip_withdrawn = False
        command, self.command = self.command, Command.NONE
        self.report(view, decision)
        if decision.failover is not None:
            self.count_failover(decision.failover)
        if decision.actions and announce and decision.state.is_primary and a.RemoveVip() not in decision.actions:
            # The peer came back or stepped down while this decision acts: announce the VIP too.
            decision = dataclasses.replace(decision, actions=decision.actions + (a.AnnounceVip(),))
        if decision.state is not self.state or decision.actions:
            self.start_task(decision.actions, decision.state, command.value, decision, epoch)
        elif announce:
            # The peer stepped down or came back: clients and switches may still send to its MAC.
            self.start_task((a.AnnounceVip(),), self.state, "peer changed")
            self.set_swap(decision.swap)
            self.resolve(command, decision, None)
        else:
            self.set_swap(decision.swap)
            self.resolve(command, decision, None)

    def witness_marks(self, peer_alive: bool, listened: bool, linked: bool, outdated: bool,
                      vouched: bool) -> tuple[bool, bool, bool]:
        """For this tick's witness request, before the decision (:mod:`outdate`): (the peer's copy
        is to be marked outdated, forced by an operator's ``prim``, the copies are equal again).
        ``outdated`` and ``vouched``: the witness's latest answer, as the decision will see them."""
        if self.obs is None or self.task is not None:
            # Busy: no decision this tick, so no mark that only a decision would use (a mark
            # asked for and not used makes the peer wait for an operator after a later loss).
            return self.state is S.ALONE, False, False
        if peer_alive and self.state is not S.ALONE and (self.state is S.STOP or self.peer.is_primary):
            # The common case (a SECOND beside its primary), without a view per module per tick:
            # no decision here goes on alone beside a heard primary, and a stopped module decides
            # nothing. A SECOND or WAIT beside a heard STOP peer may promote: it asks.
            return False, False, False
        peer = self.peer if peer_alive else PeerView()
        view = dataclasses.replace(self.view(peer, True, self.peer_history if peer_alive else None, listened),
                                   linked=linked, outdated=outdated, vouched=vouched and not self.record.peer_led)
        # Held back last tick for want of the mark: ask whatever the view says now (a decision the
        # view here did not foresee must not wait for ever).
        held = not peer_alive and any(w.endswith(UNMARKED) for w in self.warnings)
        return outdate.asks_to_outdate(view) or held, self.command is Command.PRIM, outdate.clears_outdated(view)

    async def refresh(self) -> None:
        """Observe now, and record what the data path did since the last observation."""
        before, self.obs = self.obs, await asyncio.to_thread(self.observe)
        for kind, text, fields in observation_events(before, self.obs, self.state.is_primary):
            self.emit(kind, text, **fields)

    def retry_over_dead_mount(self) -> bool:
        """A failed sequence of a primary whose mount does not accept writes: it came up and died
        since (a mount daemon killed half-way through a swap's second half, so start_prim failed
        on it), or it is blocked waiting for a verdict (the peer was lost while start_prim ran),
        or the connected mount cannot be made because the peer was lost meanwhile (the old
        primary of a swap lost power after its hand-over). Retrying would fail for ever, and no
        verdict comes while it does: decide again instead. An application start the sequence
        still owed is left to the decisions (it comes, with the VIP, once the mount accepts
        writes)."""
        assert self.retry is not None and self.obs is not None
        actions, target = self.retry.actions, self.retry.target
        if not (target.is_primary and self.state.is_primary and self.obs.mirror in NOT_WRITABLE):
            return False
        if actions and actions[0] == a.MountReplicated(peer_connected=True) and not self.peer.alive:
            pass                         # a connected mount to a peer lost meanwhile: never made
        elif any(isinstance(x, (a.MountReplicated, a.RemountDataPath)) for x in actions):
            return False                 # the mount itself is still to be made: the retry makes it
        log.warning("%s: the mount is %s under a failed sequence (%s): deciding again", self.name,
                    self.obs.mirror.value, ", ".join(describe(x) for x in actions))
        if a.RunScript("start_prim") in actions:
            self.executor.app_stopped = True
        return True

    def stale(self, epoch: int | None) -> bool:
        """Whether the agent stalled since ``epoch`` (when the peer's state was read): a decision
        made from that view, or started after, could rest on a silence this node never heard."""
        if epoch is None or self.listening.check() == epoch:
            return False
        log.warning("%s: the agent stalled since the peer was last read: not deciding from that view", self.name)
        return True

    def view(self, peer: PeerView, quorum: bool | None, peer_history: GenerationHistory | None,
             listened: bool = True) -> ModuleView:
        obs = self.obs
        assert obs is not None
        cold = peer.alive and obs.history.current is None and peer_history is not None \
            and peer_history.current is None
        resync = self.resync_status()
        checker = CheckerHealth(ok=self.checkers.ok if self.state.is_primary and not self.maintenance else True,
                                restarts=self.restarts_in_window(), max_restarts=self.max_restarts)
        return ModuleView(module=self.name, node=self.node, state=self.state, uptodate=obs.uptodate, peer=peer,
                          relation=self.relation, quorum=quorum, command=self.command,
                          default_primary=self.default_primary, cold_start=cold, checker=checker,
                          resync=resync, resync_settled=self.resync_settled(resync), swap=self.swap,
                          mirror=obs.mirror if self.state.is_primary else MirrorHealth.NONE,
                          fence_script=self.fence_script, app_stopped=self.executor.app_stopped,
                          maintenance=self.maintenance, failovers=self.failovers(), listened=listened,
                          standby=self.standby)

    def resync_status(self) -> ResyncStatus:
        """This node's side of the resync, from the mount (sender) or the receiver (WAIT)."""
        obs, now = self.obs, self.clock()
        assert obs is not None
        if self.state is S.ALONE:
            states = obs.mount_states
            if "SYNCING" in states:
                return ResyncStatus.RUNNING
            if obs.mounted and states == {"PRIM"}:
                return ResyncStatus.DONE
            if self.resync_requested is None:
                return ResyncStatus.NONE
            if now - self.resync_requested < RESYNC_GRACE:
                return ResyncStatus.RUNNING
            return ResyncStatus.FAILED if now - self.resync_requested >= RESYNC_BACKOFF else ResyncStatus.RUNNING
        if self.state is S.WAIT and self.peer.is_primary:
            if any(r and (r.get("resync") or r.get("resyncing")) for r in obs.receivers):
                return ResyncStatus.RUNNING
            if obs.uptodate and self.relation is Relation.SAME:
                return ResyncStatus.DONE
        return ResyncStatus.NONE

    def resync_settled(self, status: ResyncStatus) -> bool:
        """Whether the resync has been DONE for ``RESYNC_GRACE`` (time enough for the peer's
        heartbeats to show the end), and the last pass was asked for ``RESYNC_BACKOFF`` ago at
        least, so passes over a peer that stays stale come no more often than failed ones
        (:attr:`ModuleView.resync_settled`)."""
        if status is not ResyncStatus.DONE:
            self.resync_done_at = None
            return False
        now = self.clock()
        if self.resync_done_at is None:
            self.resync_done_at = now
        requested = self.resync_requested
        return now - self.resync_done_at >= RESYNC_GRACE and (requested is None or now - requested >= RESYNC_BACKOFF)

    def report(self, view: ModuleView, decision: a.Decision) -> None:
        """Log every decision that changes something, with its warnings (repeats only at debug)."""
        changed = decision.state is not view.state or decision.actions
        if changed:
            # The generations compared, when they gave no relation: what an operator (or a
            # developer) needs to tell a missing history from an unrelated one.
            histories = "" if view.relation is not Relation.UNKNOWN or self.obs is None else \
                f", generations here {journal_info.to_wire(self.obs.history)} and on the peer " \
                f"{self.peer_generation() or 'unknown'}"
            log.warning("%s: %s -> %s (peer %s, relation %s%s, uptodate %s): %s", self.name, view.state.value,
                        decision.state.value, view.peer.state.value if view.peer.alive and view.peer.state else
                        "lost", view.relation.value, histories, view.uptodate,
                        ", ".join(describe(x) for x in decision.actions) or "no action")
        for warning in decision.warnings:
            (log.warning if changed or warning not in self.warnings else log.debug)("%s: %s", self.name, warning)
        for kind, text, fields in decision_events(view, decision, self.warnings):
            self.emit(kind, text, **fields)
        self.warnings = decision.warnings

    # ----------------------------------------------------------------- acting

    def start_task(self, actions: tuple[a.Action, ...], target: NodeState, why: str,
                   decision: a.Decision | None = None, epoch: int | None = None,
                   swap: SwapPhase | None = None) -> None:
        """Run ``actions`` as one task; ``epoch``: a decision's, which is dropped if the agent
        stalls before any of its actions but ``Persist`` ran (:meth:`_run`); ``swap``: the phase
        to advertise once ``target`` is reached (a decision's own, by default)."""
        if any(isinstance(x, a.StartResync) for x in actions):
            self.resync_requested = self.clock()
        self.transition = (target, actions)
        swap = decision.swap if decision is not None else swap
        self.task = asyncio.get_running_loop().create_task(self._run(actions, target, why, decision, epoch, swap),
                                                           name=f"{self.name}-actions")

    async def _run(self, actions: tuple[a.Action, ...], target: NodeState, why: str,
                   decision: a.Decision | None, epoch: int | None = None, swap: SwapPhase | None = None) -> None:
        """Run the actions in order, stop at the first failure (a :class:`Retry` of the rest).
        The state advertised changes only once the sequence is safe to advertise
        (:func:`~hamirror.cluster.steps.state_after`): a primary whose stop failed half-way keeps
        saying so, so that its peer does not promote beside a running application."""
        error, reached = None, target
        promoting = target.is_primary and not self.state.is_primary
        try:
            for index, action in enumerate(actions):
                if undone_by_deciding_again(actions[:index], promoting) and self.stale(epoch):
                    # Nothing committed yet: undo the record and decide again from a fresh view.
                    error, reached, self.retry = "the agent stalled before the decision's actions: deciding again", \
                        self.state, None
                    if index:
                        await self._restore_record()
                    break
                began = time.monotonic()
                try:
                    await asyncio.to_thread(self.executor.run, action, target)
                    # One line per action: the timeline of a swap or a takeover (scripts/bench/swap.py).
                    log.info("%s: done %s in %.3f s", self.name, describe(action), time.monotonic() - began)
                except ActionFailed as exc:
                    error, rest = str(exc), actions[index:]
                    reached = state_after(self.state, target, actions, index)
                    if reached is not target and any(isinstance(x, a.Persist) for x in actions[:index]):
                        # The record says what the node is: the old state until the rest is done.
                        await self._restore_record()
                        rest = (a.Persist(target),) + rest
                    # NeedsDecision: the same sequence cannot succeed; the next tick decides afresh.
                    self.retry = None if isinstance(exc, NeedsDecision) else \
                        Retry(rest, target, self.clock() + RETRY_PAUSE, swap)
                    log.error("%s: %s failed (%s): %s; retrying in %.0f s", self.name, describe(action), why,
                              exc, RETRY_PAUSE)
                    if error != self.error:      # a retry failing the same way is not news
                        self.emit("action-failed", f"{describe(action)} failed: {exc}", why=why)
                    break
            else:
                self.retry = None
        finally:
            self.error = error
            if reached is not self.state and self.record.peer_led and (reached is S.SECOND or reached.is_primary):
                self.record = self.store.save(dataclasses.replace(self.record, peer_led=False))
            if reached is not self.state:
                cause = "automatic" if why == Command.NONE.value else why
                self.emit("state", f"{self.state.value} -> {reached.value} ({cause})", why=cause,
                          **{"from": self.state.value, "to": reached.value})
                self.state = reached
                self.resync_requested = self.resync_done_at = None   # the resync status restarts with each state
            if swap is not None and reached is target:
                self.set_swap(swap)
            self.checkers.reset()
            if error is None:
                # Stopped with nothing mounted: watch for changes made behind our back.
                await asyncio.to_thread(self.datapath.watch, self.state is NodeState.STOP)
            try:                     # advertise the new state with the data it now has
                self.obs = await asyncio.to_thread(self.observe)
            except Exception:  # noqa: BLE001 - the next tick observes again
                log.exception("%s: observation failed", self.name)
            self.task = self.transition = None
            self.on_change()
            if decision is not None:
                command = Command(why) if why in {c.value for c in Command} else Command.NONE
                self.resolve(command, decision, error)

    async def _restore_record(self) -> None:
        """Put the record back to the state the node is in after a sequence stopped half-way. On a
        failing disk, say so and go on: the retry (or the next decision) persists again, and the
        task must not die with it."""
        try:
            await asyncio.to_thread(self.persist, self.state)
        except OSError as exc:
            log.error("%s: the state record could not be put back to %s: %s", self.name, self.state.value, exc)
            self.emit("action-failed", f"the state record could not be put back to {self.state.value}: {exc}")

    @staticmethod
    def proven_primary(view: ModuleView) -> bool:
        """After a stall: whether this node may serve again. ALONE: the peer was not an up-to-date
        SECOND, so it cannot have taken over. Streaming: only beside a peer heard *now* as SECOND
        (a taker says primary from its first action): the mount was frozen with the agent, and the
        "streaming" it reports right after the wake predates the peer's takeover (campaign 1801).
        A fenced mount proves nothing."""
        if view.mirror is MirrorHealth.ALONE:
            return True
        return view.mirror in SAFE_TO_SERVE and view.peer.alive and view.peer.state is S.SECOND

    def note_peer_led(self, why: str) -> None:
        """Record durably that the peer may have acted, or may act, alone beside this copy: it is
        vouched for no later lease until SECOND or primary again (docs/cluster.md, "The vouch").
        Advertised (``yielded``) only once recorded: the handshake lets the peer act on it."""
        if not self.record.peer_led:
            self.record = self.store.save(dataclasses.replace(self.record, peer_led=True))
            log.warning("%s: %s: not resuming alone on a later lease", self.name, why)

    def set_swap(self, swap: SwapPhase) -> None:
        if swap is not self.swap:
            self.swap = swap
            self.record = self.store.save(dataclasses.replace(self.record, swap=swap))
            self.on_change()

    def resolve(self, command: Command, decision: a.Decision, error: str | None) -> None:
        """Answer the operators waiting on this decision: only one that carried their command. A
        command submitted while an automatic decision's sequence ran is the next decision's (its end
        answered a `stop` with "ok, ALONE", and the stop ran after)."""
        if not self.waiters or command is Command.NONE:
            return
        refused = any(w.startswith(f"`{command.value}` refused") for w in decision.warnings)
        outcome = Outcome(ok=not refused and error is None, state=self.state.value,
                          warnings=list(decision.warnings), error=error)
        waiters, self.waiters = self.waiters, []
        for future in waiters:
            if not future.done():
                future.set_result(outcome)

    # ----------------------------------------------------------------- advertising

    @property
    def serving(self) -> bool:
        """Whether the application serves here now (the health check's 200): a primary state, and
        no action sequence running, or failed half-way, that stops, starts or moves the
        application or its address. A swap stops the application seconds before the state
        changes; a load balancer must stop sending traffic when it stops, not after."""
        if not self.state.is_primary:
            return False
        if self.obs is not None and self.obs.mirror in (MirrorHealth.REFUSED, MirrorHealth.DEAD):
            return False      # writes fail here: a balancer should not send traffic
        if self.transition is not None and (not self.transition[0].is_primary
                                            or any(map(a.touches_service, self.transition[1]))):
            return False
        return self.retry is None or not any(map(a.touches_service, self.retry.actions))

    def said_state(self) -> NodeState:
        """The state this node says it is in (heartbeats, the quorum claim). A promotion under way
        says primary from its first action (the VIP may be up before start_prim ends): a woken old
        primary that still believed us SECOND put its VIP back beside ours for seconds (campaign
        1801). Leaving a primary role waits for its safety prefix instead (steps.state_after)."""
        if self.transition is not None and self.transition[0].is_primary and not self.state.is_primary:
            return self.transition[0]
        return self.state

    def advertised(self) -> ModuleInfo:
        """This module's heartbeat entry."""
        obs = self.obs
        history = obs.history if obs else GenerationHistory()
        state = self.said_state()
        return ModuleInfo(state=state, uptodate=bool(obs and obs.uptodate),
                          generation=journal_info.to_wire(history), swap=self.swap,
                          fenced=bool(obs and state.is_primary and obs.fenced),   # watched mid-sequence (beside)
                          maintenance=self.maintenance, maintenance_version=self.record.maintenance_version,
                          woke=not self.listening.listened(), leaving=self.leaving,
                          yielded=self.record.peer_led)
