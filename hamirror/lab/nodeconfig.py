"""Each node's /etc/hamirror, written from the host before the node boots.

The cluster file follows docs/configuration.md and differs between nodes only by ``cluster.node``;
the heartbeat key is shared; CURVE pairs come from ``hamirror keygen`` and each node also trusts
the other's public key; module folders are copied unchanged into both nodes.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tomllib

from hamirror.lab.naming import (
    ADDRESSES, ETCD_CLIENT_PORT, ETCD_HOSTS, NODE_MOUNTS, NODES, WITNESS, WITNESS_PORT, LabPaths,
)
from hamirror.lab.shell import LabError

REPO_MODULES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "modules")
ETC = NODE_MOUNTS["etc"]


# The link engines (link/session.py) and the one a new cluster writes: named here, not imported, so
# that the lab's commands start without the configuration's and the link's imports (~0.08 s).
LINK_ENGINES = ("curve", "aead", "stream")
NEW_CLUSTER_ENGINE = "stream"
FENCE_SCRIPT = "fence.sh"
HTTP_PORT = 9453
HTTP_TOKEN = "http.token"


def cluster_toml(node: str, witness: bool, fence: bool = False, console: bool = False, etcd: bool = False,
                 lease: int | None = None, engine: str | None = NEW_CLUSTER_ENGINE) -> str:
    """The cluster file as node sees it (paths are the in-namespace ones). ``engine``: its
    ``[link] engine``, what a new cluster writes; None: no ``[link]``, a file as written for
    0.2.0 (which refuses the table), so curve (tests/test_upgrade_lab.py)."""
    lines = [
        "# Written by 'hamirror lab up'.",
        "[cluster]",
        'name = "lab"',
        f'node = "{node}"',
        f'keys_dir = "{ETC}/keys"',
        f'cluster_key_file = "{ETC}/cluster.key"',
        f'modules_dir = "{ETC}/modules"',
        f'state_dir = "{NODE_MOUNTS["state"]}"',
        f'run_dir = "{NODE_MOUNTS["run"]}"',
        "",
        "[heartbeat]",
        "port = 7401",
        "interval = 0.3",
        "timeout = 2.0",
        "",
    ]
    if engine is not None:
        lines += ["[link]", f'engine = "{engine}"', ""]
    if witness:
        lines += ["[quorum]", f'witness = "{ADDRESSES[WITNESS]}:{WITNESS_PORT}"', ""]
    if etcd:     # plain HTTP: the lab's network is private to its namespaces
        urls = ", ".join(f'"http://{ADDRESSES[host]}:{ETCD_CLIENT_PORT}"' for host in ETCD_HOSTS)
        lines += ["[quorum]", f"etcd = [{urls}]", *([f"etcd_ttl = {lease}"] if lease else []), ""]
    if fence:
        lines += ["[fence]", f'script = "{ETC}/{FENCE_SCRIPT}"', "timeout = 20", ""]
    if console:
        lines += ["[http]", f'listen = "{ADDRESSES[node]}:{HTTP_PORT}"', f'token_file = "{ETC}/{HTTP_TOKEN}"',
                  "console_actions = true", ""]
    for name in NODES:
        lines += ["[[nodes]]", f'name = "{name}"', f'addresses = ["{ADDRESSES[name]}"]', ""]
    return "\n".join(lines)


def witness_toml(key_file: str) -> str:
    """The witness's cluster file: the nodes' file without ``cluster.node``, the key at its host path
    (the witness has a network namespace only; it reads the lab's files where they are)."""
    text = cluster_toml("node1", True).replace('node = "node1"\n', "")
    return text.replace(f'cluster_key_file = "{ETC}/cluster.key"', f'cluster_key_file = "{key_file}"')


def module_source(module: str) -> str:
    """A module name from the repo's modules/ folder, or a path to a module folder."""
    path = module if os.sep in module else os.path.join(REPO_MODULES, module)
    if not os.path.isfile(os.path.join(path, "module.toml")):
        raise LabError(f"module {module!r}: no module.toml in {path}")
    return os.path.abspath(path)


def module_name(module: str) -> str:
    """The name a module is configured with (``[module] name`` of its module.toml), which the agents
    report and which need not be its folder's name; the argument itself when it names no readable
    module folder."""
    try:
        with open(os.path.join(module_source(module), "module.toml"), "rb") as stream:
            name = tomllib.load(stream).get("module", {}).get("name")
    except (LabError, OSError, tomllib.TOMLDecodeError, AttributeError):
        name = None
    return name if isinstance(name, str) and name else os.path.basename(module.rstrip(os.sep))


def fence_script(paths: LabPaths) -> str:
    """The lab's fence script: power-kill the peer (``lab kill``), as a BMC or hypervisor would."""
    return ("#!/bin/sh\n"
            "# Written by 'hamirror lab up --fence': power-kill the node named by $1 (SIGKILL of every\n"
            "# process of it), the way a real fence cuts the power of a server through its BMC.\n"
            f"exec {sys.executable} -m hamirror lab kill --root {paths.root} \"$1\"\n")


def write_all(paths: LabPaths, modules: list[str], witness: bool, fence: bool = False,
              console: bool = False, etcd: bool = False, lease: int | None = None,
              engine: str | None = NEW_CLUSTER_ENGINE) -> None:
    """Config, heartbeat key, CURVE keys and modules for both nodes (host-side directories); with
    ``console``, the HTTP API on each node's address with one token for both and commands on;
    ``engine``: the link's (None: no ``[link]`` table, curve)."""
    sources = [module_source(m) for m in modules]
    cluster_key = secrets.token_bytes(32)
    http_token = secrets.token_urlsafe(24).encode()
    for node in NODES:
        etc = paths.node_dir(node, "etc")
        os.makedirs(etc, exist_ok=True)
        with open(os.path.join(etc, "hamirror.toml"), "w", encoding="utf-8") as f:
            f.write(cluster_toml(node, witness, fence, console, etcd, lease, engine))
        if console:
            _write_secret(os.path.join(etc, HTTP_TOKEN), http_token)
        if fence:
            script = os.path.join(etc, FENCE_SCRIPT)
            with open(script, "w", encoding="utf-8") as f:
                f.write(fence_script(paths))
            os.chmod(script, 0o755)
        _write_secret(os.path.join(etc, "cluster.key"), cluster_key)
        _keygen(os.path.join(etc, "keys"), node)
        for module, src in zip(modules, sources):
            # Installed under its configured name: config check wants the folder named like the module.
            dest = os.path.join(etc, "modules", module_name(module))
            shutil.copytree(src, dest, symlinks=True, dirs_exist_ok=True)
    if witness:
        etc = paths.node_dir(WITNESS, "etc")
        os.makedirs(etc, exist_ok=True)
        _write_secret(os.path.join(etc, "cluster.key"), cluster_key)
        with open(os.path.join(etc, "hamirror.toml"), "w", encoding="utf-8") as f:
            f.write(witness_toml(os.path.join(etc, "cluster.key")))
    for node in NODES:
        for other in NODES:
            if other != node:
                public = os.path.join(paths.node_dir(other, "etc"), "keys", f"{other}.key")
                shutil.copy2(public, os.path.join(paths.node_dir(node, "etc"), "keys"))


def _write_secret(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def _keygen(keys_dir: str, node: str) -> None:
    cmd = [sys.executable, "-m", "hamirror", "keygen", "--keys", keys_dir, "--name", node, "--force"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise LabError(f"keygen for {node} failed: {result.stderr.strip() or result.stdout.strip()}")
