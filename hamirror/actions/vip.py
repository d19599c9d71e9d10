"""The virtual IP: add it to / remove it from the configured interface, announce it with ARP.

Idempotent both ways (adding an address that is there, or removing one that is gone, succeeds),
because the agent re-runs a failed action sequence from the failed step and re-attaches after a
restart. After adding, a few gratuitous ARP packets tell the clients' and switches' caches that
the address moved here, so clients do not wait for their ARP entry to expire after a failover. The
first is sent before ``add`` returns, the repeats from a thread (a failover or a swap does not
wait for them), and none is sent once the address was removed again.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from pyroute2 import IPRoute, NetNS
from pyroute2.netlink.exceptions import NetlinkError

from hamirror.actions import leases

log = logging.getLogger(__name__)

ETH_P_ARP = 0x0806
BROADCAST = b"\xff" * 6


class VipError(Exception):
    """The VIP could not be added or removed; the message names the interface and address."""


@contextmanager
def _netlink(netns: str | None) -> Iterator[IPRoute]:
    """An rtnetlink socket in this network namespace, or in the named one (tests)."""
    ipr = NetNS(netns) if netns else IPRoute()
    try:
        yield ipr
    finally:
        ipr.close()


def _index(ipr: IPRoute, interface: str) -> int:
    found = ipr.link_lookup(ifname=interface)
    if not found:
        raise VipError(f"interface {interface!r} does not exist on this node")
    return found[0]


class Vip:
    """One module's VIP (``address`` with prefix, e.g. ``198.18.0.100/24``) on ``interface``."""

    def __init__(self, address: str, interface: str, netns: str | None = None,
                 arp_count: int = 3, arp_interval: float = 0.1, lifetime: int | None = None) -> None:
        iface = ipaddress.ip_interface(address)
        self.ip, self.prefixlen, self.interface = str(iface.ip), iface.network.prefixlen, interface
        self.ipv4 = iface.version == 4
        self.netns, self.arp_count, self.arp_interval = netns, arp_count, arp_interval
        self._lock = threading.Lock()    # orders the announcements against add and remove
        self._turn = 0                   # bumped by each add and remove: older repeats stop
        # A lease on the address, kept by the kernel: unless renew() runs within ``lifetime``
        # seconds the kernel removes it, so a frozen node stops holding the VIP by itself.
        self.lifetime = lifetime

    def present(self) -> bool:
        """Whether the address is on the interface now."""
        with _netlink(self.netns) as ipr:
            index = _index(ipr, self.interface)
            return any(a.get("IFA_ADDRESS") == self.ip for a in ipr.get_addr(index=index))

    def add(self) -> None:
        """Add the address (no error if already there; its lease renewed), then announce it."""
        with self._lock:
            self._turn += 1
            with _netlink(self.netns) as ipr:
                index = _index(ipr, self.interface)
                try:
                    if self.lifetime is None:
                        ipr.addr("add", index=index, address=self.ip, prefixlen=self.prefixlen)
                    else:
                        self._replace(ipr, index)
                    log.info("VIP %s/%d added on %s", self.ip, self.prefixlen, self.interface)
                except NetlinkError as exc:
                    if exc.code != errno.EEXIST:
                        raise VipError(f"cannot add {self.ip}/{self.prefixlen} on {self.interface}: {exc}") from exc
                mac = ipr.get_links(index)[0].get("IFLA_ADDRESS")
            if self.ipv4 and mac:
                try:
                    self.announce(index, mac)
                except OSError as exc:       # the address is up; a lost announce only delays clients
                    log.warning("gratuitous ARP for %s on %s failed: %s", self.ip, self.interface, exc)

    def renew(self) -> bool:
        """Extend the lease by ``lifetime``; False when the kernel had dropped the address (the
        lease lapsed: this node was frozen). It is *not* added back here: only a decision does."""
        result = renew_all([self])[0]
        if isinstance(result, Exception):
            raise result
        return result

    def _replace(self, ipr: IPRoute, index: int) -> None:
        ipr.addr("replace", index=index, address=self.ip, prefixlen=self.prefixlen,
                 valid_lft=self.lifetime, preferred_lft=self.lifetime)

    def remove(self) -> None:
        """Remove the address (no error if it is not there, or the interface is gone); no
        announcement of an earlier ``add`` is sent after this returns."""
        with self._lock, _netlink(self.netns) as ipr:
            self._turn += 1
            found = ipr.link_lookup(ifname=self.interface)
            if not found:
                return
            try:
                ipr.addr("del", index=found[0], address=self.ip, prefixlen=self.prefixlen)
                log.info("VIP %s/%d removed from %s", self.ip, self.prefixlen, self.interface)
            except NetlinkError as exc:
                if exc.code not in (errno.EADDRNOTAVAIL, errno.ENODEV, errno.ENOENT):
                    raise VipError(f"cannot remove {self.ip} from {self.interface}: {exc}") from exc

    def announce(self, index: int, mac: str) -> None:
        """Send gratuitous ARP requests (sender = target = the VIP) to the broadcast address: the
        first now, the others every ``arp_interval`` from a thread, while this ``add`` is the last
        (called by ``add``, under its lock)."""
        frame, turn = arp_announce(mac, self.ip), self._turn
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
        try:
            sock.bind((self.interface, ETH_P_ARP))
            sock.send(frame)
        except OSError:
            sock.close()
            raise
        if self.arp_count <= 1:
            sock.close()
            return
        threading.Thread(target=self._repeat, args=(sock, frame, turn), name="vip-arp", daemon=True).start()

    def _repeat(self, sock: socket.socket, frame: bytes, turn: int) -> None:
        with sock:
            for _ in range(self.arp_count - 1):
                time.sleep(self.arp_interval)
                with self._lock:
                    if self._turn != turn:
                        return
                    try:
                        sock.send(frame)
                    except OSError as exc:
                        log.debug("gratuitous ARP for %s not repeated: %s", self.ip, exc)
                        return


def renew_all(vips: list[Vip]) -> list[bool | Exception]:
    """:meth:`Vip.renew` for many VIPs, each result in order (a failure as its exception): one
    netlink exchange per namespace for them all (in this one, :mod:`leases`). Renewed one by one,
    50 VIPs cost 50 sockets and 50 lists of 50 addresses every heartbeat interval (0.4 s of CPU
    per round, more than the interval on a loaded node: leases lapsed)."""
    results: list[bool | Exception] = [True] * len(vips)
    groups: dict[str | None, list[int]] = {}
    for i, vip in enumerate(vips):
        if vip.lifetime is not None:
            groups.setdefault(vip.netns, []).append(i)
    if None in groups:                      # this namespace: one raw exchange (actions/leases.py)
        _renew_here(vips, groups.pop(None), results)
    for netns, members in groups.items():
        try:
            with _netlink(netns) as ipr:
                present: dict[str, tuple[int, set[str]]] = {}
                for i in members:
                    vip = vips[i]
                    try:
                        if vip.interface not in present:
                            index = _index(ipr, vip.interface)
                            present[vip.interface] = (index, {a.get("IFA_ADDRESS") for a in ipr.get_addr(index=index)})
                        index, addresses = present[vip.interface]
                        if vip.ip not in addresses:
                            results[i] = False
                            continue
                        vip._replace(ipr, index)
                    except NetlinkError as exc:
                        results[i] = VipError(f"cannot renew {vip.ip}/{vip.prefixlen} on {vip.interface}: {exc}")
                    except VipError as exc:
                        results[i] = exc
        except OSError as exc:
            for i in members:
                results[i] = exc
    return results


def _renew_here(vips: list[Vip], members: list[int], results: list[bool | Exception]) -> None:
    """:func:`renew_all` for the VIPs of this network namespace, through :func:`leases.renew`."""
    wanted: list[tuple[str, int, str, int, int]] = []
    asked: list[int] = []
    for i in members:
        vip = vips[i]
        try:
            index = socket.if_nametoindex(vip.interface)
        except OSError:
            results[i] = VipError(f"interface {vip.interface!r} does not exist on this node")
            continue
        wanted.append((vip.interface, index, vip.ip, vip.prefixlen, int(vip.lifetime or 0)))
        asked.append(i)
    try:
        renewed = leases.renew(wanted)
    except OSError as exc:
        renewed = [exc] * len(wanted)
    for i, result in zip(asked, renewed):
        results[i] = VipError(str(result)) if isinstance(result, Exception) else result


def arp_announce(mac: str, ip: str) -> bytes:
    """An Ethernet frame carrying a gratuitous ARP request for ``ip`` from ``mac`` (pure)."""
    hw = bytes.fromhex(mac.replace(":", ""))
    addr = socket.inet_aton(ip)
    ether = BROADCAST + hw + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + hw + addr + b"\x00" * 6 + addr
    return ether + arp
