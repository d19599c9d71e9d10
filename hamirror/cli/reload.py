"""``hamirror reload``: the local agent reads its configuration again and applies what it can live.

The same as ``systemctl reload hamirror`` (the unit's ExecReload) and as SIGHUP to the agent,
but it waits for the outcome and reports it (hamirror/agent/reload.py says what applies live).
"""

from __future__ import annotations

import argparse
import sys

from hamirror.cli.common import FAILED, OK, USAGE, add_json, print_json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "reload", help="make the local agent read its configuration again: check it, then add and remove "
                       "modules and apply VIPs, checkers and timeouts live; say what needs a restart")
    parser.add_argument("-c", "--config", default=None, help="cluster file (finds the agent's run_dir; the "
                        "agent reads the file it was started with)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds to wait for the agent (a removed module's stop included; default: %(default)s)")
    add_json(parser)
    parser.set_defaults(func=run_reload)


def reload_agent(config: str | None, timeout: float, moved: dict[str, str] | None = None) -> dict:
    """Ask the agent to reload; its report (CommandError when it cannot be asked). ``moved``: where
    ``module remove`` put a module's folder (its stop scripts)."""
    from hamirror.cli.ops import _ask, _socket
    return _ask(_socket(argparse.Namespace(config=config)), {"cmd": "reload", **({"moved": moved} if moved else {})},
                timeout)


def exit_code(report: dict) -> int:
    """2: the configuration was refused; 1: a module could not be added, removed or changed; else 0."""
    if report.get("refused"):
        return USAGE
    return OK if report.get("ok") else FAILED


def print_report(report: dict) -> None:
    """The human form: problems and failures on stderr, what was done on stdout."""
    if report.get("refused"):
        for error in report.get("errors") or []:
            print(error.get("text"), file=sys.stderr)
        print("hamirror: reload refused: the agent keeps running its current configuration", file=sys.stderr)
        return
    if report.get("error") and "added" not in report:       # the agent's own refusal of the request
        print(f"hamirror: reload: {report['error']}", file=sys.stderr)
        return
    done = [f"{what}: {', '.join(names)}" for what, names in
            (("added", report.get("added")), ("removed", report.get("removed"))) if names]
    done += [f"changed: {name} ({', '.join(keys)})" for name, keys in (report.get("changed") or {}).items()]
    for item in report.get("not_applied") or []:
        print(f"not applied: {item['text']}", file=sys.stderr)
    for item in report.get("failed") or []:
        print(f"failed: {item['module']}: {item['error']}", file=sys.stderr)
    print("reloaded: " + ("; ".join(done) if done else "nothing to apply"))


def run_reload(args: argparse.Namespace) -> int:
    report = reload_agent(args.config, args.timeout)
    if args.json:
        print_json(report)
    else:
        print_report(report)
    return exit_code(report)
