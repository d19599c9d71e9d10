"""``hamirror events`` and ``hamirror logs``: what happened on this node, read from its state
directory (so both work while the agent is down, e.g. after a crash)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from hamirror.cli.common import USAGE, CommandError
from hamirror.config import ConfigError, config_path, load_cluster
from hamirror.config.cluster import ClusterConfig

LOG_FILES = ("scripts.log", "fence.log")


def _readable(func):
    """A state directory that is root's: say so rather than print a traceback."""
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except PermissionError as exc:
            raise CommandError(f"{exc.filename}: permission denied (the state directory is root's: "
                               "run this command as root)") from exc
    return run


def register(subparsers: argparse._SubParsersAction) -> None:
    events = subparsers.add_parser("events", help="this node's event timeline (state changes, failovers, "
                                                  "resyncs, checkers, fencing, operator commands)")
    events.add_argument("module", nargs="?", metavar="MODULE", help="only this module (and node-wide events)")
    events.add_argument("-f", "--follow", action="store_true", help="keep printing new events as they come")
    events.add_argument("-n", "--lines", type=int, default=50, metavar="N",
                        help="the last N events (0: all kept; default: %(default)s)")
    events.add_argument("--json", action="store_true", help="one JSON object per line")
    events.add_argument("-c", "--config", default=None, help="cluster file (finds the state directory)")
    events.set_defaults(func=_readable(run_events))
    logs = subparsers.add_parser("logs", help="the output of MODULE's scripts (and of the fence script)")
    logs.add_argument("module", metavar="MODULE")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new output")
    logs.add_argument("-n", "--lines", type=int, default=50, metavar="N",
                      help="the last N lines of each file (0: all; default: %(default)s)")
    logs.add_argument("-c", "--config", default=None, help="cluster file (finds the state directory)")
    logs.set_defaults(func=_readable(run_logs))


def _cluster(args: argparse.Namespace):
    try:
        return load_cluster(config_path(args.config))
    except ConfigError as exc:
        raise CommandError(str(exc), USAGE) from exc


def render(event: dict) -> str:
    """``2026-11-29 20:10:03.123 node1 demo takeover: peer lost: taking over``."""
    stamp = float(event.get("time") or 0)
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)) + f".{int(stamp * 1000) % 1000:03d}"
    return f"{when} {event.get('node')} {event.get('module') or '-'} {event.get('kind')}: {event.get('text')}"


def require_known(cluster: ClusterConfig, module: str) -> None:
    """CommandError (usage) unless ``module`` is configured (a folder with module.toml in
    modules_dir) or in the event timeline (a module removed since keeps its past): a typo must
    not look like a module with nothing to show."""
    from hamirror.agent import events
    names = {event["module"] for event in events.read(cluster.state_dir) if isinstance(event.get("module"), str)}
    folder = cluster.modules_dir
    for entry in os.listdir(folder) if folder and os.path.isdir(folder) else ():
        if os.path.isfile(os.path.join(folder, entry, "module.toml")):
            names.add(entry)
    if module not in names:
        raise CommandError(f"no module {module!r} (known: {', '.join(sorted(names)) or 'none'}; configured in "
                           f"{cluster.modules_dir} or seen in the event timeline)", USAGE)


def run_events(args: argparse.Namespace) -> int:
    from hamirror.agent import events
    cluster = _cluster(args)
    state_dir = cluster.state_dir
    if args.module is not None:
        require_known(cluster, args.module)
    show = (lambda e: json.dumps(e, sort_keys=True)) if args.json else render
    for event in events.read(state_dir, args.module, max(args.lines, 0) or None):
        print(show(event), flush=True)
    if args.follow:
        for event in events.follow(state_dir):
            if events.matches(event, args.module):
                print(show(event), flush=True)
    return 0


def tail(path: str, lines: int) -> list[str]:
    """The last ``lines`` lines of a file (0: all), without reading more than needed of a large one."""
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        step, data = 65536, b""
        while size > 0 and (lines == 0 or data.count(b"\n") <= lines):
            start = max(0, size - step)
            f.seek(start)
            data = f.read(size - start) + data
            size = start
    text = data.decode("utf-8", "replace").splitlines()
    return text[-lines:] if lines else text


def run_logs(args: argparse.Namespace) -> int:
    from hamirror.agent.events import follow_lines
    cluster = _cluster(args)
    require_known(cluster, args.module)
    folder = cluster.module_state_dir(args.module)
    files = [os.path.join(folder, name) for name in LOG_FILES]
    found = [path for path in files if os.path.exists(path)]
    if not found and not args.follow:
        raise CommandError(f"no script output for module {args.module!r} yet (looked for "
                           f"{' and '.join(files)})")
    for path in found:
        print(f"==> {path} <==")
        for line in tail(path, max(args.lines, 0)):
            print(line)
    sys.stdout.flush()
    if args.follow:
        for path, line in follow_lines(files):
            print(f"{os.path.basename(path)}: {line}", flush=True)
    return 0
