"""``hamirror config check``: validate the cluster file and every module before the agent uses them."""

from __future__ import annotations

import argparse
import sys

from hamirror.cli.common import OK, USAGE, add_json, print_json
from hamirror.config.errors import ConfigError
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
    add_json(check)
    check.set_defaults(func=run_check)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def problems(errors: list[ConfigError]) -> list[dict]:
    """Each problem as ``{"file", "key", "problem", "text"}`` (``text``: the line the human output prints)."""
    return [{"file": e.file, "key": e.key, "problem": e.problem, "text": str(e)} for e in errors]


def run_check(args: argparse.Namespace) -> int:
    from hamirror.cli.preflight import check_secrets
    result = validate(config_path(args.config))
    errors = list(result.errors) + (check_secrets(result.cluster) if result.cluster is not None else [])
    if args.json:
        warnings = ([AVAILABILITY_FIRST.format(path=result.cluster.path)]
                    if result.cluster is not None and result.cluster.availability_first and not errors else [])
        print_json({"ok": not errors, "cluster": result.cluster.name if result.cluster else None,
                    "modules": [module.name for module in result.modules], "errors": problems(errors),
                    "warnings": warnings})
        return USAGE if errors else OK
    if errors:
        for error in errors:
            print(error, file=sys.stderr)
        return USAGE
    assert result.cluster is not None
    if result.cluster.availability_first:
        print(AVAILABILITY_FIRST.format(path=result.cluster.path), file=sys.stderr)
    names = ", ".join(module.name for module in result.modules)
    print(f"OK: cluster {result.cluster.name}, {len(result.modules)} module(s)" + (f": {names}" if names else ""))
    return 0
