"""Partial network faults of the campaign: a one-way loss, a heartbeat-only loss and a lossy link,
as nftables rules.

``lab partition`` cuts everything between two hosts, both ways. Real networks also fail halfway: a
switch port that drops one direction, a firewall change that blocks the heartbeat's UDP port while
replication (TCP) still flows, a flaky cable or NIC that drops some of the packets at random (this
kernel has no netem, so there is loss but no added delay). The rules live in the node's own
network namespace, in a table of their own (``inet hamirror_chaos``), so the lab's ``heal`` and
these never remove each other's.
"""

from __future__ import annotations

from hamirror.lab.naming import ADDRESSES, NODES, LabPaths
from hamirror.lab.shell import run

TABLE = "hamirror_chaos"
HEARTBEAT_PORT = 7401     # the lab's [heartbeat] port (nodeconfig.cluster_toml)


def _nft(paths: LabPaths, host: str, *args: str, input: str | None = None, check: bool = True):
    return run(["nsenter", f"--net={paths.netns_file(host)}", "--", "nft", *args], input=input, check=check)


def _install(paths: LabPaths, host: str, rules: list[str]) -> None:
    text = (f"table inet {TABLE} {{\n"
            "  chain input { type filter hook input priority 0; policy accept; }\n"
            "  chain output { type filter hook output priority 0; policy accept; }\n"
            "}\n" + "".join(f"add rule inet {TABLE} {r}\n" for r in rules))
    _nft(paths, host, "-f", "-", input=text)


def _peer_address(node: str) -> str:
    return ADDRESSES[next(n for n in NODES if n != node)]


def one_way(paths: LabPaths, sender: str, receiver: str) -> None:
    """Nothing from sender reaches receiver; the other direction still works."""
    _install(paths, sender, [f"output ip daddr {ADDRESSES[receiver]} drop"])


def heartbeat_only(paths: LabPaths) -> None:
    """The heartbeat's UDP port blocked between the nodes, both ways; replication still flows."""
    for node in NODES:
        peer = _peer_address(node)
        _install(paths, node, [f"output ip daddr {peer} udp dport {HEARTBEAT_PORT} drop",
                               f"input ip saddr {peer} udp dport {HEARTBEAT_PORT} drop"])


def lossy(paths: LabPaths, percent: int) -> None:
    """``percent`` % of the packets between the nodes dropped at random, each way on its own: TCP
    retransmits (the replication link stalls for a retransmission timeout now and then) and some
    heartbeats go missing, a run of them now and then."""
    if not 0 < percent < 100:
        raise ValueError(f"lossy: percent must be between 1 and 99, not {percent}")
    for node in NODES:
        _install(paths, node, [f"output ip daddr {_peer_address(node)} "
                               f"numgen random mod 100 < {percent} drop"])


def heal(paths: LabPaths) -> bool:
    """Remove this module's rules from both nodes; True if there were any."""
    found = False
    for node in NODES:
        listed = _nft(paths, node, "list", "tables", check=False)
        if f"inet {TABLE}" in listed.stdout:
            _nft(paths, node, "delete", "table", "inet", TABLE)
            found = True
    return found
