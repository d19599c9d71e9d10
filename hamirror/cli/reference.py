"""``hamirror completion SHELL`` and ``hamirror manpage``: the shell completion and the manual page,
both generated from the command-line parser itself (shtab, argparse-manpage), so they never
disagree with ``--help``. ``hamirror install`` puts both in place."""

from __future__ import annotations

import argparse

SHELLS = ("bash", "zsh", "tcsh")


def register(subparsers: argparse._SubParsersAction) -> None:
    completion = subparsers.add_parser("completion", help="print the shell completion script for SHELL")
    completion.add_argument("shell", choices=SHELLS)
    completion.set_defaults(func=lambda args: print(completion_text(args.shell), end="") or 0)
    manpage = subparsers.add_parser("manpage", help="print the manual page (roff: man -l <(hamirror manpage))")
    manpage.set_defaults(func=lambda args: print(manpage_text(), end="") or 0)


def completion_text(shell: str) -> str:
    import shtab

    from hamirror.cli.main import build_parser
    return shtab.complete(build_parser(), shell=shell)


def manpage_text() -> str:
    from argparse_manpage.manpage import Manpage

    from hamirror.cli.main import build_parser
    return str(Manpage(build_parser()))
