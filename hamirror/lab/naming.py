"""Names and paths of one lab, all derived from its root directory.

Everything a lab creates is named from the root alone (namespace prefix, node directories, mount
namespace files), so ``lab down`` can find and remove it even when ``lab.json`` is missing and so
several labs with different roots never touch each other's namespaces.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

DEFAULT_ROOT = "/tmp/hamirror-lab"
NODES = ("node1", "node2")
CLIENT = "client"
WITNESS = "witness"
ETCD_HOSTS = ("etcd1", "etcd2", "etcd3")   # with --etcd: a three-member etcd cluster, one host each
ETCD_CLIENT_PORT, ETCD_PEER_PORT = 2379, 2380
SWITCH = "switch"
BRIDGE = "br0"
SUBNET_PREFIX = 24
ADDRESSES = {"node1": "198.18.0.1", "node2": "198.18.0.2", CLIENT: "198.18.0.200", WITNESS: "198.18.0.254",
             "etcd1": "198.18.0.251", "etcd2": "198.18.0.252", "etcd3": "198.18.0.253"}
VIP = "198.18.0.100"
WITNESS_PORT = 7402
# Inside a node's mount namespace, ROOT/NODE/<key> is bound over <value>: the same configured path
# means a different disk on each node.
NODE_MOUNTS = {"etc": "/etc/hamirror", "state": "/var/lib/hamirror", "run": "/run/hamirror", "srv": "/srv"}
CONFIG_PATH = "/etc/hamirror/hamirror.toml"


def resolve_root(root: str | None) -> str:
    """The lab root: ``--root``, else ``$HAMIRROR_LAB``, else the default; always absolute."""
    chosen = root or os.environ.get("HAMIRROR_LAB") or DEFAULT_ROOT
    path = os.path.abspath(chosen)
    if path == "/":
        raise ValueError("the lab root cannot be /")
    return path


def prefix_for(root: str) -> str:
    """``hm`` + 6 hex chars of the root's hash: short enough for namespace and interface names."""
    return "hm" + hashlib.sha256(os.path.abspath(root).encode()).hexdigest()[:6]


def hosts_for(witness: bool, etcd: bool = False) -> tuple[str, ...]:
    """The hosts of a lab in creation order (the switch is not a host)."""
    return NODES + (CLIENT,) + ((WITNESS,) if witness else ()) + (ETCD_HOSTS if etcd else ())


@dataclass(frozen=True)
class LabPaths:
    """Where one lab keeps its namespaces, files and logs."""

    root: str

    @property
    def prefix(self) -> str:
        return prefix_for(self.root)

    @property
    def state_file(self) -> str:
        return os.path.join(self.root, "lab.json")

    @property
    def ns_dir(self) -> str:
        """Holds the mount namespace files; bind-mounted on itself with private propagation."""
        return os.path.join(self.root, "ns")

    def netns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def netns_file(self, host: str) -> str:
        return f"/run/netns/{self.netns(host)}"

    def mntns_file(self, node: str) -> str:
        return os.path.join(self.ns_dir, f"{node}.mnt")

    def node_dir(self, node: str, sub: str | None = None) -> str:
        base = os.path.join(self.root, node)
        return os.path.join(base, sub) if sub else base

    def log_file(self, host: str, name: str) -> str:
        return os.path.join(self.node_dir(host, "log"), f"{name}.log")

    def owns_netns(self, name: str) -> bool:
        return name.startswith(self.prefix + "-")
