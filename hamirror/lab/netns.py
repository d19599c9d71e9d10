"""The lab's network: one namespace per host plus a switch namespace holding bridge ``br0``.

Built with the ``ip`` command rather than pyroute2: ``ip netns add`` is what creates the
``/run/netns/NAME`` files that ``nsenter --net`` and ``ip netns pids`` rely on, every step is one
command an operator can replay by hand, and pyroute2's namespace support (which forks helpers and
changed API between 0.7 and 0.9, both allowed by our dependency range) buys nothing here.

Safety: veth pairs are created inside the switch namespace with their far end moved straight into
the host's namespace, so no interface ever appears in the machine's own network namespace; no
namespace gets a default route, only the connected 198.18.0.0/24.
"""

from __future__ import annotations

import os

from hamirror.lab.naming import ADDRESSES, BRIDGE, SUBNET_PREFIX, SWITCH, LabPaths
from hamirror.lab.shell import LabError, run


def list_netns() -> list[str]:
    """Names of every network namespace known to iproute2."""
    result = run(["ip", "netns", "list"])
    return [line.split()[0] for line in result.stdout.splitlines() if line.strip()]


def lab_netns(paths: LabPaths) -> list[str]:
    """The namespaces of this lab that exist now (whatever lab.json says)."""
    return [name for name in list_netns() if paths.owns_netns(name)]


def exists(name: str) -> bool:
    return os.path.exists(f"/run/netns/{name}")


def _in(name: str, *cmd: str) -> list[str]:
    return ["ip", "-n", name, *cmd]


def create_switch(paths: LabPaths) -> None:
    """The switch namespace with the bridge all hosts plug into."""
    ns = paths.netns(SWITCH)
    run(["ip", "netns", "add", ns])
    run(_in(ns, "link", "set", "lo", "up"))
    run(_in(ns, "link", "add", BRIDGE, "type", "bridge"))
    run(_in(ns, "link", "set", BRIDGE, "up"))


def create_host(paths: LabPaths, host: str) -> None:
    """A host namespace wired to the switch by a veth pair; its end is ``eth0`` with its address."""
    ns, switch = paths.netns(host), paths.netns(SWITCH)
    port = f"p-{host}"
    run(["ip", "netns", "add", ns])
    run(_in(ns, "link", "set", "lo", "up"))
    run(_in(switch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns))
    run(_in(switch, "link", "set", port, "master", BRIDGE))
    run(_in(switch, "link", "set", port, "up"))
    run(_in(ns, "addr", "add", f"{ADDRESSES[host]}/{SUBNET_PREFIX}", "dev", "eth0"))
    run(_in(ns, "link", "set", "eth0", "up"))
    if has_default_route(ns):
        raise LabError(f"namespace {ns} has a default route; refusing to go on")


def has_default_route(ns: str) -> bool:
    """True if the namespace could send traffic anywhere beyond the lab subnet."""
    for family in ("-4", "-6"):
        if run(["ip", family, "-n", ns, "route", "show", "default"]).stdout.strip():
            return True
    return False


def addresses(ns: str) -> list[str]:
    """IPv4 addresses with prefix of every interface in the namespace."""
    out = run(["ip", "-n", ns, "-o", "-4", "addr", "show"], check=False).stdout
    return [line.split()[3] for line in out.splitlines() if len(line.split()) > 3]


def pids(ns: str) -> list[int]:
    """Processes whose network namespace is ns (``ip netns pids``)."""
    if not exists(ns):
        return []
    out = run(["ip", "netns", "pids", ns], check=False).stdout
    return [int(word) for word in out.split() if word.isdigit()]


def delete(ns: str) -> None:
    """Remove a namespace; its veth pairs go with it. Missing is fine (down is idempotent)."""
    if exists(ns) or ns in list_netns():
        run(["ip", "netns", "delete", ns])
