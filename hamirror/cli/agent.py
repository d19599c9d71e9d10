"""``hamirror agent [-c CONFIG]``: run this node's daemon in the foreground (systemd's ExecStart)."""

from __future__ import annotations

import argparse
import asyncio
import logging

from hamirror.cli.common import USAGE, CommandError
from hamirror.config import ConfigError, config_path, load_cluster, load_modules


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("agent", help="run this node's cluster agent in the foreground")
    parser.add_argument("-c", "--config", default=None,
                        help="cluster file (default: $HAMIRROR_CONFIG, else /etc/hamirror/hamirror.toml)")
    parser.set_defaults(func=run_agent)


def run_agent(args: argparse.Namespace) -> int:
    from hamirror.agent.runtime import Agent, AgentError

    from hamirror.cli.preflight import check_secrets

    path = config_path(args.config)
    try:
        cluster = load_cluster(path)
        modules = load_modules(cluster)
        problems = check_secrets(cluster)      # never run on without the link or the HTTP API
        if problems:
            raise CommandError("cannot start the agent:\n" + "\n".join(str(p) for p in problems), USAGE)
        agent = Agent(cluster, modules)
        agent.reloader.checks = check_secrets  # a reload runs every check of `config check`
    except ConfigError as exc:
        raise CommandError(str(exc), USAGE) from exc
    except (OSError, ValueError) as exc:
        raise CommandError(f"cannot start the agent: {exc}") from exc
    if logging.getLogger().level > logging.INFO:
        logging.getLogger().setLevel(logging.INFO)     # a daemon's log is its record of decisions
    try:
        asyncio.run(agent.run())
    except AgentError as exc:
        raise CommandError(str(exc)) from exc
    return 0
