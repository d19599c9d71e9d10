"""``hamirror lab``: a two-node cluster on this machine, in network and mount namespaces (root only)."""

from __future__ import annotations

import argparse
import os
import sys

from hamirror.cli.common import CommandError
from hamirror.lab import control, report
from hamirror.lab.nodeconfig import LINK_ENGINES, NEW_CLUSTER_ENGINE
from hamirror.lab.naming import DEFAULT_ROOT, ETCD_HOSTS, NODES, LabPaths, resolve_root
from hamirror.lab.shell import LabError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("lab", help="a two-node cluster in namespaces on this machine (demo, tests)")
    actions = parser.add_subparsers(dest="lab_command", metavar="ACTION")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", default=None,
                        help=f"lab directory naming the lab (default: $HAMIRROR_LAB, else {DEFAULT_ROOT})")

    up = actions.add_parser("up", parents=[common], help="build the lab and start both agents")
    up.add_argument("--module", action="append", default=None,
                    help="module folder name under modules/ or a path (repeatable; default: demo)")
    up.add_argument("--witness", action="store_true", help="add a witness host (198.18.0.254) and quorum")
    up.add_argument("--etcd", action="store_true",
                    help="add three etcd hosts (198.18.0.251-253) running an etcd cluster, the nodes' quorum")
    up.add_argument("--lease", type=int, default=None, metavar="SECONDS",
                    help="the quorum's lease (the witness's --timeout, or quorum.etcd_ttl; default: theirs)")
    up.add_argument("--fence", action="store_true",
                    help="configure a fence script in each node that power-kills the other ('lab kill')")
    up.add_argument("--console", action="store_true",
                    help="the HTTP API and web console on each node's address (port 9453), one token for both "
                         "(NODE/etc/http.token), console commands on")
    up.add_argument("--link-engine", choices=(*LINK_ENGINES, "none"), default=NEW_CLUSTER_ENGINE,
                    help="the nodes' [link] engine (default: %(default)s, what a new cluster writes); none: no "
                         "[link] table, a configuration as written for 0.2.0 (curve)")
    up.add_argument("--no-agent", action="store_true", help="infrastructure only: do not start agents")
    up.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for PRIM/SECOND (default: 60)")
    up.set_defaults(func=_up)

    exe = actions.add_parser("exec", parents=[common], help="run a command inside a host: lab exec NODE -- CMD...")
    exe.add_argument("host")
    exe.add_argument("cmd", nargs=argparse.REMAINDER)
    exe.set_defaults(func=_exec)

    kill = actions.add_parser("kill", parents=[common], help="power loss: SIGKILL every process of a host")
    kill.add_argument("host")
    kill.add_argument("--power-loss", action="store_true",
                      help="a node only: also lose what its page cache held and its disk did not "
                           "(unsynced pages of its replicated directories become zeros)")
    kill.set_defaults(func=_kill)

    boot = actions.add_parser("boot", parents=[common],
                              help="reboot a node (fresh mounts, agent started) or an etcd host (its member)")
    boot.add_argument("node", choices=NODES + ETCD_HOSTS)
    boot.add_argument("--no-agent", action="store_true", help="do not start the agent")
    boot.set_defaults(func=_boot)

    part = actions.add_parser("partition", parents=[common], help="cut the link between two hosts")
    part.add_argument("hosts", nargs="*", metavar="HOST", help="two hosts (default: node1 node2)")
    part.set_defaults(func=_partition)

    for name, func, text in (("heal", _heal, "remove every partition"),
                             ("status", _status, "hosts, namespaces, addresses, processes, mounts"),
                             ("down", _down, "remove every namespace, mount and process of the lab")):
        actions.add_parser(name, parents=[common], help=text).set_defaults(func=func)
    demo = actions.add_parser("demo", parents=[common],
                              help="narrated tour: writes, failover, failback with resync, swap, with figures")
    demo.add_argument("--keep", action="store_true", help="leave the lab up at the end (default: remove it)")
    demo.set_defaults(func=_demo)
    parser.set_defaults(func=lambda args: _usage(parser))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _paths(args: argparse.Namespace) -> LabPaths:
    if os.geteuid() != 0:
        raise CommandError("the lab needs root (network and mount namespaces)")
    try:
        return LabPaths(resolve_root(args.root))
    except ValueError as exc:
        raise CommandError(str(exc)) from exc


def _guard(func):
    """Turn lab failures into one operator-facing error."""
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return func(_paths(args), args) or 0
        except LabError as exc:
            raise CommandError(str(exc)) from exc
    return wrapper


@_guard
def _up(paths: LabPaths, args: argparse.Namespace) -> int:
    modules = args.module or ["demo"]
    control.up(paths, modules, witness=args.witness, start_agents=not args.no_agent, timeout=args.timeout,
               fence=args.fence, console=args.console, etcd=args.etcd, lease=args.lease,
               engine=None if args.link_engine == "none" else args.link_engine)
    what = "infrastructure up (no agents)" if args.no_agent else f"{', '.join(modules)}: PRIM on node1, SECOND on node2"
    print(f"lab {paths.root} ({paths.prefix}): {what}")
    return 0


def _exec(args: argparse.Namespace) -> int:
    """``exec HOST [--root DIR] -- CMD...``: options between HOST and ``--`` are the lab's, the rest is CMD."""
    if "--" in args.cmd:
        split = args.cmd.index("--")
        head, args.cmd = args.cmd[:split], args.cmd[split + 1:]
        options = argparse.ArgumentParser(prog="hamirror lab exec HOST", add_help=False)
        options.add_argument("--root", default=args.root)
        args.root = options.parse_args(head).root
    return _run_exec(args)


@_guard
def _run_exec(paths: LabPaths, args: argparse.Namespace) -> int:
    sys.stdout.flush()
    return control.run_in(paths, args.host, args.cmd)


@_guard
def _kill(paths: LabPaths, args: argparse.Namespace) -> int:
    if args.power_loss:
        from hamirror.lab import powerloss
        print(powerloss.power_loss(paths, args.host).summary())
        return 0
    killed = control.kill(paths, args.host)
    print(f"{args.host}: killed {len(killed)} process(es)")
    return 0


@_guard
def _boot(paths: LabPaths, args: argparse.Namespace) -> int:
    if args.node in ETCD_HOSTS:
        control.boot_etcd(paths, args.node)
        print(f"{args.node}: etcd member started")
        return 0
    control.boot(paths, args.node, start_agent=not args.no_agent)
    print(f"{args.node}: booted" + ("" if args.no_agent else ", agent started"))
    return 0


@_guard
def _partition(paths: LabPaths, args: argparse.Namespace) -> int:
    hosts = args.hosts or list(NODES)
    if len(hosts) != 2:
        raise LabError("partition takes two hosts (default: node1 node2)")
    control.cut(paths, hosts[0], hosts[1])
    print(f"partitioned {hosts[0]} from {hosts[1]}")
    return 0


@_guard
def _heal(paths: LabPaths, args: argparse.Namespace) -> int:
    control.heal(paths)
    print("healed")
    return 0


@_guard
def _status(paths: LabPaths, args: argparse.Namespace) -> int:
    print(report.text(paths))
    return 0


@_guard
def _down(paths: LabPaths, args: argparse.Namespace) -> int:
    for line in control.down(paths):
        print(line)
    print(f"lab {paths.root} is down")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from hamirror.lab import demo
    paths = _paths(args)
    print(f"hamirror lab demo: a two-node cluster in namespaces at {paths.root} ({paths.prefix})", flush=True)
    try:
        figures = demo.run(paths, keep=args.keep, say=lambda line: print(line, flush=True))
    except demo.DemoError as exc:
        raise CommandError(f"demo failed: {exc}") from exc
    except KeyboardInterrupt:
        print("\ninterrupted; the lab was removed" + (" (kept: --keep)" if args.keep else ""), file=sys.stderr)
        return 130
    print("\n" + demo.summary(figures) + "\n\nAll checks passed: no acknowledged write was lost.")
    return 0
