"""Operator commands sent to the local agent: ``status``, ``start|stop|prim|second|swap|forcestop|restart``,
``maintenance on|off``, ``clear``; ``events`` and ``logs`` (:mod:`hamirror.cli.events`)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from hamirror.cli import events
from hamirror.cli.common import FAILED, TIMEOUT, UNREACHABLE, USAGE, CommandError, add_json, print_json
from hamirror.config import ConfigError, config_path, load_cluster

COMMANDS = {
    "start": "start MODULE on this node (it then waits for the peer and takes its role)",
    "stop": "stop MODULE on this node (a primary's secondary takes over)",
    "prim": "force this node primary for MODULE, even with data not known to be up to date",
    "second": "make this node secondary (on a primary: swap; after a split brain: discard local data)",
    "swap": "exchange primary and secondary, with no data loss",
    "forcestop": "stop MODULE at once: kill the application, no scripts, no flush",
    "restart": "restart the application in place (primary), or start a stopped module",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    status = subparsers.add_parser("status", help="state of every module on this node and its peer")
    status.add_argument("module", nargs="?", metavar="MODULE", help="only this module")
    add_json(status)
    status.add_argument("-c", "--config", default=None, help="cluster file (finds the agent's run_dir)")
    status.set_defaults(func=run_status)
    for name, text in COMMANDS.items():
        parser = subparsers.add_parser(name, help=text)
        parser.add_argument("module", metavar="MODULE")
        parser.add_argument("-c", "--config", default=None, help="cluster file (finds the agent's run_dir)")
        parser.add_argument("--timeout", type=float, default=600.0,
                            help="seconds to wait for the agent to carry it out (default: %(default)s)")
        if name in ("start", "stop", "restart"):
            parser.add_argument("--all", action="store_true",
                                help="on both nodes (the peer through its HTTP API; a stop ends the secondary first)")
        add_json(parser)
        parser.set_defaults(func=run_command, action_name=name)
    maintenance = subparsers.add_parser(
        "maintenance", help="suspend (on) or resume (off) checkers and automatic failover of MODULE on both nodes; "
                            "the application is left alone, operator commands still work")
    maintenance.add_argument("switch", choices=("on", "off"))
    maintenance.add_argument("module", metavar="MODULE")
    maintenance.add_argument("-c", "--config", default=None, help="cluster file (finds the agent's run_dir)")
    add_json(maintenance)
    maintenance.set_defaults(func=run_setting)
    clear = subparsers.add_parser("clear", help="forget MODULE's failover and restart counts: failovers held "
                                                "back by flap damping are allowed again")
    clear.add_argument("module", metavar="MODULE")
    clear.add_argument("-c", "--config", default=None, help="cluster file (finds the agent's run_dir)")
    add_json(clear)
    clear.set_defaults(func=run_setting, switch=None)
    node = subparsers.add_parser("node", help="standby: move every module off this node and keep it off; "
                                              "online: allow the service here again")
    node.add_argument("switch", choices=("standby", "online"))
    node.add_argument("-c", "--config", default=None, help="cluster file (finds the agent's run_dir)")
    node.add_argument("--timeout", type=float, default=600.0,
                      help="seconds to wait for the swaps (default: %(default)s)")
    add_json(node)
    node.set_defaults(func=run_node)
    events.register(subparsers)


ROOT_ONLY = "the agent's control socket is root only: run this command as root (or with sudo)"


def _for_this_user(text: str) -> str:
    """``text``, plus the likely reason when the caller is not root (a bare EACCES says nothing)."""
    return text if os.geteuid() == 0 else f"{text} ({ROOT_ONLY})"


def _socket(args: argparse.Namespace) -> str:
    from hamirror.agent.control import socket_path
    try:
        return socket_path(load_cluster(config_path(args.config)).run_dir)
    except ConfigError as exc:
        raise CommandError(_for_this_user(str(exc)), USAGE) from exc


def _ask(path: str, message: dict, timeout: float) -> dict:
    from hamirror.agent.control import AgentNotRunning, request
    try:
        return request(path, message, timeout)
    except AgentNotRunning as exc:
        raise CommandError(_for_this_user(str(exc)), UNREACHABLE) from exc
    except PermissionError as exc:
        raise CommandError(f"control socket {path}: permission denied; {ROOT_ONLY}", UNREACHABLE) from exc
    except TimeoutError as exc:
        raise CommandError(f"no answer from the agent within {timeout:g} s", TIMEOUT) from exc
    except (OSError, ValueError) as exc:
        raise CommandError(f"control socket {path}: {exc}", UNREACHABLE) from exc


def refusal_code(answer: dict) -> int:
    """The exit code of a refused request: an unknown module is a usage error, like a typo."""
    return USAGE if answer.get("unknown_module") else FAILED


def run_status(args: argparse.Namespace) -> int:
    from hamirror.agent.status import render_table
    answer = _ask(_socket(args), {"cmd": "status"}, 10.0)
    if not answer.get("ok"):
        raise CommandError(answer.get("error") or "the agent refused the status request")
    doc = answer["status"]
    if args.module:
        doc["modules"] = [m for m in doc["modules"] if m["name"] == args.module]
        if not doc["modules"]:
            raise CommandError(f"no module {args.module!r} on this node", USAGE)
    print(json.dumps(doc, indent=1) if args.json else render_table(doc))
    return 0


def run_command(args: argparse.Namespace) -> int:
    # `prim` on stale data: the agent's own warning says that data may be lost (printed below).
    request = {"cmd": "module", "module": args.module, "action": args.action_name}
    if getattr(args, "all", False):
        request["all"] = True
    answer = _ask(_socket(args), request, args.timeout)
    for warning in answer.get("warnings") or []:
        print(f"warning: {warning}", file=sys.stderr)
    nodes = answer.get("nodes") if isinstance(answer.get("nodes"), list) else None
    if args.json:
        print_json({"module": args.module, "action": args.action_name, "ok": bool(answer.get("ok")),
                    "state": answer.get("state"), "error": answer.get("error"),
                    "warnings": answer.get("warnings") or [], **({"nodes": nodes} if nodes is not None else {})})
    if not answer.get("ok"):
        reason = answer.get("error") or "; ".join(answer.get("warnings") or []) or "refused"
        raise CommandError(f"{args.action_name} {args.module}: {reason}", refusal_code(answer))
    if not args.json:
        for part in nodes or [answer]:
            print(f"{args.module}: {part.get('state')}" + (f" on {part['node']}" if part.get("node") else ""))
    return 0


def run_node(args: argparse.Namespace) -> int:
    """``node standby|online``: one line per module, exit 1 if a module could not be moved."""
    answer = _ask(_socket(args), {"cmd": "node", "action": args.switch, "timeout": args.timeout},
                  args.timeout + 30)
    modules = answer.get("modules") or {}
    if args.json:
        print_json({"standby": answer.get("standby"), "ok": bool(answer.get("ok")), "modules": modules,
                    "error": answer.get("error")})
    else:
        print(f"this node is {'in standby' if answer.get('standby') else 'online'}" if "standby" in answer else "")
        for name, m in modules.items():
            note = "moved to the peer" if m.get("moved") else (f"not moved: {m['error']}" if m.get("error") else "")
            print(f"  {name}: {m.get('state')}" + (f" ({note})" if note else ""))
    if not answer.get("ok"):
        raise CommandError(f"node {args.switch}: {answer.get('error') or 'refused'}")
    return 0


def run_setting(args: argparse.Namespace) -> int:
    """``maintenance on|off`` and ``clear``: settings of the module, applied at once."""
    message = ({"cmd": "clear", "module": args.module} if args.switch is None
               else {"cmd": "maintenance", "module": args.module, "on": args.switch == "on"})
    answer = _ask(_socket(args), message, 10.0)
    if not answer.get("ok"):
        raise CommandError(answer.get("error") or "refused", refusal_code(answer))
    if args.json:
        print_json({"module": args.module, "state": answer.get("state"), "maintenance": answer.get("maintenance"),
                    "cleared": args.switch is None})
    elif args.switch is None:
        print(f"{args.module}: {answer.get('state')}, failover and restart counts cleared")
    else:
        print(f"{args.module}: {answer.get('state')}, maintenance {'on' if answer.get('maintenance') else 'off'}")
    return 0
