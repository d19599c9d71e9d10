"""``hamirror keygen``: create this node's CURVE key pair."""

from __future__ import annotations

import argparse

from hamirror.cli.common import CommandError, default_keys_dir
from hamirror.link import keys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("keygen", help="create this node's CURVE key pair for the replication link")
    parser.add_argument("--keys", default=default_keys_dir(), help="keys directory (default: %(default)s)")
    parser.add_argument("--name", default=None, help="key name (default: this host's name)")
    parser.add_argument("--force", action="store_true", help="replace an existing key pair of that name")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        public_file = keys.generate(args.keys, name=args.name, force=args.force)
    except keys.KeyError_ as exc:
        raise CommandError(str(exc)) from exc
    print(f"public key: {public_file}")
    print("copy this public key into the peer's keys directory; the peer trusts every *.key found there")
    return 0
