"""``hamirror report``: a diagnostics bundle for support, like Pacemaker's ``crm_report`` or
SafeKit's snapshot. One tar.gz (mode 0600) of what a reader needs to explain an incident on this
node: the configuration (secrets left out), the agent's status (with the peer as this node sees
it), the event timeline, the scripts' output, each module's persisted state, and the system's view
(versions, mounts, addresses, the agent's journal). Run it on both nodes.

Never in the bundle: the CURVE keys, the cluster key, the HTTP token, or any file whose name says
it is a secret; values of configuration keys that look like secrets are replaced. Everything is
read as it is, while the agent runs or after a crash: a part that cannot be read is a line in
``errors.txt``, not a failure.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable

from hamirror import __version__
from hamirror.cli.common import USAGE, CommandError, add_json, print_json
from hamirror.cli.events import LOG_FILES, tail
from hamirror.config import ConfigError, config_path, load_cluster
from hamirror.config.cluster import ClusterConfig
from hamirror.durablefile import is_leftover

ASSIGNMENT = re.compile(r"^(\s*([\w.-]+)\s*=\s*)(.*)$")
SECRET_WORD = re.compile(r"secret|password|passwd|token|credential", re.IGNORECASE)
SECRET_FILE = re.compile(r"(secret|password|passwd|token|credential|\.key$|_key$|\.pem$)", re.IGNORECASE)
MAX_FILE = 2 * 1024 * 1024         # bytes of one file (its end is kept: the latest lines)
LOG_LINES = 5000                   # lines of each script log and of the agent's journal
REDACTED = '"<redacted by hamirror report>"'


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("report", help="write a diagnostics bundle (configuration without secrets, "
                                                  "status, events, logs, system) for support")
    parser.add_argument("-o", "--output", default=None, metavar="FILE",
                        help="the bundle to write (default: ./hamirror-report-NODE-TIME.tar.gz)")
    parser.add_argument("--since", default="2 days ago", metavar="WHEN",
                        help="how far back the agent's system journal goes (journalctl --since; default: %(default)s)")
    parser.add_argument("-c", "--config", default=None, help="cluster file")
    add_json(parser)
    parser.set_defaults(func=run_report)


def redact(text: str) -> str:
    """A TOML text with the values of secret-looking keys replaced (paths to secret files are kept)."""
    def line_of(line: str) -> str:
        found = ASSIGNMENT.match(line)
        if found and SECRET_WORD.search(found.group(2)) and not found.group(2).endswith(("_file", "_path", "_dir")):
            return found.group(1) + REDACTED
        return line
    return "\n".join(map(line_of, text.splitlines())) + "\n"


def is_secret_file(path: str, secrets: set[str]) -> bool:
    return os.path.realpath(path) in secrets or bool(SECRET_FILE.search(os.path.basename(path)))


class Bundle:
    """The tar being written; every part is added under ``prefix/``, a part that fails is noted."""

    def __init__(self, tar: tarfile.TarFile, prefix: str) -> None:
        self.tar, self.prefix = tar, prefix
        self.errors: list[str] = []
        self.parts: list[str] = []

    def add_text(self, name: str, text: str) -> None:
        data = text.encode("utf-8", "replace")
        info = tarfile.TarInfo(f"{self.prefix}/{name}")
        info.size, info.mtime, info.mode = len(data), int(time.time()), 0o600
        self.tar.addfile(info, io.BytesIO(data))
        self.parts.append(name)

    def add(self, name: str, produce: Callable[[], str]) -> None:
        """Add what ``produce`` returns; its error becomes a line of errors.txt."""
        try:
            self.add_text(name, produce())
        except Exception as exc:  # noqa: BLE001 - a part that cannot be read must not stop the report
            self.errors.append(f"{name}: {exc.__class__.__name__}: {exc}")


def read_end(path: str) -> str:
    """A file's text; of a large one, its last MAX_FILE bytes."""
    with open(path, "rb") as f:
        try:
            f.seek(max(0, f.seek(0, os.SEEK_END) - MAX_FILE))
        except OSError:          # /proc files cannot seek from their end: they are small
            return f.read(MAX_FILE).decode("utf-8", "replace")
        return f.read().decode("utf-8", "replace")


def command(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None:
        return f"{argv[0]}: not installed\n"
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    return f"$ {' '.join(argv)}  (exit {done.returncode})\n{done.stdout}{done.stderr}"


def agent_status(cluster: ClusterConfig) -> str:
    from hamirror.agent.control import request, socket_path
    return json.dumps(request(socket_path(cluster.run_dir), {"cmd": "status"}, 10.0), indent=1, sort_keys=True)


def config_check(path: str) -> str:
    """``config check``'s findings, as it prints them."""
    from hamirror.config.loader import check
    errors = check(path)
    return "".join(f"{error}\n" for error in errors) or "OK\n"


def module_folders(cluster: ClusterConfig) -> list[str]:
    folder = cluster.modules_dir
    return sorted(e for e in os.listdir(folder) if os.path.isdir(os.path.join(folder, e))) if os.path.isdir(folder) else []


def add_configuration(bundle: Bundle, cluster: ClusterConfig, secrets: set[str]) -> None:
    bundle.add("config/cluster.toml", lambda: redact(read_end(cluster.path)))
    bundle.add("config/check.txt", lambda: config_check(cluster.path))
    for module in module_folders(cluster):
        top = os.path.join(cluster.modules_dir, module)
        for folder, _, files in os.walk(top):
            for name in sorted(files):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, cluster.modules_dir)
                if is_secret_file(path, secrets):
                    bundle.errors.append(f"config/modules/{rel}: left out (a secret)")
                    continue
                bundle.add(f"config/modules/{rel}",
                           lambda p=path: redact(read_end(p)) if p.endswith(".toml") else read_end(p))


def add_state(bundle: Bundle, cluster: ClusterConfig, secrets: set[str]) -> None:
    """The event timeline, each module's script output and persisted state (small files only)."""
    from hamirror.agent import events
    for path in events.paths(cluster.state_dir):
        if os.path.exists(path):
            bundle.add(f"state/{os.path.basename(path)}", lambda p=path: read_end(p))
    modules = os.path.join(cluster.state_dir, "modules")
    for module in sorted(os.listdir(modules)) if os.path.isdir(modules) else []:
        folder = os.path.join(modules, module)
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if not os.path.isfile(path) or is_secret_file(path, secrets) or is_leftover(name):
                continue   # a leftover temporary: a crash's half-written copy of a file above
            if name in LOG_FILES:
                bundle.add(f"state/modules/{module}/{name}", lambda p=path: "\n".join(tail(p, LOG_LINES)) + "\n")
            elif os.path.getsize(path) <= MAX_FILE:
                bundle.add(f"state/modules/{module}/{name}", lambda p=path: read_end(p))


def add_system(bundle: Bundle, since: str) -> None:
    bundle.add("system/versions.txt", lambda: (
        f"hamirror {__version__}\npython {sys.version}\nplatform {platform.platform()}\n"
        f"host {socket.gethostname()}\n" + command(["uname", "-a"]) + command(["fusermount3", "-V"])))
    bundle.add("system/mounts.txt", lambda: "".join(
        line for line in read_end("/proc/self/mounts").splitlines(keepends=True) if "fuse" in line or "hamirror" in line))
    bundle.add("system/addresses.txt", lambda: command(["ip", "-brief", "address"]))
    bundle.add("system/disk.txt", lambda: command(["df", "-h"]))
    bundle.add("system/units.txt", lambda: command(["systemctl", "status", "--no-pager", "hamirror*"]))
    bundle.add("system/journal.txt", lambda: command(
        ["journalctl", "--no-pager", "-u", "hamirror*", "--since", since, "-n", str(LOG_LINES)]))


def run_report(args: argparse.Namespace) -> int:
    try:
        cluster = load_cluster(config_path(args.config))
    except ConfigError as exc:
        raise CommandError(str(exc), USAGE) from exc
    node = cluster.node or socket.gethostname()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    prefix = f"hamirror-report-{node}-{stamp}"
    output = args.output or f"{prefix}.tar.gz"
    secrets = {os.path.realpath(p) for p in (cluster.cluster_key_file, cluster.http.token_file if cluster.http else None)
               if p}
    try:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise CommandError(f"{output}: cannot write the report: {exc.strerror}") from exc
    with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
        bundle = Bundle(tar, prefix)
        bundle.add("status.json", lambda: agent_status(cluster))
        add_configuration(bundle, cluster, secrets)
        add_state(bundle, cluster, secrets)
        add_system(bundle, args.since)
        bundle.add_text("errors.txt", "".join(f"{line}\n" for line in bundle.errors))
    if args.json:
        print_json({"report": output, "parts": bundle.parts, "errors": bundle.errors})
    else:
        print(f"{output}: {len(bundle.parts)} part(s); not included: {len(bundle.errors)} (see errors.txt)")
    return 0
