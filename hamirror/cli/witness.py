"""``hamirror witness --bind HOST:PORT [-c CONFIG] [--timeout S] [--state FILE]``: run the quorum witness
in the foreground.

It reads the cluster name, the two node names and ``cluster_key_file`` from a cluster file (the
nodes' own file works; ``cluster.node`` is not used). See docs/cluster.md, "Witness".
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os

from hamirror.cli.common import USAGE, CommandError
from hamirror.config import ConfigError, config_path
from hamirror.config.cluster import ClusterConfig
from hamirror.config.loader import _cluster

NOT_NEEDED = ("cluster.modules_dir", "cluster.node")   # a witness has no modules and is no node


def load_witness_cluster(path: str) -> ClusterConfig:
    """The cluster file as the witness needs it: every check except those of node-only paths."""
    sink: list[ConfigError] = []
    cluster = _cluster(path, sink)
    errors = [e for e in sink if e.key not in NOT_NEEDED]
    if errors or cluster is None:
        raise errors[0] if errors else ConfigError(path, None, "cannot be read")
    return cluster


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("witness", help="run the quorum witness (a third machine) in the foreground")
    parser.add_argument("--bind", required=True, metavar="HOST:PORT", help="UDP address to listen on, e.g. 0.0.0.0:7402")
    parser.add_argument("-c", "--config", default=None,
                        help="cluster file (default: $HAMIRROR_CONFIG, else /etc/hamirror/hamirror.toml)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="lease in seconds (default: five times the cluster's heartbeat timeout)")
    parser.add_argument("--state", default=None, metavar="FILE",
                        help="where the last lease holder is remembered across restarts "
                             "(default: witness-lease.json in the cluster's state_dir)")
    parser.set_defaults(func=run_witness)


def run_witness(args: argparse.Namespace) -> int:
    from hamirror.cluster.heartbeat import load_cluster_key
    from hamirror.cluster.quorum import MAX_LEASE
    from hamirror.cluster.witness_server import serve_witness

    host, sep, port = args.bind.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise CommandError(f"--bind must be HOST:PORT (got {args.bind!r})", USAGE)
    try:
        cluster = load_witness_cluster(config_path(args.config))
        key = load_cluster_key(cluster.cluster_key_file)
    except ConfigError as exc:
        raise CommandError(str(exc), USAGE) from exc
    except (OSError, ValueError) as exc:
        raise CommandError(f"cannot start the witness: {exc}") from exc
    timeout = args.timeout if args.timeout is not None else 5 * cluster.heartbeat.timeout
    if not 0 < timeout <= MAX_LEASE:
        raise CommandError(f"--timeout must be positive and at most {MAX_LEASE:.0f} s", USAGE)
    if logging.getLogger().level > logging.INFO:
        logging.getLogger().setLevel(logging.INFO)
    state = args.state or os.path.join(cluster.state_dir, "witness-lease.json")
    try:
        asyncio.run(serve_witness((host.strip("[]"), int(port)), cluster.name, key, timeout,
                                  [node.name for node in cluster.nodes], state))
    except (OSError, ValueError) as exc:
        raise CommandError(f"witness: {exc}") from exc
    return 0
