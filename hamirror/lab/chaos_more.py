"""The faults issue 15's review found missing from the campaign (``scripts/chaos.py``), on top of
:mod:`chaos_faults`: one-way and heartbeat-only losses, a lossy link, a hung (SIGSTOP) mount daemon, a failed
``stop_prim``, a witness restart (and the witness down beside a one-way loss and a freeze), a slow
fence script, and a real power loss.

Two of them need the lab's copy of a script changed, in the lab only (:meth:`MoreInjector.prepare_lab`,
run after every build; the module folders in the repository are never touched):

- ``stop_prim`` of the module fails once when ``/run/hamirror/chaos-fail-stop`` exists on the node
  (``ROOT/NODE/run/`` on the host), and removes the marker;
- the fence script (``lab up --fence``) sleeps the seconds written in
  ``/run/hamirror/chaos-fence-delay`` before it power-kills the peer, as a slow BMC would.
"""

from __future__ import annotations

import os
import signal
import time

from hamirror.lab import agent, chaos_net, control, nodeconfig, powerloss, process, state
from hamirror.lab.chaos_faults import Event, Injector, _signal, pids_of
from hamirror.lab.naming import NODES, WITNESS
from hamirror.lab.shell import LabError

NETWORK = ("oneway-p2s", "oneway-s2p", "hb-only", "lossy")
PROCESS = ("hang-mount", "fail-stop")
NEEDS_WITNESS = ("witness-restart", "witness-down-oneway")
NEEDS_FENCE = ("slow-fence",)
POWER = ("power-loss",)
FAIL_STOP_MARKER = "chaos-fail-stop"
FENCE_DELAY_MARKER = "chaos-fence-delay"
FAIL_ONCE = (f'if [ -e /run/hamirror/{FAIL_STOP_MARKER} ]; then rm -f /run/hamirror/{FAIL_STOP_MARKER}; '
             'echo "chaos (lab only): stop_prim fails once"; exit 1; fi\n')
SLOW_FENCE = (f'd=$(cat /run/hamirror/{FENCE_DELAY_MARKER} 2>/dev/null || true)\n'
              'if [ -n "$d" ]; then echo "chaos (lab only): fence delayed $d s"; sleep "$d"; fi\n')


def _insert_after_first(text: str, marker: str, addition: str) -> str:
    """text with addition inserted after the first line that starts with marker."""
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.startswith(marker):
            return "".join(lines[:i + 1] + [addition] + lines[i + 1:])
    raise LabError(f"no line starting with {marker!r} to patch after")


class MoreInjector(Injector):
    """:class:`Injector` plus the faults of this module and what undoes them."""

    def prepare_lab(self) -> None:
        """Patch the lab's copies of stop_prim (fail once on a marker) and of the fence script (delay)."""
        name = nodeconfig.module_name(self.app.module)
        for node in NODES:
            script = os.path.join(self.paths.node_dir(node, "etc"), "modules", name, "stop_prim")
            with open(script, encoding="utf-8") as f:
                text = f.read()
            if FAIL_STOP_MARKER not in text:
                with open(script, "w", encoding="utf-8") as f:
                    f.write(_insert_after_first(text, "set -", FAIL_ONCE))
            fence = os.path.join(self.paths.node_dir(node, "etc"), nodeconfig.FENCE_SCRIPT)
            if os.path.exists(fence):
                with open(fence, encoding="utf-8") as f:
                    text = f.read()
                if FENCE_DELAY_MARKER not in text:
                    with open(fence, "w", encoding="utf-8") as f:
                        f.write(_insert_after_first(text, "#!", SLOW_FENCE))

    def _marker(self, node: str, name: str) -> str:
        return os.path.join(self.paths.node_dir(node, "run"), name)

    def restore(self) -> list[str]:
        done = []
        if chaos_net.heal(self.paths):
            done.append("removed one-way / heartbeat rules")
        for node in NODES:
            for name in (FAIL_STOP_MARKER, FENCE_DELAY_MARKER):
                if os.path.exists(self._marker(node, name)):
                    os.unlink(self._marker(node, name))
                    done.append(f"removed {node}'s unused {name}")
            if node not in self.down and not pids_of(self.paths, node):
                self.down.add(node)           # killed by a fence: booted below, like any killed node
                done.append(f"{node} found dead (fenced)")
        recorded = state.load(self.paths)
        if recorded is not None and recorded.witness and not process.members(self.paths, WITNESS,
                                                                             recorded.started_in(WITNESS)):
            self._start_witness()
            done.append("started the dead witness")
        return done + super().restore()

    def _start_witness(self) -> None:
        recorded = control.require(self.paths)
        recorded.processes.append(agent.start_witness(self.paths, recorded.lease))
        state.save(self.paths, recorded)

    # ------------------------------------------------------------------ faults

    def _cut_for(self, ev: Event, apply, what: str) -> None:
        hold = self.rng.uniform(3.0, 12.0)
        ev.start = time.monotonic()
        apply()
        try:
            time.sleep(hold)
        finally:
            chaos_net.heal(self.paths)
        ev.detail.append(f"{what}; healed after {hold:.1f} s")

    def _oneway(self, ev: Event, from_primary: bool) -> None:
        p, s = self.roles()
        if p is None:
            ev.skipped = "no primary"
            return
        sender, receiver = (p, s) if from_primary else (s, p)
        ev.node = sender
        self._cut_for(ev, lambda: chaos_net.one_way(self.paths, sender, receiver),
                      f"{sender} -> {receiver} dropped (one way)")

    def _oneway_p2s(self, ev: Event) -> None:
        self._oneway(ev, from_primary=True)

    def _oneway_s2p(self, ev: Event) -> None:
        self._oneway(ev, from_primary=False)

    def _hb_only(self, ev: Event) -> None:
        self._cut_for(ev, lambda: chaos_net.heartbeat_only(self.paths),
                      f"UDP {chaos_net.HEARTBEAT_PORT} blocked between the nodes, replication flowing")

    def _lossy(self, ev: Event) -> None:
        """10-60 % of the packets between the nodes lost at random, both ways, for 3-12 s."""
        percent = self.rng.randint(10, 60)
        self._cut_for(ev, lambda: chaos_net.lossy(self.paths, percent),
                      f"{percent} % of the packets between the nodes dropped at random, both ways")

    def _hang_mount(self, ev: Event) -> None:
        """SIGSTOP of the primary's ``mirror mount`` only, SIGCONT 4-15 s later."""
        node = ev.node = self._primary(ev)
        if node is None:
            return
        pids = pids_of(self.paths, node, "mount")
        if not pids:
            ev.skipped = f"no mount process on {node}"
            return
        seconds = self.rng.uniform(4.0, 15.0)
        ev.start = time.monotonic()
        self.frozen = _signal(pids, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            self.thaw()
        ev.detail.append(f"SIGSTOP mount {pids} for {seconds:.1f} s, then SIGCONT")

    def _fail_stop(self, ev: Event) -> None:
        """A swap whose stop_prim on the primary fails (once)."""
        node = ev.node = self._primary(ev)
        if node is None:
            return
        with open(self._marker(node, FAIL_STOP_MARKER), "w", encoding="utf-8"):
            pass
        ev.start = time.monotonic()
        self.swap(node, ev)
        used = not os.path.exists(self._marker(node, FAIL_STOP_MARKER))
        ev.detail.append("stop_prim failed once" if used else "stop_prim was not run (marker left)")

    def _witness_restart(self, ev: Event) -> None:
        """kill -9 of the witness, started again 2-10 s later."""
        ev.node = WITNESS
        ev.start = time.monotonic()
        control.kill(self.paths, WITNESS)
        delay = self.rng.uniform(2.0, 10.0)
        time.sleep(delay)
        self._start_witness()
        ev.detail.append(f"witness killed, started again after {delay:.1f} s")

    def _witness_down_oneway(self, ev: Event) -> None:
        """The handshake's sequence (docs/reliability.md): the witness killed, and nothing from the
        secondary reaches the primary for 8-15 s (the primary steps down; the secondary, which
        hears it, must not take over beside it); then the secondary frozen 12-18 s while the
        witness starts again (longer than the witness's first lease: the old primary, vouched and
        the secondary unheard, resumes alone); then thawed and healed."""
        p, s = self.roles()
        if p is None or s is None or s in self.down:
            ev.skipped = "no primary and secondary"
            return
        ev.node = s
        hold, freeze = self.rng.uniform(8.0, 15.0), self.rng.uniform(12.0, 18.0)
        ev.start = time.monotonic()
        control.kill(self.paths, WITNESS)
        chaos_net.one_way(self.paths, s, p)
        try:
            time.sleep(hold)
            self.frozen = _signal(pids_of(self.paths, s), signal.SIGSTOP)
            self._start_witness()
            time.sleep(freeze)
        finally:
            self.thaw()
            chaos_net.heal(self.paths)
        ev.detail.append(f"witness killed, {s} -> {p} dropped (one way) for {hold:.1f} s, then {s} frozen "
                         f"{freeze:.1f} s while the witness started again; thawed, healed")

    def _slow_fence(self, ev: Event) -> None:
        """Both fence scripts delayed 3-8 s, then the peers cut from each other for 4-12 s."""
        if not any(os.path.exists(os.path.join(self.paths.node_dir(n, "etc"), nodeconfig.FENCE_SCRIPT)) for n in NODES):
            ev.skipped = "no fence script (lab up without --fence)"
            return
        delay = self.rng.uniform(3.0, 8.0)
        for node in NODES:
            with open(self._marker(node, FENCE_DELAY_MARKER), "w", encoding="utf-8") as f:
                f.write(f"{delay:.1f}\n")
        hold = self.rng.uniform(4.0, 12.0)
        ev.start = time.monotonic()
        control.cut(self.paths, "node1", "node2")
        try:
            time.sleep(hold)
        finally:
            control.heal(self.paths)
        ev.detail.append(f"fence delayed {delay:.1f} s on both nodes; node1|node2 cut for {hold:.1f} s")

    def _power_loss(self, ev: Event) -> None:
        """Real power loss of either node (``lab kill NODE --power-loss``: SIGKILL, and its unsynced
        page-cache writes lost), booted 1-8 s later."""
        node = self._either(ev)
        result = powerloss.power_loss(self.paths, node)
        self.down.add(node)
        ev.start = time.monotonic()
        delay = self.rng.uniform(1.0, 8.0)
        time.sleep(delay)
        self.boot(node)
        ev.detail.append(f"{result.summary()}; boot after {delay:.1f} s")
