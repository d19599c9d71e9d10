"""Writes a valid cluster file and module folders for the config tests; tests then break one thing."""

from __future__ import annotations

import os
from pathlib import Path

CLUSTER = """\
[cluster]
name = "lab"
node = "node1"
modules_dir = "modules"
state_dir = "state"
run_dir = "run"
keys_dir = "keys"
cluster_key_file = "cluster.key"

[heartbeat]
port = 7401
interval = 0.3
timeout = 2.0

[[nodes]]
name = "node1"
addresses = ["198.18.0.1"]

[[nodes]]
name = "node2"
addresses = ["198.18.0.2"]
"""

MODULE = """\
[module]
name = "app"
default_primary = "node1"
replication_port = 7410

[[directories]]
path = "/srv/app"

[vip]
address = "198.18.0.100/24"
interface = "eth0"

[[checkers]]
type = "tcp"
name = "port"
host = "{{ vip_ip }}"
port = 8080

[vars]
port = 8080
"""

SCRIPT = "#!/bin/sh\necho {{ module }} {{ node }} {{ state }} {{ port }}\n"
SCRIPTS = ("start_prim", "stop_prim", "start_second", "stop_second")


def edit(text: str, replace: dict[str, str]) -> str:
    """``text`` with each key replaced by its value; a key that is absent is a broken test."""
    for old, new in replace.items():
        assert old in text, f"{old!r} is not in the template"
        text = text.replace(old, new)
    return text


def write_cluster(root: Path, replace: dict[str, str] | None = None, text: str | None = None) -> str:
    """The cluster file under ``root`` (modules in ``root/modules``); returns its path."""
    (root / "modules").mkdir(parents=True, exist_ok=True)
    path = root / "hamirror.toml"
    path.write_text(text if text is not None else edit(CLUSTER, replace or {}))
    return str(path)


def write_module(root: Path, folder: str = "app", replace: dict[str, str] | None = None,
                 scripts: dict[str, str | None] | None = None, name: str | None = None) -> Path:
    """A module folder ``root/modules/FOLDER``; ``scripts`` overrides script texts (None: no file)."""
    path = root / "modules" / folder
    path.mkdir(parents=True, exist_ok=True)
    replace = dict(replace or {})
    if name is not None:
        replace['name = "app"'] = f'name = "{name}"'
    (path / "module.toml").write_text(edit(MODULE, replace))
    texts: dict[str, str | None] = {script: SCRIPT for script in SCRIPTS}
    texts.update(scripts or {})
    for script, text in texts.items():
        if text is not None:
            (path / script).write_text(text)
            os.chmod(path / script, 0o755)
    return path


def write_secrets(root: Path, node: str = "node1", peer: str = "node2") -> None:
    """What the agent reads besides the files above: ``cluster.key`` (0600) and ``keys/`` with this
    node's CURVE pair and the peer's public key, as ``hamirror keygen`` and the admin guide make them."""
    import zmq.auth

    key = root / "cluster.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    (root / "keys").mkdir(mode=0o700, exist_ok=True)
    for name in (node, peer):
        zmq.auth.create_certificates(str(root / "keys"), name)
    os.remove(root / "keys" / f"{peer}.key_secret")
    (root / "keys" / f"{node}.key_secret").chmod(0o600)


def messages(errors: list) -> list[str]:
    return [str(error) for error in errors]
