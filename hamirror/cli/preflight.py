"""What the agent needs beyond a valid configuration: its secrets, checked the way the agent reads them.

``config check`` and ``hamirror agent`` both run these checks, so that a check that says OK
means the agent will start, and an agent that would run without its link or its HTTP API
refuses to start instead. Each problem names the cluster file, the key and what is wrong with
the file the key points to. It lives in the CLI, the one layer that may use the link's keys, the
heartbeat key and the HTTP token loaders together.
"""

from __future__ import annotations

import glob
import os

from hamirror.agent.http import load_token
from hamirror.cluster.heartbeat import load_cluster_key
from hamirror.config.cluster import ClusterConfig
from hamirror.config.errors import ConfigError
from hamirror.link import keys
from hamirror.secretfile import refuse_shared


def _problem(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: cannot read: {exc.strerror}"
    return str(exc)


def check_secrets(cluster: ClusterConfig) -> list[ConfigError]:
    """Problems with the cluster key, this node's CURVE keys and the HTTP token (empty: all good).

    Keys whose value is already reported as wrong (None) are skipped.
    """
    found: list[ConfigError] = []

    def attempt(key: str, load, *args) -> object:
        try:
            return load(*args)
        except (OSError, ValueError, keys.KeyError_) as exc:
            found.append(ConfigError(cluster.path, key, _problem(exc)))
            return None

    if cluster.cluster_key_file is not None:
        attempt("cluster.cluster_key_file", load_cluster_key, cluster.cluster_key_file)
    if cluster.keys_dir is not None:
        for path in sorted(glob.glob(os.path.join(cluster.keys_dir, "*.key_secret"))):
            attempt("cluster.keys_dir", _private, path)
        own = attempt("cluster.keys_dir", keys.load_own, cluster.keys_dir)
        peer = _peer_name(cluster)
        if own is not None and peer is not None:      # the mount expects the peer's key by its name
            attempt("cluster.keys_dir", keys.peer_public_key, cluster.keys_dir, own, peer)
    if cluster.http is not None and cluster.http.token_file is not None:
        attempt("http.token_file", load_token, cluster.http.token_file)
    return found


def _private(path: str) -> None:
    """A CURVE secret key that other local users can read lets them pass for this node on the link."""
    refuse_shared(path, os.stat(path).st_mode, "CURVE secret key")


def _peer_name(cluster: ClusterConfig) -> str | None:
    try:
        return cluster.peer_node.name
    except (ConfigError, StopIteration):
        return None
