"""The lab: a real two-node cluster on one machine, in network and mount namespaces (docs/lab.md).

One job per module: ``naming`` (root -> prefix and paths), ``netns`` (namespaces, bridge, veth),
``mountns`` (per-node mount namespaces), ``process`` (exec/start/kill inside hosts), ``partition``
(nftables cuts), ``nodeconfig`` (each node's /etc/hamirror), ``agent`` (start and wait for
PRIM/SECOND), ``state`` (lab.json), ``control`` (the operations), ``report`` (status),
``testing`` (a lab for integration tests that is always removed).
"""
