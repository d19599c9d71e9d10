"""Entry point of the ``hamirror`` command: builds the parser from the command-group modules."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from hamirror import __version__
from hamirror.cli.common import INTERRUPTED, USAGE, CommandError

# Each module named here exposes ``register(subparsers)`` and sets ``func`` on its parsers.
# Add a command group by adding its module here.
COMMAND_GROUPS = [
    "hamirror.cli.config",
    "hamirror.cli.keys",
    "hamirror.cli.mirror",
    "hamirror.cli.lab",
    "hamirror.cli.agent",
    "hamirror.cli.ops",
    "hamirror.cli.reload",
    "hamirror.cli.verify",
    "hamirror.cli.witness",
    "hamirror.cli.module",
    "hamirror.cli.install",
    "hamirror.cli.report",
    "hamirror.cli.reference",
]


# Each command loads its own group only: the data path's daemons (``mirror mount``, ``mirror
# receive``) start on the critical path of a failover and a swap (about 0.1 s less to start), and
# ``status``, ``lab exec`` and the other short commands that scripts and the lab's tests run by the
# thousand start in ~0.1 s instead of ~0.3 s. A word not here (``--help``, a typo) loads them all.
GROUP_OF = {
    "config": "hamirror.cli.config", "keygen": "hamirror.cli.keys", "mirror": "hamirror.cli.mirror",
    "lab": "hamirror.cli.lab", "agent": "hamirror.cli.agent", "reload": "hamirror.cli.reload",
    "verify": "hamirror.cli.verify", "witness": "hamirror.cli.witness", "module": "hamirror.cli.module",
    "install": "hamirror.cli.install", "report": "hamirror.cli.report",
    "completion": "hamirror.cli.reference", "manpage": "hamirror.cli.reference",
    **dict.fromkeys(["status", "start", "stop", "prim", "second", "swap", "forcestop", "restart",
                     "maintenance", "clear", "node", "events", "logs"], "hamirror.cli.ops"),
}


def build_parser(groups: list[str] = COMMAND_GROUPS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hamirror",
        description="Two-node high-availability cluster with synchronous directory replication.",
    )
    parser.add_argument("--version", action="version", version=f"hamirror {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-c", "--config", dest="global_config", default=None, metavar="FILE",
                        help="cluster file for the command (the same as the command's own -c)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in groups:
        importlib.import_module(name).register(subparsers)
    return parser


_PREPARED: dict[tuple[str, ...], argparse.ArgumentParser] = {}


def prepare(groups: list[str]) -> None:
    """Build the parser of ``groups`` now, for :func:`main` to use: the spawner does so before it
    forks, so its children share the parser instead of each building its own (a child's
    allocations land in pages it shares with the spawner, each then copied: ~1.7 MB of a forked
    mount's own pages for a parser built there; docs/performance.md, "Idle memory")."""
    _PREPARED[tuple(groups)] = build_parser(groups)


def _apply_global_config(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``hamirror -c FILE COMMAND``: the command's own ``-c`` unless it was given too (then both must
    name the same file); a command that reads no cluster file refuses it (exit 2)."""
    if args.global_config is None or getattr(args, "func", None) is None:
        return
    if not hasattr(args, "config"):
        parser.error(f"-c: '{args.command}' reads no cluster file")
    if args.config is None:
        args.config = args.global_config
    elif args.config != args.global_config:
        parser.error(f"-c given twice with different files: {args.global_config} and {args.config}")


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    groups = [GROUP_OF[words[0]]] if words and words[0] in GROUP_OF else COMMAND_GROUPS
    parser = _PREPARED.get(tuple(groups)) or build_parser(groups)
    args = parser.parse_args(argv)
    _apply_global_config(parser, args)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return USAGE
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        return INTERRUPTED
    except CommandError as exc:
        print(f"hamirror: {exc}", file=sys.stderr)
        return exc.exit_code

