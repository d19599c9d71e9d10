"""Network partitions between two lab hosts, as nftables drop rules inside their own namespaces.

Each side drops what comes from and goes to the other side's address, in a table of its own
(``inet hamirror_lab``) so ``heal`` removes exactly what ``partition`` added and nothing else.
Rules live only in the lab's namespaces; the machine's own firewall is never touched.
"""

from __future__ import annotations

from hamirror.lab.naming import ADDRESSES, LabPaths
from hamirror.lab.shell import LabError, run

TABLE = "hamirror_lab"


def _ruleset(peer_address: str) -> str:
    return (
        f"table inet {TABLE} {{\n"
        "  chain input { type filter hook input priority 0; policy accept; }\n"
        "  chain output { type filter hook output priority 0; policy accept; }\n"
        "}\n"
        f"add rule inet {TABLE} input ip saddr {peer_address} drop\n"
        f"add rule inet {TABLE} output ip daddr {peer_address} drop\n"
    )


def _nft(paths: LabPaths, host: str, *args: str, input: str | None = None, check: bool = True):
    return run(["nsenter", f"--net={paths.netns_file(host)}", "--", "nft", *args], input=input, check=check)


def cut(paths: LabPaths, hosts: tuple[str, ...], a: str, b: str) -> None:
    """Drop all traffic between a and b (both directions, on both sides)."""
    for name in (a, b):
        if name not in hosts:
            raise LabError(f"unknown host {name!r}; hosts are {', '.join(hosts)}")
    if a == b:
        raise LabError("a partition needs two different hosts")
    _nft(paths, a, "-f", "-", input=_ruleset(ADDRESSES[b]))
    _nft(paths, b, "-f", "-", input=_ruleset(ADDRESSES[a]))


def heal(paths: LabPaths, hosts: tuple[str, ...]) -> None:
    """Remove every partition rule the lab added."""
    for host in hosts:
        if is_cut(paths, host):
            _nft(paths, host, "delete", "table", "inet", TABLE)


def is_cut(paths: LabPaths, host: str) -> bool:
    """True if host has partition rules in place."""
    result = _nft(paths, host, "list", "tables", check=False)
    return f"inet {TABLE}" in result.stdout
