"""``hamirror config check``: validate the cluster file and every module before the agent uses them."""

from __future__ import annotations

import argparse
import sys

from hamirror.config.loader import config_path, validate


AVAILABILITY_FIRST = (
    "{path}: warning: neither [quorum] witness nor [fence] script: availability first. A node that "
    "hears nothing from its peer for a whole heartbeat timeout acts alone, so a network partition "
    "between the two nodes makes two primaries (a split brain to resolve by hand, data written on one "
    "side set aside). Freezes, crashes and power losses stay safe. See docs/reliability.md, \"Fencing\".")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("config", help="inspect the configuration")
    actions = parser.add_subparsers(dest="config_command", metavar="ACTION")
    check = actions.add_parser("check", help="validate the cluster file and every module; list every problem")
    check.add_argument("-c", "--config", default=None,
                       help="cluster file (default: $HAMIRROR_CONFIG, else /etc/hamirror/hamirror.toml)")
    check.set_defaults(func=run_check)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def run_check(args: argparse.Namespace) -> int:
    from hamirror.cli.preflight import check_secrets
    result = validate(config_path(args.config))
    errors = list(result.errors) + (check_secrets(result.cluster) if result.cluster is not None else [])
    if errors:
        for error in errors:
            print(error, file=sys.stderr)
        return 1
    assert result.cluster is not None
    if result.cluster.availability_first:
        print(AVAILABILITY_FIRST.format(path=result.cluster.path), file=sys.stderr)
    names = ", ".join(module.name for module in result.modules)
    print(f"OK: cluster {result.cluster.name}, {len(result.modules)} module(s)" + (f": {names}" if names else ""))
    return 0
