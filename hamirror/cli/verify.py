"""``hamirror verify MODULE [--repair] [--json]``: compare both copies of a live mirror.

Exit status: 0 the copies are identical (or ``--repair`` made them so, verified again); 1 the
verify could not run (refused, failed); 2 no such module; 3 differences were found (and, with ``--repair``, remain);
4 and 5 as for every command (``hamirror.cli.common``).
"""

from __future__ import annotations

import argparse
import json
import sys

from hamirror.cli.common import DIFFERENT, CommandError
from hamirror.cli.ops import _ask, _socket, refusal_code


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "verify", help="compare both copies of MODULE while it runs (block checksums); --repair resyncs what differs")
    parser.add_argument("module", metavar="MODULE")
    parser.add_argument("--repair", action="store_true",
                        help="resync exactly the out-of-sync ranges (ordered with live writes), then verify them again")
    parser.add_argument("--json", action="store_true", help="machine-readable output (every range)")
    parser.add_argument("-c", "--config", default=None, help="cluster file (finds the agent's run_dir)")
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="seconds to wait for the verify to end (default: %(default)s)")
    parser.set_defaults(func=run_verify)


def render(module: str, outcome: dict) -> str:
    """The human report: one line per difference, then the verdict."""
    from hamirror.agent.verify import describe

    lines = []
    for d in outcome["differences"]:
        where = f"{d['dir']}/{d['path']}" if d.get("dir") else d["path"]
        if d["kind"] == "content":
            lines.append(f"  {where}: content differs at offset {d['offset']}, {d['length']} bytes")
        else:
            lines.append(f"  {where}: {d['kind']}" + (f" ({d['detail']})" if d.get("detail") else ""))
    more = outcome["difference_count"] - len(outcome["differences"])
    if more > 0:
        lines.append(f"  ... and {more} more (counted, not listed)")
    return "\n".join([f"{module}: {describe(outcome)}", *lines])


def run_verify(args: argparse.Namespace) -> int:
    answer = _ask(_socket(args), {"cmd": "verify", "module": args.module, "repair": args.repair,
                                  "timeout": args.timeout}, args.timeout + 30)
    outcome = answer.get("verify")
    if not isinstance(outcome, dict):
        raise CommandError(f"verify {args.module}: {answer.get('error') or 'refused'}", refusal_code(answer))
    print(json.dumps(outcome, indent=1) if args.json else render(args.module, outcome))
    if outcome["result"] == "failed":
        print(f"hamirror: verify {args.module} failed: {outcome.get('error')}", file=sys.stderr)
        return 1
    left = outcome["remaining_count"]
    if left:
        print(f"hamirror: {args.module}: the two copies differ ({left} difference(s), "
              f"{outcome['remaining_bytes']} bytes out of sync)"
              + ("" if args.repair else f"; 'hamirror verify --repair {args.module}' resyncs them"), file=sys.stderr)
        return DIFFERENT
    return 0
