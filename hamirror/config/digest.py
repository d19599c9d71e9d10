"""Digests of the configuration both nodes must share; they travel in the heartbeats, so that a
difference between the two nodes shows in status, events, metrics and the console.

What is compared is what the files say, section by section, not the values after defaults: a
key written on one node and left to its default on the other is a difference, while two
releases with different defaults do not differ as long as the files are the same (a rolling
upgrade compares like with like). Numbers compare by value (``2`` equals ``2.0``); comments
and layout do not count. Per-node parts are left out: in the cluster file the local node's
name (``cluster.node``), the paths (keys, cluster key, modules, state, run directories), the
fence script's path (only whether there is one) and the whole ``[http]`` table. A module folder
has no per-node part (one folder serves both nodes): its ``module.toml`` and every other file
in it (scripts and what they use: name, executable bit, bytes) count.

Heartbeats are signed, not encrypted: every digest is an HMAC-SHA256 keyed with the cluster key,
so that a listener on the heartbeat network cannot confirm a guess of a low-entropy value (a
password in ``[vars]``) against it; both nodes hold the key, so theirs compare.

Wire form of a digest: ``OVERALL/SECTIONS``. ``OVERALL``: 12 hex digits of the HMAC over the
sections present; equal means the same configuration. ``SECTIONS``: 4 hex digits per section
of the lists below, in order (``0000``: absent), only to name what differs. New sections go at
the end of a list, so an older node still names the sections it knows.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import hmac
import json
import logging
import os
import re
import stat
import tomllib
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

CLUSTER_SECTIONS = ("cluster", "nodes", "heartbeat", "quorum", "fence", "link")
MODULE_SECTIONS = ("module", "directories", "vip", "scripts", "restart", "failover", "checkers", "vars", "files")
SHARED_CLUSTER_KEYS = ("name",)          # of [cluster]: the rest names this node or its paths
# Of [quorum]: each node may reach etcd with its own certificate or user: counted by presence only.
NODE_QUORUM_KEYS = ("etcd_ca_file", "etcd_cert_file", "etcd_key_file", "etcd_user", "etcd_password_file")
OVERALL_HEX, SECTION_HEX = 12, 4
MAX_WIRE = OVERALL_HEX + 1 + SECTION_HEX * 32
WIRE = re.compile(rf"[0-9a-f]{{{OVERALL_HEX}}}/(?:[0-9a-f]{{{SECTION_HEX}}}){{0,32}}")
MAX_FILES = 1000                     # files of a module folder taken into its digest
SKIPPED = ("__pycache__",)


@dataclasses.dataclass(frozen=True)
class ConfigDigests:
    """This node's digests: of the cluster file's shared part, and of each module (None: unreadable)."""

    cluster: str | None
    modules: Mapping[str, str | None]


def _canonical(value: Any) -> Any:
    """A JSON-able form in which equal settings are equal: integral floats as ints, dates as text."""
    if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return str(value)


def _hash(value: Any, key: bytes) -> str:
    text = json.dumps(_canonical(value), sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(key, text, hashlib.sha256).hexdigest()


def wire(sections: Mapping[str, Any], order: tuple[str, ...], key: bytes) -> str:
    """The wire form of the sections present in ``sections`` (see the module docstring)."""
    hashes = {name: _hash(value, key) for name, value in sections.items() if name in order}
    overall = hmac.new(key, "".join(f"{name}={h};" for name, h in sorted(hashes.items())).encode(),
                       hashlib.sha256).hexdigest()
    return overall[:OVERALL_HEX] + "/" + "".join(hashes[n][:SECTION_HEX] if n in hashes else "0" * SECTION_HEX
                                                  for n in order)


def cluster_sections(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The shared part of a parsed cluster file, by section."""
    found: dict[str, Any] = {}
    main = doc.get("cluster")
    if isinstance(main, dict):
        found["cluster"] = {k: v for k, v in main.items() if k in SHARED_CLUSTER_KEYS}
    for name in ("nodes", "heartbeat", "link"):   # [link]: both ends of the link must use one engine
        if name in doc:
            found[name] = doc[name]
    quorum = doc.get("quorum")
    if quorum is not None:
        found["quorum"] = {k: (True if k in NODE_QUORUM_KEYS else v) for k, v in quorum.items()} \
            if isinstance(quorum, dict) else quorum
    fence = doc.get("fence")
    if isinstance(fence, dict):
        found["fence"] = {**{k: v for k, v in fence.items() if k != "script"}, "script": "script" in fence}
    return found


def module_sections(doc: Mapping[str, Any], folder: str) -> dict[str, Any]:
    """A parsed module.toml by section, plus ``files``: every other file of the folder."""
    found = {name: doc[name] for name in MODULE_SECTIONS if name in doc}
    found["files"] = folder_files(folder)
    return found


def folder_files(folder: str) -> list[list[Any]]:
    """``[relative path, executable, sha256]`` of each file of a module folder but module.toml,
    sorted; hidden entries and ``__pycache__`` are left out (Python writes them as it runs)."""
    files: list[list[Any]] = []
    for top, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIPPED)
        for name in sorted(names):
            path = os.path.join(top, name)
            rel = os.path.relpath(path, folder)
            if name.startswith(".") or rel == "module.toml" or len(files) >= MAX_FILES:
                continue
            try:
                info = os.stat(path)
                if not stat.S_ISREG(info.st_mode):
                    continue
                with open(path, "rb") as stream:
                    content = hashlib.sha256(stream.read()).hexdigest()
            except OSError as exc:
                content = f"unreadable: {exc.strerror or exc}"
                info = None
            files.append([rel, bool(info and info.st_mode & 0o111), content])
    return files


def _read(path: str) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as stream:
            return tomllib.loads(stream.read().decode("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        log.warning("no configuration digest for %s: %s", path, exc)
        return None


def cluster_digest(path: str, key: bytes) -> str | None:
    """The cluster file's digest, or None when it cannot be read (nothing is compared then)."""
    doc = _read(path)
    return None if doc is None else wire(cluster_sections(doc), CLUSTER_SECTIONS, key)


def module_digest(folder: str, key: bytes) -> str | None:
    """A module folder's digest, or None when its module.toml cannot be read."""
    doc = _read(os.path.join(folder, "module.toml"))
    return None if doc is None else wire(module_sections(doc, folder), MODULE_SECTIONS, key)


def compute(cluster_path: str, module_folders: Mapping[str, str], key: bytes) -> ConfigDigests:
    """This node's digests, read once when the configuration is loaded (the running
    configuration, not a file edited since)."""
    return ConfigDigests(cluster_digest(cluster_path, key), {name: module_digest(folder, key)
                                                             for name, folder in module_folders.items()})


def valid(value: object) -> str | None:
    """``value`` if it is a digest in wire form, else None (a hostile peer may send anything)."""
    return value if isinstance(value, str) and len(value) <= MAX_WIRE and WIRE.fullmatch(value) else None


def differences(ours: str, theirs: str, order: tuple[str, ...]) -> tuple[str, ...] | None:
    """None when the two digests say the same configuration; else the sections whose digests
    differ (empty when none can be named: a collision of the short digests, or other lists)."""
    if ours.split("/")[0] == theirs.split("/")[0]:
        return None
    mine, peer = ours.split("/")[1], theirs.split("/")[1]
    return tuple(name for index, name in enumerate(order)
                 if (index + 1) * SECTION_HEX <= min(len(mine), len(peer))
                 and mine[index * SECTION_HEX:(index + 1) * SECTION_HEX]
                 != peer[index * SECTION_HEX:(index + 1) * SECTION_HEX])
