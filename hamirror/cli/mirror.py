"""``hamirror mirror``: the low-level replicated mount, usable without the agent."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("mirror", help="low-level replicated mount (receive, mount, umount)")
    parser.add_subparsers(dest="mirror_command", metavar="ACTION")
