"""``hamirror agent``: the node's daemon. One asyncio loop; one tick per heartbeat interval.

Start-up order: take the pid lock (one agent per node), build a runner per module, re-attach to
the data path left running by a previous agent, then start heartbeats and the control socket.
No decision rests on the peer's silence until a heartbeat timeout passed since start or since the
last stall (:mod:`stall`): a restarted or woken agent must not take the peer for dead just because
it has not heard it yet.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import functools
import logging
import math
import os
import signal
import time
from collections.abc import Mapping

from hamirror.actions.fence import FenceStanding, NodeFence
from hamirror.agent import agreement, beside, both, console, control, journal_info, standby, verify
from hamirror.agent.checks import CheckerState
from hamirror.agent.datapath import link_engine
from hamirror.agent.events import EventLog
from hamirror.agent.executor import renew_leases
from hamirror.agent.http import HttpServer
from hamirror.agent.module_runner import ModuleRunner
from hamirror.agent.wiring import build_runner
from hamirror.agent.notify import Notifier
from hamirror.agent.reload import Reloader
from hamirror.agent.stall import Listening, stall_threshold
from hamirror.agent.status import module_status
from hamirror.cluster import outdate as outdated_copies
from hamirror.cluster.heartbeat import ModuleInfo, load_cluster_key
from hamirror.cluster.heartbeat_service import HeartbeatService
from hamirror.cluster.quorum import Marks, boottime, build as build_witness
from hamirror.cluster.states import NodeState
from hamirror.cluster.view import Command, PeerView
from hamirror.config.cluster import ClusterConfig
from hamirror.config.module import ModuleConfig

log = logging.getLogger(__name__)


THREADS_PER_MODULE = 4   # an action sequence, an observation, checkers, a command's wait


def worker_threads(modules: int) -> int:
    """The agent's worker threads (made as needed, kept while busy): every module's action
    sequence, observation and checks at once. Python's default pool (cores + 4: 6 on two cores)
    ran 6 of 50 takeovers at a time, and every observation and VIP renewal queued behind them."""
    return max(32, THREADS_PER_MODULE * modules + 16)


class AgentError(Exception):
    """The agent cannot start (another agent runs, bad key...)."""


class Agent:
    """Everything one node runs: runners, heartbeats, control socket."""

    def __init__(self, cluster: ClusterConfig, modules: list[ModuleConfig]) -> None:
        self.cluster, self.modules = cluster, modules
        self.node, self.peer_node = cluster.local_node, cluster.peer_node
        self.fence = NodeFence(cluster, self._fence_standing, self._peer_last_heard, clock=boottime)
        self.link_engine = link_engine(cluster)   # ValueError (a bad $HAMIRROR_LINK_ENGINE): no start
        self.runners = {m.name: build_runner(m, cluster, self.fence) for m in modules}
        self.events = EventLog(cluster.state_dir, self.node.name)
        self.standby = standby.load(cluster.state_dir)
        self.notifier = Notifier(cluster.notify.script, cluster.notify.kinds, cluster.notify.timeout) \
            if cluster.notify.script else None
        if self.notifier is not None:
            self.events.listeners.append(self.notifier)
        self._linked_only: set[str] = set()   # modules whose peer is known alive by the link only
        self.beside = beside.BesideSequences()   # verdicts on a blocked mount under a running sequence
        hb = cluster.heartbeat
        self.heartbeat = HeartbeatService(
            cluster.name, self.node.name, self.peer_node.name, load_cluster_key(cluster.cluster_key_file),
            bind=[(addr, hb.port) for addr in self.node.addresses],
            peers=[(addr, hb.port) for addr in self.peer_node.addresses],
            modules=lambda: {name: r.advertised() for name, r in self.runners.items()},
            interval=hb.interval, timeout=hb.timeout, clock=boottime)
        # Same configuration and interoperable releases on both nodes (digests in the heartbeats).
        self.agreement = agreement.for_config(cluster, modules, self.heartbeat.key, self.events.add)
        self.heartbeat.digests, self.heartbeat.on_heard = self.agreement.digests, self.agreement.heard
        self._claim_alive = False
        self.listening = Listening(hb.timeout, stall_threshold(hb.interval, hb.timeout))
        self.listening.on_stall = self._stalled
        for runner in self.runners.values():
            self._wire(runner)
        self.witness = build_witness(cluster, claim=self._claims, marks=self._marks, still_needed=self._still_claims)
        self.quorum: bool | None = None
        self.control = control.ControlServer(control.socket_path(cluster.run_dir), self.handle)
        self.http = HttpServer(cluster.http, self.status, self.events.read, console.for_agent(self)) \
            if cluster.http else None
        self.stopping = asyncio.Event()
        # Set to tick before the interval is over: the peer advertised a change (e.g. a swap's
        # hand-over, which the new primary acts on at once), or the agent is stopping.
        self.wakeup = asyncio.Event()
        self.heartbeat.on_peer_change = self.wakeup.set
        self._check_tasks: dict[str, asyncio.Task] = {}
        self._watch: asyncio.Task | None = None
        self._keeper: asyncio.Task | None = None       # keep_vips
        self._vips_epoch = 0                            # the last stall whose VIPs were withdrawn
        self._lock_fd: int | None = None
        # ``hamirror reload`` and SIGHUP (hamirror/agent/reload.py); the CLI adds the secrets' checks.
        self.reloader = Reloader(self, functools.partial(build_runner, cluster=cluster, fence=self.fence))
        self._reloads: set[asyncio.Task] = set()

    def _wire(self, runner: ModuleRunner) -> None:
        """Connect a runner to the timeline, the heartbeats, the stall detection and the node's standby."""
        runner.emit = functools.partial(self.events.add, module=runner.name)
        runner.checkers.on_failure = functools.partial(runner.emit, "checker-failed")
        runner.on_change = self._changed
        runner.listening = self.listening
        runner.standby = self.standby

    def adopt(self, runner: ModuleRunner) -> None:
        """Run a module added by a reload (or replace its runner). A new dict, never a mutation:
        a tick iterating the old one across an ``await`` goes on undisturbed."""
        self._wire(runner)
        self.runners = {**self.runners, runner.name: runner}

    def drop(self, name: str) -> None:
        """Forget a module removed by a reload (already stopped); its checks end."""
        self.runners = {n: r for n, r in self.runners.items() if n != name}
        task = self._check_tasks.pop(name, None)
        if task is not None:
            task.cancel()

    def set_checkers(self, runner: ModuleRunner, checkers: CheckerState) -> None:
        """A reload changed the module's checkers: the running check round ends, the new ones wait an interval."""
        task = self._check_tasks.pop(runner.name, None)
        if task is not None:
            task.cancel()
        checkers.on_failure = functools.partial(runner.emit, "checker-failed")
        runner.checkers = checkers

    def _hangup(self) -> None:
        """SIGHUP: reload, as ``hamirror reload`` does (the outcome goes to the log and timeline)."""
        task = asyncio.get_running_loop().create_task(self.reloader.reload("SIGHUP"), name="reload")
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    def _stop(self) -> None:
        self.stopping.set()
        self.wakeup.set()

    def _fence_standing(self) -> FenceStanding:
        """Who wins the fence race: primaries here now, and on the peer by its last heartbeat."""
        last = self.heartbeat.peer_heartbeat
        peer = sum(1 for info in last.modules.values() if info.state.is_primary) if last else 0
        return FenceStanding(sum(1 for r in self.runners.values() if r.state.is_primary), peer)

    def _peer_last_heard(self) -> float | None:
        heard = [t for t in self.heartbeat.last_seen if t is not None]
        return max(heard) if heard else None

    def _claims(self) -> bool:
        """Whether this node needs the witness's lease: a primary module, or the peer not heard
        while listening (a node that just woke or started would take a lease the peer may be
        about to renew on a silence it never heard) and a module started here: with every module
        STOP it can do nothing with the lease, and holding it would refuse the peer's primary."""
        return self._any_primary() or (not self._claim_alive and self.listening.listened() and self._any_started())

    def _any_primary(self) -> bool:
        """A module primary here, or promoting (as the heartbeats say): a swap's hand-over claims
        the lease from its first action, so its mount can carry the new tenure's fencing token
        (:meth:`DataPath.wait_for_tenure`) instead of an earlier one the peer refuses."""
        return any(r.said_state().is_primary for r in self.runners.values())

    def _any_started(self) -> bool:
        return any(r.state is not NodeState.STOP for r in self.runners.values())

    def _still_claims(self) -> bool:
        """Asked while a verdict waits for a silent holder's lease to lapse: the claim stands while a
        module is primary here or the peer is still unheard (or its processes gone) beside a
        module started here. A peer heard again ends the wait, and the tick goes on with a
        refusal (it reads the peer again after)."""
        alive, _, _, gone = self._heard()
        return self._any_primary() or ((not alive or bool(gone)) and self._any_started())

    def _marks(self) -> Marks:
        """The outdated-copy marks this tick's witness request asks for, from each module's last
        observation and the peer as heard before the verdict (:mod:`outdate`)."""
        listened, outdate, force, current = self.listening.listened(), set(), set(), set()
        vouched = self.quorum is True and self.witness.vouches(boottime())   # the latest answer's, for every module
        for name, runner in self.runners.items():
            try:
                linked = not self._claim_alive and streaming(runner, self.cluster.heartbeat.timeout)
                alive = self._claim_alive or (linked and self.heartbeat.peer_heartbeat is not None)
                marked = self.witness.outdated(name)
                asks, forced, equal = runner.witness_marks(alive, listened, linked, marked == self.node.name, vouched)
            except Exception:  # noqa: BLE001 - one module's bug must not stop the others' requests
                log.exception("%s: the witness marks could not be worked out", name)
                continue
            if asks:
                outdate.add(name)
                if forced:
                    force.add(name)
            elif equal and marked is not None:
                current.add(name)
        heard = self._claim_alive and self.heartbeat.peer_heartbeat is not None
        current |= outdated_copies.orphans(self.witness.marked(), self.runners,
                                           self.heartbeat.peer_modules() if heard else None)
        return Marks(frozenset(outdate), frozenset(force), frozenset(current))

    def _changed(self) -> None:
        """A sequence ended: its state to the peer now, and the lease to the witness if no module is
        primary here any more (a hand-over's end)."""
        with contextlib.suppress(Exception):
            self.heartbeat.send_now()
        if not self._any_primary():
            try:
                self.witness.release_now()
            except Exception:  # noqa: BLE001 - the next tick's request releases it anyway
                log.exception("witness: the lease not released at once")

    def lock(self) -> None:
        """One agent per node: an exclusive lock on ``<run_dir>/agent.pid``."""
        os.makedirs(self.cluster.run_dir, mode=0o755, exist_ok=True)
        path = os.path.join(self.cluster.run_dir, "agent.pid")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AgentError(f"another agent is running (lock {path} is held)") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def use_workers(self) -> None:
        """The running loop's worker threads, enough for every module at once (:func:`worker_threads`)."""
        asyncio.get_running_loop().set_default_executor(concurrent.futures.ThreadPoolExecutor(
            max_workers=worker_threads(len(self.runners)), thread_name_prefix="agent"))

    async def run(self) -> None:
        """Run until SIGTERM/SIGINT (applications and mounts keep running; see docs/admin-guide.md)."""
        self.lock()
        self.use_workers()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop)
        loop.add_signal_handler(signal.SIGHUP, self._hangup)
        log.info("agent for node %s (cluster %s), modules: %s", self.node.name, self.cluster.name,
                 ", ".join(self.runners) or "none")
        log.info("replication link engine %s, from %s", *self.link_engine)
        self.events.add("agent", f"agent started (pid {os.getpid()}), modules: {', '.join(self.runners) or 'none'}")
        if self.cluster.availability_first:
            self.events.add("config", "neither [quorum] witness nor [fence] script: availability first, a "
                                      "partition between the nodes makes two primaries")
        for runner in self.runners.values():
            await runner.attach()
        await self.heartbeat.start()
        await self.witness.start()
        await self.control.start()
        if self.http and not await self.http.start():     # logged; the agent goes on without it
            self.events.add("config", f"HTTP status API not started: {self.http.error}")
        hb = self.cluster.heartbeat
        self._watch = asyncio.create_task(self.listening.watch(hb.interval / 2), name="stall-watch")
        try:
            epoch = self._vips_epoch = self.listening.check()
            self._keeper = asyncio.create_task(self.keep_vips(), name="vip-leases")
            while not self.stopping.is_set():
                if self.listening.check() != epoch:
                    epoch = self.listening.stalls
                    for runner in self.runners.values():
                        await runner.withdraw_vip()
                    self._vips_epoch = epoch
                    await asyncio.sleep(0.05)   # read the heartbeats queued meanwhile before deciding
                await self.tick()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.wakeup.wait(), self.cluster.heartbeat.interval)
                self.wakeup.clear()
        finally:
            await self.shutdown()

    async def keep_vips(self) -> None:
        """Renew the VIP leases every heartbeat interval, apart from the ticks: a tick of 50 modules
        on a loaded machine lasts longer than the lease (the heartbeat timeout), and renewed only
        between ticks, leases lapsed under applications starting (40 to 77 of 100 in a 50-module
        start, a start_prim failing on each: 20 s more). Not after a stall the main loop has not
        yet answered by withdrawing the VIPs (``_vips_epoch``)."""
        while True:
            if self.listening.check() == self._vips_epoch:
                await self.renew_vips()
            await asyncio.sleep(self.cluster.heartbeat.interval)

    async def renew_vips(self) -> None:
        """Extend the kernel lease of every VIP held here (a stalled loop lets them lapse), all
        at once (:func:`renew_leases`) in one worker thread."""
        runners = list(self.runners.items())
        began = time.monotonic()
        try:
            results = await asyncio.to_thread(renew_leases, [runner.executor for _, runner in runners])
        except Exception as exc:  # noqa: BLE001 - the next round tries again
            log.warning("VIP leases not renewed: %s", exc)
            return
        took = time.monotonic() - began
        if took > self.cluster.heartbeat.timeout / 4:     # a lease lapses after a timeout without renewal
            log.warning("renewing the VIP leases took %.2f s (a lease is %.0f s)", took,
                        math.ceil(self.cluster.heartbeat.timeout))
        for (name, runner), renewed in zip(runners, results):
            if isinstance(renewed, Exception):
                log.warning("%s: VIP lease not renewed: %s", name, renewed)
            elif not renewed:
                log.warning("%s: the VIP's lease had lapsed (this node did not run): it comes back "
                            "with the next decision that proves this node still primary", name)
                runner.vip_withdrawn = True

    def _stalled(self, gap: float) -> None:
        """A stall was noted (:mod:`stall`): it has not *listened* either, so the peer's silence
        means nothing for a full heartbeat timeout; meanwhile the peer may have taken over: the
        loop withdraws the VIPs of primaries until a decision proves this node still primary."""
        log.warning("the agent did not run for %.1f s (frozen, suspended or starved): VIP withdrawn, "
                    "listening for %.1f s before taking the peer's silence as loss", gap,
                    self.cluster.heartbeat.timeout)
        self.events.add("agent", f"the agent did not run for {gap:.1f} s (frozen, suspended or starved): "
                                 "listening before acting on the peer's silence")
        self.wakeup.set()

    def _heard(self) -> tuple[bool, float | None, Mapping[str, ModuleInfo], set[str]]:
        """The peer as heard now: alive, seconds of silence, its modules, and the modules whose
        primary's processes are gone (:func:`peer_gone`). Only an idle SECOND's: a SECOND busy
        promoting itself (a swap's second half) judges its peer by the heartbeats' timeout, as the
        decision after its sequence will (campaign 4106: the verdict beside the sequence took the
        peer for lost 1.2 s in, the decision still heard it, and stepped down to WAIT)."""
        hb = self.heartbeat
        alive, silence, infos = hb.peer_alive(), hb.silence(), hb.peer_modules()
        gone = {name for name, runner in self.runners.items() if alive and runner.state is NodeState.SECOND
                and runner.task is None and peer_gone(runner, silence, self.cluster.heartbeat.interval)}
        return alive, silence, infos, gone

    async def _observe(self) -> set[str]:
        """Every idle module's data path as it is now, observed at once (each in a worker thread):
        one after the other, the last of 50 modules decided seconds after the first, each waiting
        for a thread behind the others' actions (a takeover of 50 modules took 15 s more for it).
        After the verdict, which may have waited: `linked` rests on the receivers' last message
        (an observation from before the wait shows the link silent). The names whose observation
        failed (not decided this tick)."""
        idle = [(name, runner) for name, runner in self.runners.items() if runner.task is None]
        busy = [runner for runner in self.runners.values() if beside.bound_primary(runner)]
        results = await asyncio.gather(*(runner.refresh() for _, runner in idle),
                                       *(beside.watch_mounts(runner) for runner in busy), return_exceptions=True)
        failed = set()
        for (name, _), result in zip(idle, results[:len(idle)]):
            if isinstance(result, Exception):
                log.error("%s: observation failed", name, exc_info=result)
                failed.add(name)
            elif isinstance(result, BaseException):
                raise result
        for runner, result in zip(busy, results[len(idle):]):
            if isinstance(result, Exception):
                log.warning("%s: mounts not watched during the sequence: %s", runner.name, result)
        return failed

    async def tick(self) -> None:
        hb = self.heartbeat
        epoch = self.listening.check()     # a stall after this makes this tick's views stale
        before = self._heard()
        self.agreement.refused(hb.newer)
        # The verdict and the views see the same peer: one whose processes are gone is claimed
        # against at once (a SECOND told "no" because it did not claim would leave for WAIT).
        self._claim_alive = before[0] and not before[3]
        alive, silence, infos, gone = before
        try:
            self.quorum = await self.witness.verdict(boottime())
        except Exception:  # noqa: BLE001 - a witness failure must not stop the ticks
            log.exception("witness verdict failed")
            self.quorum = False
        unobserved = await self._observe()
        if not self._claim_alive:
            # Claimed against an unheard peer and refused by a holder gone quiet, the verdict
            # waited for its lease to lapse (up to a lease, ~10 s): the peer may be heard again by
            # now (it was frozen, or its agent restarting). A silence from before that wait, beside
            # the witness's fresh "the peer holds the lease", made a node that hears its peer mark
            # its copy stale (ALONE + WAIT in campaigns 1602 and 1604). Read it again.
            alive, silence, infos, gone = self._heard()
        else:
            # The same live peer, its modules as heard now: a view pairs them with this tick's
            # observation, and from older ones (read before a verdict and 50 observations that took
            # a second under load), a WAIT node's copy the peer had just resynced read as up to date
            # beside the peer's history from before it had one (relation UNKNOWN): marked stale
            # again, and resynced again 10 s later (up to 10 of 50 modules starting at once).
            now = self._heard()
            if now[0] and now[3] == gone:
                infos = now[2]
        try:
            vouched = self.quorum is True and self.witness.vouches(boottime())
            peer_leased = self.witness.peer_holds(boottime(), silence)
            peer_asks = self.witness.peer_asks(boottime())
            after_peer = self.quorum is True and self.witness.granted_after_peer(boottime())
            keeps_marks = self.witness.keeps_marks()
            marks = {name: self.witness.outdated(name) for name in self.runners}
        except Exception:  # noqa: BLE001 - a witness failure must not stop the ticks
            log.exception("witness verdict failed")
            self.quorum, vouched, peer_leased, peer_asks, after_peer = False, False, False, False, False
            keeps_marks, marks = True, {}
        token = self._tenure_token()
        listened = self.listening.listened()
        legacy = hb.peer_heartbeat is not None and hb.peer_heartbeat.software is None   # 0.2.0: no handshake
        for name, runner in self.runners.items():
            info = infos.get(name)
            peer_alive = alive
            if name in gone:
                # Not a silent peer but a dead one: its kernel closed the replication connection
                # when its processes died, and it has not been heard since. No need to wait out
                # the whole heartbeat timeout (a frozen or cut-off peer closes nothing).
                log.warning("%s: the primary's replication connection closed and it is silent for %.1f s: "
                            "its processes are gone", name, silence)
                peer_alive, info = False, None
            linked = not alive and streaming(runner, self.cluster.heartbeat.timeout)
            if linked and hb.peer_heartbeat is not None:
                # Heartbeats lost, but the replication link between the two data paths is alive:
                # the peer's agent is down (or its heartbeats blocked), not its server. Acting
                # alone now (a takeover, or a primary dropping its secondary) would be wrong; keep
                # the last view of the peer. Never heard since this agent started: the view says
                # so (``linked``), and decide() acts on no silence.
                info, peer_alive = hb.peer_heartbeat.modules.get(name), True
            if linked != (name in self._linked_only):
                (self._linked_only.add if linked else self._linked_only.discard)(name)
                log.warning("%s: %s", name, "peer's heartbeats lost but its replication link is alive: "
                            "not acting alone" if linked else "peer heard again (or link gone)")
            peer = PeerView(alive=peer_alive, state=info.state if info else None,
                            uptodate=bool(info and info.uptodate), swap=info.swap if info else PeerView().swap,
                            fenced=bool(info and info.fenced), woke=bool(info and info.woke),
                            leaving=bool(info and info.leaving), yielded=bool(info and (info.yielded or legacy)),
                            silent=silence is None or silence > self.cluster.heartbeat.timeout / 2)
            history = journal_info.from_wire(info.generation) if info else None
            if runner.task is not None:
                self.beside.act(name, runner, peer, self.quorum, history, peer_leased, listened, epoch)
            if info is not None and info.maintenance_version:
                runner.follow_peer_maintenance(info.maintenance, info.maintenance_version, self.peer_node.name)
            if after_peer and runner.state in (NodeState.WAIT, NodeState.STOP):
                runner.note_peer_led("the witness's lease came to us from the peer")
            try:
                runner.datapath.record_fencing_token(token)   # before anything acts on the tenure
                if name not in unobserved:
                    await runner.tick(peer, history, self.quorum, listened, epoch, linked,
                                      vouched and not runner.record.peer_led, peer_leased, peer_asks, observed=True,
                                      renewed=self.witness.renewed, outdated=marks.get(name) == self.node.name,
                                      peer_outdated=not keeps_marks or marks.get(name) == self.peer_node.name)
            except Exception:  # noqa: BLE001 - one module's bug must not stop the others
                log.exception("%s: tick failed", name)
            if runner.state.is_primary and runner.task is None and runner.checkers.checkers and not runner.maintenance:
                task = self._check_tasks.get(name)
                if task is None or task.done():
                    self._check_tasks[name] = asyncio.create_task(runner.checkers.run_due())

    def _tenure_token(self) -> int | None:
        """The fencing token of the tenure this node holds now (None: none, or no tokens); a failure
        here records no new token and changes no verdict."""
        if self.quorum is not True:
            return None
        try:
            return self.witness.token()
        except Exception:  # noqa: BLE001 - the token is a second line of defence, the verdict the first
            log.exception("the quorum's fencing token could not be read")
            return None

    async def handle(self, request: dict) -> dict:
        """Answer one control-socket request; every operator command goes to the timeline with
        who sent it (:func:`control.caller`) and what came of it."""
        cmd = request.get("cmd")
        if cmd == "status":
            return {"ok": True, "status": self.status()}
        if cmd == "reload":
            moved = request.get("moved")
            return await self.reloader.reload(f"by {who_text(control.caller())}",
                                              moved if isinstance(moved, dict) else None)
        if cmd == "node":
            return await self.set_standby(request.get("action") == "standby", float(request.get("timeout") or 600))
        if cmd not in ("module", "maintenance", "clear", "verify"):
            return {"ok": False, "error": f"unknown request {cmd!r}"}
        runner = self.runners.get(str(request.get("module")))
        if runner is None:
            return {"ok": False, "unknown_module": True,
                    "error": f"no module {request.get('module')!r} on this node "
                             f"(modules: {', '.join(self.runners) or 'none'})"}
        if cmd == "module":
            try:
                command = Command(request.get("action"))
            except ValueError:
                return {"ok": False, "error": f"unknown command {request.get('action')!r}"}
            name = command.value + (" --all" if request.get("all") and command in both.ON_BOTH else "")
        else:
            name = {"maintenance": f"maintenance {'on' if request.get('on') else 'off'}", "clear": "clear",
                    "verify": "verify --repair" if request.get("repair") else "verify"}[cmd]
        who = control.caller()
        runner.emit("command", f"{name} by {who_text(who)}", command=name, caller=who)
        if cmd == "maintenance":
            runner.set_maintenance(bool(request.get("on")))
            answer = {"ok": True, "state": runner.state.value, "warnings": [], "error": None}
        elif cmd == "clear":
            runner.clear()
            answer = {"ok": True, "state": runner.state.value, "warnings": [], "error": None}
        elif cmd == "verify":   # online verify: hamirror/agent/verify.py
            answer = await verify.answer(self, runner, request)
        elif request.get("all") and command in both.ON_BOTH:
            answer = await both.run(self, runner, command)
        else:
            outcome = await runner.submit(command)
            answer = {"ok": outcome.ok, "state": outcome.state, "warnings": outcome.warnings, "error": outcome.error}
        runner.emit("command-result", f"{name}: {'done' if answer['ok'] else 'refused or failed'}, now "
                    f"{answer['state']}" + "".join(f"; {w}" for w in answer["warnings"])
                    + (f"; error: {answer['error']}" if answer["error"] else ""), command=name, ok=answer["ok"])
        return {**answer, "maintenance": runner.maintenance}

    async def set_standby(self, on: bool, timeout: float) -> dict:
        """``hamirror node standby|online`` (:mod:`standby`): recorded first, then applied."""
        name = "node standby" if on else "node online"
        who = control.caller()
        self.events.add("command", f"{name} by {who_text(who)}", command=name, caller=who)
        try:
            await asyncio.to_thread(standby.save, self.cluster.state_dir, on)
        except OSError as exc:
            return {"ok": False, "error": f"the standby setting could not be recorded: {exc}", "modules": {}}
        self.standby = on
        modules = await standby.apply(self.runners, on, timeout)
        ok = all(m["ok"] for m in modules.values())
        self.events.add("command-result", f"{name}: " + ", ".join(
            f"{n} {m['state']}" + (f" ({m['error']})" if m["error"] else "") for n, m in modules.items()),
            command=name, ok=ok)
        return {"ok": ok, "standby": on, "modules": modules,
                "error": None if ok else "some modules are still primary here (see modules)"}

    def status(self) -> dict:
        hb = self.heartbeat
        return self.agreement.annotate({
            "node": self.node.name, "cluster": self.cluster.name, "standby": self.standby,
            "peer": {"name": self.peer_node.name, "alive": hb.peer_alive(), "networks": hb.networks(),
                     "rejected": hb.rejected},
            "modules": [module_status(r) for r in self.runners.values()],
            "quorum": self.quorum, "witness": self.witness.status(),
            "notify": None if self.notifier is None else {
                "script": self.notifier.script, "sent": self.notifier.sent, "failed": self.notifier.failed,
                "dropped": self.notifier.dropped},
        })

    async def shutdown(self) -> None:
        """Stop heartbeats and the control socket; let running actions finish (bounded)."""
        log.info("agent stopping; modules keep their state (applications and mounts keep running)")
        if self._keeper is not None:      # the leases lapse as before: no agent, no VIP
            self._keeper.cancel()
        self.events.add("agent", "agent stopping; modules keep their state")
        await self.control.close()
        if self.http:
            await self.http.close()
        tasks = [r.task for r in self.runners.values() if r.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=60)
        for task in self._check_tasks.values():
            task.cancel()
        if self._watch is not None:
            self._watch.cancel()
        await self.witness.stop()
        await self.heartbeat.stop()
        if self.notifier is not None:        # the "agent stopping" event, and what is queued
            await asyncio.to_thread(self.notifier.close)


def who_text(who: dict | None) -> str:
    """``root (login alice, ssh 10.0.0.5, pid 4242)`` for an event's text."""
    if not who:
        return "unknown"
    login = f"login {who['login']}, " if who.get("login") and who["login"] != who.get("user") else ""
    pid = f", pid {who['pid']}" if who.get("pid") else ""
    return f"{who.get('user')} ({login}{who.get('from')}{pid})"


def streaming(runner: ModuleRunner, timeout: float) -> bool:
    """True when the replication link to the peer is alive: our receiver heard the primary's
    mount within ``timeout`` (it sends keepalives when idle), or our mount is still mirroring."""
    obs = runner.obs
    if obs is None:
        return False
    now = time.time()
    if any(r and r.get("last_message") and now - r["last_message"] <= timeout and r.get("connections", 1) > 0
           for r in obs.receivers):
        return True
    return bool(obs.mounts) and obs.mount_states == {"PRIM"} and all(
        m and now - float(m.get("updated", 0)) <= timeout for m in obs.mounts)


def peer_gone(runner: ModuleRunner, silence: float | None, interval: float) -> bool:
    """The primary's processes died: every receiver saw its connection close, about when the
    peer fell silent (not long before its last heartbeat), and the silence has lasted four
    heartbeat intervals: more than the witness's freshness bound (two intervals) plus one of skew
    between the peer's last heartbeat and its last witness request, so the witness, asked now,
    already sees the dead primary silent (its lease lapsing: :meth:`UdpWitness.verdict` waits
    for it) rather than holding the lease alive. A connection closed long ago (a mount
    restarted) proves nothing."""
    obs = runner.obs
    if obs is None or silence is None or silence < 4 * interval or not obs.receivers:
        return False
    last_heard = time.time() - silence
    return all(r is not None and r.get("connections") == 0 and r.get("closed_at") is not None
               and r["closed_at"] >= last_heard - interval for r in obs.receivers)
