"""The quorum-service faults of the campaign (``scripts/chaos.py --etcd``, issue 18), on top of
:mod:`chaos_more`: one etcd member killed, the etcd leader killed, the whole etcd cluster down,
and the primary isolated with a minority of etcd.

What the pair should do: nothing visible when one member or the leader dies (the other two keep
the quorum). With all of etcd down, the primary keeps serving while it hears its peer, and nobody
takes over. When the primary is cut from its peer and still reaches only one etcd member (which
has no quorum), it steps down, and the node on the majority side takes over once the primary's
etcd lease expires. A killed member boots again with its data, as a rebooted machine would.
"""

from __future__ import annotations

import time

from hamirror.lab import control, etcdlab, state
from hamirror.lab.chaos_faults import Event
from hamirror.lab.chaos_more import MoreInjector
from hamirror.lab.naming import NODES
from hamirror.lab.shell import LabError

ETCD = ("etcd-member", "etcd-leader", "etcd-down", "part-primary-minority")
LEADER_WAIT = 15.0      # s to find the leader: just after a member rejoined, an election may be under way
HEALTHY_WAIT = 30.0     # s for every member to answer again after a boot, before the next fault


def minority_cuts(primary: str, secondary: str, kept: str) -> list[tuple[str, str]]:
    """The cuts that split the lab into {primary, kept} and {secondary, the two other etcd hosts}.
    The etcd side goes first, so the primary loses its quorum while it still hears its peer (no
    lease granted to it alone in between); the peers' link goes last."""
    others = [h for h in etcdlab.HOSTS if h != kept]
    return ([(kept, h) for h in others] + [(primary, h) for h in others] + [(secondary, kept)]
            + [(primary, secondary)])


class EtcdInjector(MoreInjector):
    """:class:`MoreInjector` plus the faults of the lab's etcd cluster, and what undoes them."""

    def restore(self) -> list[str]:
        """Boot every etcd member still down, then the rest (heal, boot, agents), then wait until
        etcd answers on every member again, so the next trial starts with its quorum."""
        dead = etcdlab.down(self.paths)
        done = self.boot_etcd(dead) + super().restore()
        return done + self.etcd_healthy()

    def boot_etcd(self, hosts: list[str]) -> list[str]:
        """Start the killed members of hosts again, each with its data (``lab boot etcdN``)."""
        for host in hosts:
            control.boot_etcd(self.paths, host)
        return [f"booted {host}" for host in hosts]

    def etcd_healthy(self) -> list[str]:
        """Wait (at most :data:`HEALTHY_WAIT` s) until every etcd member answers; what went wrong, if anything."""
        recorded = state.load(self.paths)
        if recorded is None or not recorded.etcd:
            return []
        try:
            etcdlab.wait_healthy(self.paths, HEALTHY_WAIT)
        except LabError as exc:
            return [f"etcd not healthy after {HEALTHY_WAIT:.0f} s: {str(exc).splitlines()[0][:200]}"]
        return []

    # ------------------------------------------------------------------ helpers

    def _outage(self, ev: Event, hosts: list[str], low: float, high: float) -> None:
        """kill -9 of hosts' etcd (in that order), booted again (in a drawn order) low-high s later;
        the fault ends once every member answers again (at most :data:`HEALTHY_WAIT` s)."""
        delay = self.rng.uniform(low, high)
        for host in hosts:
            control.kill(self.paths, host)
        ev.start = time.monotonic()
        time.sleep(delay)
        self.boot_etcd(self.rng.sample(hosts, len(hosts)))
        booted = time.monotonic()
        ev.detail.append(f"kill -9 etcd of {', '.join(hosts)}; booted again after {delay:.1f} s; "
                         + (", ".join(self.etcd_healthy()) or f"etcd healthy {time.monotonic() - booted:.1f} s later"))

    def _leader(self) -> str | None:
        deadline = time.monotonic() + LEADER_WAIT
        while True:
            found = etcdlab.leader(self.paths)
            if found is not None or time.monotonic() > deadline:
                return found
            time.sleep(0.5)

    # ------------------------------------------------------------------ faults

    def _etcd_member(self, ev: Event) -> None:
        """kill -9 of one etcd member drawn at random, booted again 2-10 s later."""
        up = [h for h in etcdlab.HOSTS if h not in etcdlab.down(self.paths)]
        if not up:
            ev.skipped = "no etcd member running"
            return
        ev.node = self.rng.choice(up)
        self._outage(ev, [ev.node], 2.0, 10.0)

    def _etcd_leader(self, ev: Event) -> None:
        """kill -9 of the etcd leader (``etcdctl endpoint status``), booted again 2-10 s later."""
        ev.node = self._leader()
        if ev.node is None:
            ev.skipped = f"no etcd leader found within {LEADER_WAIT:.0f} s"
            return
        self._outage(ev, [ev.node], 2.0, 10.0)

    def _etcd_down(self, ev: Event) -> None:
        """kill -9 of all three etcd members, booted again 3-12 s later."""
        self._outage(ev, self.rng.sample(etcdlab.HOSTS, len(etcdlab.HOSTS)), 3.0, 12.0)

    def _part_primary_minority(self, ev: Event) -> None:
        """The primary and one etcd member (drawn) cut from the secondary and the other two
        members, for 3-12 s, then healed."""
        p, s = self.roles()
        if p is None:
            ev.skipped = "no primary"
            return
        s = s or next(n for n in NODES if n != p)
        ev.node, kept = p, self.rng.choice(etcdlab.HOSTS)
        hold = self.rng.uniform(3.0, 12.0)
        try:
            for a, b in minority_cuts(p, s, kept):
                control.cut(self.paths, a, b)
            ev.start = time.monotonic()       # once the peers' link is cut too: the writes before count for nothing
            time.sleep(hold)
        finally:
            control.heal(self.paths)
        others = [h for h in etcdlab.HOSTS if h != kept]
        ev.detail.append(f"{p} and {kept} cut from {s}, {', '.join(others)}; healed after {hold:.1f} s")
