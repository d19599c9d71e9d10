"""``hamirror install [--root DIR] [--dry-run] [--json]``: put the package's server files in place.

The systemd units, the logrotate file and the Prometheus rules come from the installed package
(``hamirror.shipped``), so a server needs the wheel and nothing else: no checkout, no test tooling.
Every file it writes starts with a marker line; a file without it (written by hand, by a package,
by an older guide's ``cp``) is never touched, nor is a symlink. Running it again changes nothing
unless the package changed. It enables and starts nothing: that stays the operator's decision.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile

from hamirror import __version__, shipped
from hamirror.cli.common import FAILED, USAGE, CommandError, add_json, print_json

MARKER = "# Installed by hamirror install"


@dataclasses.dataclass
class Step:
    """What was done (or would be, with --dry-run) to one path."""

    action: str     # created, exists, installed, updated, unchanged, kept, linked
    path: str
    detail: str = ""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "install", help="put the systemd units, logrotate file, alert rules, shell completion and manual page "
                        "of this package in place")
    parser.add_argument("--root", default="/", metavar="DIR",
                        help="install below DIR instead of / (a chroot, an image, a test)")
    parser.add_argument("--dry-run", action="store_true", help="say what would be done, change nothing")
    add_json(parser)
    parser.set_defaults(func=run_install)


def shipped_text(item: shipped.Shipped) -> str:
    """The file as installed: the marker line (with the version), then the shipped text."""
    return (f"{MARKER} (hamirror {__version__}); the next hamirror install replaces this file "
            f"while this line is here.\n" + shipped.read(item.name))


def ours(path: str) -> bool:
    """Whether ``path`` is a regular file that hamirror install wrote (its first line says so)."""
    if os.path.islink(path) or not os.path.isfile(path):
        return False
    with open(path, encoding="utf-8", errors="replace") as stream:
        return stream.readline().lstrip('.\\" ').startswith(MARKER)


def generated_files() -> list[tuple[str, str, int]]:
    """(target, text, mode) of what is made from the parser here: the bash completion and the
    manual page (each with the marker line, in the file's own comment syntax)."""
    from hamirror.cli.reference import completion_text, manpage_text
    note = f"{MARKER} (hamirror {__version__}); the next hamirror install replaces this file while this line is here.\n"
    return [("usr/share/bash-completion/completions/hamirror", note + completion_text("bash"), 0o644),
            ("usr/local/share/man/man1/hamirror.1", '.\\" ' + note + manpage_text(), 0o644)]


def write_file(path: str, text: str, mode: int) -> None:
    """Replace ``path`` atomically (a reader sees the old file or the new one, never half)."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".hamirror-install.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(text)
            os.fchmod(stream.fileno(), mode)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def place_directory(root: str, relative: str, mode: int, dry_run: bool) -> Step:
    path = os.path.join(root, relative)
    if os.path.isdir(path):
        return Step("exists", path)
    if os.path.lexists(path):
        raise CommandError(f"{path} exists and is not a directory; nothing was installed after it")
    if not dry_run:
        os.makedirs(path, exist_ok=True)
        os.chmod(path, mode)
    return Step("created", path, f"mode {mode:04o}")


def place_file(root: str, item: shipped.Shipped, dry_run: bool) -> Step:
    return place_text(root, item.target, shipped_text(item), item.mode, dry_run)


def place_text(root: str, target: str, text: str, mode: int, dry_run: bool) -> Step:
    """Write ``text`` at ``target`` (below ``root``) unless a file not written by us is there."""
    path = os.path.join(root, target)
    if not os.path.lexists(path):
        action = "installed"
    elif not ours(path):
        return Step("kept", path, "not written by hamirror install: left as it is (move it away and run "
                                  "hamirror install again to replace it)")
    else:
        with open(path, encoding="utf-8") as stream:
            if stream.read() == text and os.stat(path).st_mode & 0o7777 == mode:
                return Step("unchanged", path)
        action = "updated"
    if not dry_run:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_file(path, text, mode)
    return Step(action, path)


def command_path() -> str | None:
    """This installation's ``hamirror`` entry point (the virtualenv's bin/), if there is one."""
    candidate = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "hamirror")
    return candidate if os.access(candidate, os.X_OK) else None


def place_link(root: str, dry_run: bool) -> Step:
    """/usr/local/bin/hamirror -> this installation, where the units' ExecStart looks for it."""
    path = os.path.join(root, shipped.COMMAND_LINK)
    target = command_path()
    if target is None:
        return Step("kept", path, f"no hamirror command beside {sys.executable} to link")
    if os.path.islink(path) and os.readlink(path) == target:
        return Step("unchanged", path, f"-> {target}")
    if os.path.lexists(path):
        if os.path.realpath(path) == os.path.realpath(target):
            return Step("unchanged", path, "is this installation's command")
        return Step("kept", path, f"exists and is not a link to {target}: left as it is (the units run "
                                  f"{'/' + shipped.COMMAND_LINK}; see systemctl edit in the admin guide)")
    if not dry_run:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.symlink(target, path)
    return Step("linked", path, f"-> {target}")


def reload_systemd(root: str, steps: list[Step], dry_run: bool) -> Step | None:
    """``systemctl daemon-reload`` when a unit changed on this very system (not below --root)."""
    unit_dir = os.path.join(root, "etc/systemd/system")
    changed = [s for s in steps if s.action in ("installed", "updated") and s.path.startswith(unit_dir)]
    if not changed or os.path.realpath(root) != "/" or not os.path.isdir("/run/systemd/system"):
        return None
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        return None
    if not dry_run:
        result = subprocess.run([systemctl, "daemon-reload"], capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise CommandError(f"systemctl daemon-reload failed: {result.stderr.strip()}")
    return Step("ran", "systemctl daemon-reload")


def install(root: str, dry_run: bool) -> list[Step]:
    """Every step, in order: directories, files, the command link, systemd's reload."""
    steps = [place_directory(root, relative, mode, dry_run) for relative, mode in shipped.DIRECTORIES]
    steps += [place_file(root, item, dry_run) for item in shipped.FILES]
    steps += [place_text(root, target, text, mode, dry_run) for target, text, mode in generated_files()]
    steps.append(place_link(root, dry_run))
    reloaded = reload_systemd(root, steps, dry_run)
    return steps + ([reloaded] if reloaded else [])


WOULD = {"created": "would create", "installed": "would install", "updated": "would update",
         "linked": "would link", "ran": "would run"}


def run_install(args: argparse.Namespace) -> int:
    if not os.path.isdir(args.root):
        raise CommandError(f"--root {args.root}: not a directory", USAGE)
    try:
        steps = install(args.root, args.dry_run)
    except OSError as exc:
        raise CommandError(f"install: {exc}", FAILED) from exc
    if args.json:
        print_json({"version": __version__, "dry_run": args.dry_run,
                    "steps": [dataclasses.asdict(s) for s in steps]})
        return 0
    for step in steps:
        action = WOULD.get(step.action, step.action) if args.dry_run else step.action
        print(f"{action:<13} {step.path}" + (f" ({step.detail})" if step.detail else ""))
    if not args.dry_run:
        print("Nothing is enabled or started. Next (admin guide): the keys, /etc/hamirror/hamirror.toml, the modules, "
              "hamirror config check, then systemctl enable --now hamirror.")
    return 0
