"""Double faults of the campaign: a second fault while the pair is busy recovering from a first one.

- ``takeover-double``: power-kill of the primary; as soon as the survivor leaves SECOND (its
  takeover under way: VIP, mount, the application's start), a second fault hits the survivor.
- ``resync-double``: during a failback resync (:meth:`Injector.failback_resync`), a second fault
  hits either side (``resync-kill`` is the power-kill of the source; this draws the others).
- ``swap-double``: during a ``swap``, 0.3-3 s after it began.
- ``swap-cut`` (a witness or etcd only, as every partition): a ``swap``, and the peers cut apart for 3-6 s as soon as the new primary's agent
  has added the VIP, while its ``start_prim`` runs (campaigns 4004 and 4010: the application's
  start waited 60 s on a mount the cut had left blocked, the cut healed long before).
- ``swap-kill`` (a witness or etcd only): the same moment, the old primary (SECOND by then)
  power-killed, booted 8-15 s later.
- ``remount-double``: kill -9 of the primary's mount daemon, then a second fault once the agent
  mounts again.
- ``alone-double`` (a witness or etcd only: without a quorum the survivor takes over by design):
  the SECOND frozen, the primary goes on alone and acknowledges writes, then loses power while the
  SECOND is still frozen; the SECOND thawed 11-14 s later, the primary booted 15 s after that. The
  SECOND must not take over meanwhile without the primary's writes (the witness marks its copy
  outdated).

The second fault is drawn (seeded) and written in the event's detail; the event's time is the
first fault's, so its recovery counts from there.
"""

from __future__ import annotations

import os
import signal
import threading
import time

from hamirror.lab import agent, control, measure
from hamirror.lab.chaos_faults import Event, _signal, pids_of
from hamirror.lab.chaos_etcd import EtcdInjector
from hamirror.lab.naming import NODES

DOUBLE = ("takeover-double", "resync-double", "swap-double", "remount-double")
QUORUM_DOUBLE = ("alone-double", "swap-cut", "swap-kill")
OUTLAST_LEASE = 15.0      # seconds from the thaw: longer than the lab's default lease (10 s)


class CampaignInjector(EtcdInjector):
    """Every fault of the campaign."""

    def second(self, ev: Event, node: str, kind: str) -> None:
        """The second fault, on node: kill-mount, kill-receiver, kill-agent (started again 0.5-3 s
        later), kill-app, freeze (2-5 s) or power-kill (booted 1-5 s later)."""
        if kind in ("kill-mount", "kill-receiver", "kill-app"):
            what = kind.split("-")[1]
            pids = pids_of(self.paths, node, what, self.app)
            ev.detail.append(f"then kill -9 {what} of {node} {self._kill(pids)}" if pids
                             else f"then no {what} on {node}")
        elif kind == "kill-agent":
            pids = pids_of(self.paths, node, "agent")
            ev.detail.append(f"then kill -9 agent of {node} {self._kill(pids)}")
            time.sleep(self.rng.uniform(0.5, 3.0))
            if not pids_of(self.paths, node, "agent"):
                control.start_agent(self.paths, node)
        elif kind == "freeze":
            seconds = self.rng.uniform(2.0, 5.0)
            self.freeze(node, seconds)
            ev.detail.append(f"then froze {node} {seconds:.1f} s")
        elif kind == "power-kill":
            self.kill(node)
            delay = self.rng.uniform(1.0, 5.0)
            time.sleep(delay)
            self.boot(node)
            ev.detail.append(f"then power-killed {node}, booted after {delay:.1f} s")
        else:
            raise ValueError(kind)

    def _kill(self, pids: list[int]) -> list[int]:
        return _signal(pids, signal.SIGKILL)

    def _takeover_double(self, ev: Event) -> None:
        p, s = self.roles()
        if p is None:
            ev.skipped = "no primary"
            return
        ev.node = p
        self.kill(p)
        ev.start = time.monotonic()
        deadline = ev.start + 30.0
        state = None
        while time.monotonic() < deadline:
            m = measure.module_status(self.paths, s, self.app.module) or {}
            state = m.get("state")
            if state not in (None, "SECOND") or m.get("busy"):
                break
            time.sleep(0.1)
        kind = self.rng.choice(["kill-mount", "kill-agent", "freeze", "kill-app"])
        ev.detail.append(f"power-killed primary {p}; {s} is {state} after {time.monotonic() - ev.start:.1f} s")
        self.second(ev, s, kind)
        time.sleep(self.rng.uniform(0.5, 3.0))
        self.boot(p)
        ev.detail.append(f"{p} booted")

    def _resync_double(self, ev: Event) -> None:
        found = self.failback_resync(ev)
        if found is None:
            return
        target, source, seen = found
        ev.start = time.monotonic()
        kind, node = self.rng.choice([("kill-receiver", target), ("kill-mount", source), ("freeze", source),
                                      ("kill-agent", source), ("kill-agent", target), ("power-kill", target)])
        ev.detail.append(f"failback resync {source} -> {target} under way ({seen})")
        self.second(ev, node, kind)

    def _swap_double(self, ev: Event) -> None:
        p = ev.node = self._primary(ev)
        if p is None:
            return
        ev.start = time.monotonic()
        swap = threading.Thread(target=self.swap, args=(p, ev), daemon=True)
        swap.start()
        time.sleep(self.rng.uniform(0.3, 3.0))
        s = next(n for n in NODES if n != p)
        kind, node = self.rng.choice([("power-kill", p), ("power-kill", s), ("kill-mount", p), ("kill-agent", p),
                                      ("kill-agent", s), ("kill-receiver", s)])
        self.second(ev, node, kind)
        swap.join(timeout=150)

    def _during_start(self, ev: Event, fault) -> None:
        """``hamirror swap`` on the primary p; once the new primary s logs ``done AddVip()`` (its
        ``start_prim`` under way), ``fault(p, s)``, which returns its detail."""
        p = ev.node = self._primary(ev)
        if p is None:
            return
        s = next(n for n in NODES if n != p)
        log = self.paths.log_file(s, "agent")
        offset = os.path.getsize(log)
        swap = threading.Thread(target=self.swap, args=(p, ev), daemon=True)
        swap.start()
        deadline = time.monotonic() + 60.0
        with open(log, encoding="utf-8", errors="replace") as f:
            f.seek(offset)
            seen = ""
            while f"{self.app.module}: done AddVip()" not in seen and time.monotonic() < deadline:
                seen += f.read()
                time.sleep(0.01)
        if time.monotonic() >= deadline:
            ev.skipped = f"{s} added no VIP within 60 s of the swap"
        else:
            ev.detail.append(f"swap on {p}; " + fault(ev, p, s))
        swap.join(timeout=150)

    def _swap_cut(self, ev: Event) -> None:
        def cut(ev: Event, p: str, s: str) -> str:
            ev.start = time.monotonic()
            control.cut(self.paths, p, s)
            hold = self.rng.uniform(3.0, 6.0)
            time.sleep(hold)
            control.heal(self.paths)
            return f"{p}|{s} cut once {s} added the VIP, healed after {hold:.1f} s"
        self._during_start(ev, cut)

    def _swap_kill(self, ev: Event) -> None:
        def kill(ev: Event, p: str, s: str) -> str:
            self.kill(p)
            ev.start = time.monotonic()
            delay = self.rng.uniform(8.0, 15.0)
            time.sleep(delay)
            self.boot(p)
            return f"{p} (the old primary, now SECOND) power-killed once {s} added the VIP, booted after {delay:.1f} s"
        self._during_start(ev, kill)

    def _remount_double(self, ev: Event) -> None:
        p = ev.node = self._primary(ev)
        if p is None:
            return
        old = set(pids_of(self.paths, p, "mount"))
        if not old:
            ev.skipped = f"no mount process on {p}"
            return
        self._kill(list(old))
        ev.start = time.monotonic()
        deadline = ev.start + 20.0
        while time.monotonic() < deadline and not (set(pids_of(self.paths, p, "mount")) - old):
            time.sleep(0.2)
        ev.detail.append(f"kill -9 mount {sorted(old)}; "
                         + ("remounted" if time.monotonic() < deadline else "no new mount") +
                         f" after {time.monotonic() - ev.start:.1f} s")
        time.sleep(self.rng.uniform(0.0, 1.0))
        self.second(ev, p, self.rng.choice(["kill-mount", "power-kill", "kill-agent", "kill-app"]))

    def _alone_double(self, ev: Event) -> None:
        p, s = self.roles()
        if p is None or s is None:
            ev.skipped = "no primary and secondary"
            return
        ev.node = p
        deadline = time.monotonic() + 30.0          # a witness just (re)started grants nothing for a lease
        while time.monotonic() < deadline and (agent.node_status(self.paths, p) or {}).get("quorum") is not True:
            time.sleep(0.2)
        self.frozen = _signal(pids_of(self.paths, s), signal.SIGSTOP)
        ev.start = time.monotonic()
        try:
            state = None
            while time.monotonic() < ev.start + 30.0 and state != "ALONE":
                time.sleep(0.2)
                state = (measure.module_status(self.paths, p, self.app.module) or {}).get("state")
            alone = time.monotonic() - ev.start
            time.sleep(self.rng.uniform(1.0, 3.0))            # writes acknowledged alone
            self.kill(p)
            # Past the heartbeats' skew window (10 s): the primary's last heartbeats, queued for
            # the frozen node, would tell it that the primary went on alone; only the witness can.
            time.sleep(self.rng.uniform(11.0, 14.0))
        finally:
            self.thaw()
        ev.detail.append(f"froze SECOND {s}; {p} {state} after {alone:.1f} s; power-killed {p}; thawed {s}")
        time.sleep(OUTLAST_LEASE)
        after = (measure.module_status(self.paths, s, self.app.module) or {}).get("state")
        ev.detail.append(f"{s} {after} {OUTLAST_LEASE:.0f} s after the thaw")
        self.boot(p)
        ev.detail.append(f"{p} booted")
