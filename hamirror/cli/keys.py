"""``hamirror keygen``: create this node's CURVE key pair."""

from __future__ import annotations

import argparse
import os

from hamirror.cli.common import FAILED, USAGE, CommandError, default_keys_dir
from hamirror.link import keys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("keygen", help="create this node's CURVE key pair for the replication link")
    parser.add_argument("--keys", default=default_keys_dir(), help="keys directory (default: %(default)s)")
    parser.add_argument("--name", default=None, help="key name (default: this host's name)")
    parser.add_argument("--force", action="store_true", help="replace an existing key pair of that name")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if os.path.exists(args.keys) and not os.path.isdir(args.keys):
        raise CommandError(f"{args.keys}: not a directory (--keys names the keys directory)", USAGE)
    try:
        public_file = keys.generate(args.keys, name=args.name, force=args.force)
    except keys.KeyError_ as exc:
        raise CommandError(str(exc)) from exc
    except OSError as exc:      # a file on the way to the folder, a read-only filesystem, not root
        code = USAGE if isinstance(exc, NotADirectoryError) else FAILED
        raise CommandError(f"{exc.filename or args.keys}: cannot write the key pair: {exc.strerror or exc}",
                           code) from exc
    print(f"public key: {public_file}")
    print("copy this public key into the peer's keys directory; the peer trusts every *.key found there")
    return 0
