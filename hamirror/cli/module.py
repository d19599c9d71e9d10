"""``hamirror module new|check``: the module kit (docs/module-guide.md); ``module remove``: take a module
out of this node's configuration and stop it (through ``hamirror reload``)."""

from __future__ import annotations

import argparse
import os
import sys

from hamirror.cli.common import OK, UNREACHABLE, USAGE, CommandError, add_json, print_json
from hamirror.config.loader import config_path
from hamirror.config.module import SCRIPTS


def register(subparsers: argparse._SubParsersAction) -> None:
    from hamirror.modkit.scaffold import TEMPLATES
    parser = subparsers.add_parser("module", help="make, check and remove mirror modules (the module kit)")
    actions = parser.add_subparsers(dest="module_command", metavar="ACTION")
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument("-c", "--config", default=None,
                        help="cluster file (default: $HAMIRROR_CONFIG, else /etc/hamirror/hamirror.toml)")

    new = actions.add_parser("new", parents=[config], help="scaffold a module folder from a template")
    new.add_argument("name", help="module name: lowercase letters, digits, '_' or '-'")
    new.add_argument("--template", choices=TEMPLATES, default="generic", help="what it runs (default: generic)")
    new.add_argument("--dir", default=None, help="modules directory (default: the cluster file's modules_dir)")
    new.add_argument("--directory", default=None, help="replicated directory (default: /srv/hamirror-NAME)")
    new.add_argument("--replication-port", type=int, default=None,
                     help="TCP port of the module's replication link (default: the template's, else the next free)")
    new.add_argument("--vip", default="198.18.0.100/24", help="virtual IP with its prefix (default: the lab's)")
    new.add_argument("--interface", default="eth0", help="interface that carries the VIP (default: eth0)")
    new.add_argument("--default-primary", default=None, help="node primary at a cold start (default: the first node)")
    new.add_argument("--force", action="store_true", help="replace the files of an existing folder")
    new.set_defaults(func=run_new)

    check = actions.add_parser("check", parents=[config],
                               help="validate a module with this node's values and its server's durability settings")
    check.add_argument("module", help="module name (in modules_dir) or path to a module folder")
    check.add_argument("--show", choices=SCRIPTS, default=None, help="also print this script rendered for this node")
    add_json(check)
    check.set_defaults(func=run_check)

    remove = actions.add_parser("remove", parents=[config],
                                help="stop a module on this node in the safe order, clean its state and move its "
                                     "folder out of modules_dir (to modules_dir/.removed)")
    remove.add_argument("name", help="module name (its folder in modules_dir)")
    remove.add_argument("--timeout", type=float, default=600.0,
                        help="seconds to wait for the agent to stop it (default: %(default)s)")
    add_json(remove)
    remove.set_defaults(func=run_remove)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def _cluster_defaults(config: str) -> tuple[str | None, str | None, str | None]:
    """(modules_dir, first node, None) from the cluster file, or (None, None, its first problem).
    A modules_dir that does not exist yet is no problem here: ``module new`` makes it."""
    from hamirror.config.errors import ConfigError
    from hamirror.config.loader import _cluster
    sink: list[ConfigError] = []
    cluster = _cluster(config, sink)
    if cluster is None:
        return None, None, str(sink[0])
    problems = [e for e in sink if not (e.key == "cluster.modules_dir" and not os.path.exists(cluster.modules_dir))]
    if problems:
        return None, None, str(problems[0])
    return cluster.modules_dir, cluster.nodes[0].name, None


def run_new(args: argparse.Namespace) -> int:
    from hamirror.modkit import scaffold
    modules_dir, first, problem = _cluster_defaults(config_path(args.config))
    modules_dir = args.dir or modules_dir
    if modules_dir is None:
        raise CommandError(f"no modules directory: give --dir, or fix the cluster file: {problem}", USAGE)
    made = not os.path.isdir(modules_dir)
    try:
        values = scaffold.values_for(args.name, args.template, modules_dir, args.replication_port, args.directory,
                                     args.vip, args.interface, args.default_primary or first or "node1")
        folder = scaffold.create(values, modules_dir, args.force)
    except (scaffold.ScaffoldError, OSError) as exc:
        raise CommandError(str(exc)) from exc
    if made:
        print(f"{os.path.abspath(modules_dir)}: modules directory created")
    print(f"{folder}: module {values.name!r} from template {args.template!r} "
          f"(replication port {values.replication_port}, directory {values.directory}, VIP {values.vip})")
    print(f"next: edit {folder}/module.toml, then 'hamirror module check {values.name}'")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from hamirror.config.errors import ConfigError
    from hamirror.modkit.check import check, show
    report = check(args.module, config_path(args.config))
    failed = bool(report.errors) or report.module is None or report.cluster is None
    if args.json:
        from hamirror.cli.config import problems
        print_json({"ok": not failed, "module": report.module.name if report.module else None,
                    "folder": report.module.folder if report.module else None,
                    "errors": problems(report.errors), "warnings": problems(report.warnings)})
        return USAGE if failed else OK
    for problem in report.errors + report.warnings:
        print(problem, file=sys.stderr)
    if failed:
        return USAGE
    if args.show:
        try:
            sys.stdout.write(show(report, args.show))
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return 1
    node = report.cluster.local_node.name
    print(f"OK: module {report.module.name} ({report.module.folder}), scripts rendered for node {node}"
          + (f", {len(report.warnings)} warning(s)" if report.warnings else ""),
          file=sys.stderr if args.show else sys.stdout)     # --show: stdout is the script alone
    return 0


def run_remove(args: argparse.Namespace) -> int:
    """Move the folder to ``modules_dir/.removed/NAME-TIME`` (the loader skips dot folders), then
    reload: the agent stops the module (stop_prim, VIP, unmount, receiver) and cleans its state.
    A reload refused (another problem), or a stop that failed, puts the folder back."""
    import time
    from hamirror.cli.reload import exit_code, print_report, reload_agent
    modules_dir, _first, problem = _cluster_defaults(config_path(args.config))
    if modules_dir is None:
        raise CommandError(f"cannot find the modules directory: {problem}", USAGE)
    folder = os.path.join(modules_dir, args.name)
    if args.name.startswith(".") or os.sep in args.name or not os.path.isfile(os.path.join(folder, "module.toml")):
        raise CommandError(f"no module {args.name!r} in {modules_dir}", USAGE)
    aside = os.path.join(modules_dir, ".removed", f"{args.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        os.makedirs(os.path.dirname(aside), mode=0o755, exist_ok=True)
        os.rename(folder, aside)
    except OSError as exc:
        raise CommandError(f"cannot move {folder} to {aside}: {exc.strerror or exc}") from exc
    try:
        report = reload_agent(args.config, args.timeout, {args.name: os.path.abspath(aside)})
    except CommandError as exc:
        if exc.exit_code != UNREACHABLE:
            raise
        raise CommandError(f"{folder} moved to {aside}, but {exc}: the module is no longer configured here; "
                           "its state stays until an agent reload or start", UNREACHABLE) from exc
    # Refused, or this module not stopped: it stays configured as it runs (remove it again later).
    kept = report.get("refused") or any(item.get("module") == args.name for item in report.get("failed") or [])
    if kept:
        os.rename(aside, folder)
    if args.json:
        print_json({**report, "module": args.name, "moved_to": None if kept else aside})
    else:
        print_report(report)
        print(f"{args.name}: folder left in place" if kept
              else f"{args.name}: folder moved to {aside} (delete it when no longer needed)")
    return exit_code(report)
