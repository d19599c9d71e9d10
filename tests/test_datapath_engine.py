"""The cluster file's ``[link] engine`` reaches the mounts and receivers the agent starts;
``$HAMIRROR_LINK_ENGINE`` in the agent's environment still wins (docs/configuration.md).
Real processes: node1's receiver and node2's FUSE mount of one module, on loopback."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from pathlib import Path

import psutil
import pytest

from hamirror.agent.datapath import DataPath, link_engine
from hamirror.config import load_cluster, load_modules
from hamirror.link import keys
from hamirror.link.client import LinkClient, PeerLost
from tests.configfiles import write_cluster, write_module
from tests.mirror_fixtures import free_port, is_fuse_mounted, wait_for

needs_fuse = pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/fuse"), reason="needs root and FUSE")

LOOPBACK = {'addresses = ["198.18.0.1"]': 'addresses = ["127.0.0.1"]',
            'addresses = ["198.18.0.2"]': 'addresses = ["127.0.0.2"]'}


def _node(tmp_path: Path, node: str, port: int, link: str | None = '[link]\nengine = "stream"\n') -> DataPath:
    """``node``'s data path of module ``app`` (its own directory, state and keys under ``tmp_path/node``)."""
    root = tmp_path / node
    (root / "data").mkdir(parents=True)
    path = write_cluster(root, {**LOOPBACK, 'node = "node1"': f'node = "{node}"',
                                "[heartbeat]": f"{link or ''}\n[heartbeat]"})
    write_module(root, replace={"/srv/app": str(root / "data"), "replication_port = 7410": f"replication_port = {port}",
                                "198.18.0.100/24": "127.0.0.100/8"})
    keys.generate(str(root / "keys"), name=node)
    cluster = load_cluster(path)
    return DataPath(load_modules(cluster)[0], cluster)


def _trust_each_other(tmp_path: Path) -> None:
    for node, peer in (("node1", "node2"), ("node2", "node1")):
        shutil.copy(tmp_path / peer / "keys" / f"{peer}.key", tmp_path / node / "keys")


def _argv(pid: int) -> list[str]:
    """A daemon's command line (one forked by the spawner has empty words after it)."""
    return [word for word in psutil.Process(pid).cmdline() if word]


def _hello(endpoint: str, keys_dir: Path, engine: str) -> str:
    """Whether a client of ``engine`` gets a session with the receiver at ``endpoint``."""
    client = LinkClient(endpoint, str(keys_dir), peer_key_name="node1", engine=engine)
    try:
        client.hello(3.0)
        return "session"
    except PeerLost:
        return "refused"
    finally:
        client.close(0)


@needs_fuse
def test_the_data_path_starts_receiver_and_mount_with_the_configured_engine(tmp_path, monkeypatch):
    monkeypatch.delenv("HAMIRROR_LINK_ENGINE", raising=False)
    port = free_port()
    receiving, mounting = _node(tmp_path, "node1", port), _node(tmp_path, "node2", port)
    _trust_each_other(tmp_path)
    assert (receiving.engine, mounting.engine) == ("stream", "stream")
    data = tmp_path / "node2" / "data"
    try:
        receiving.start_receivers()
        pid = receiving.receiver_pid(0)
        assert _argv(pid)[-2:] == ["--engine", "stream"]
        # The receiver speaks stream, not curve (the engine is never negotiated).
        endpoint = f"tcp://127.0.0.1:{port}"
        assert _hello(endpoint, tmp_path / "node2" / "keys", "stream") == "session"
        assert _hello(endpoint, tmp_path / "node2" / "keys", "curve") == "refused"
        mounting.mount(alone=False)       # connects to a stream receiver: it speaks stream too
        assert mounting.mount_status(0)["state"] == "PRIM"
        assert _argv(mounting.mount_status(0)["pid"])[-2:] == ["--engine", "stream"]
        (data / "file").write_bytes(b"over the stream engine")
        mounting.flush()
        assert (tmp_path / "node1" / "data" / "file").read_bytes() == b"over the stream engine"
    finally:
        with contextlib.suppress(Exception):
            mounting.unmount(force=True)
        if is_fuse_mounted(str(data)):
            subprocess.run(["umount", "-l", str(data)], check=False)
        pid = receiving.receiver_pid(0)
        if pid:
            os.kill(pid, signal.SIGTERM)
            wait_for(lambda: receiving.receiver_pid(0) is None, 20, what="the receiver's exit")


def test_the_engine_comes_from_the_cluster_file_curve_when_absent_and_the_environment_wins(tmp_path, monkeypatch):
    monkeypatch.delenv("HAMIRROR_LINK_ENGINE", raising=False)
    assert _node(tmp_path, "node1", 7410).engine == "stream"
    assert _node(tmp_path / "old", "node1", 7410, link=None).engine == "curve"    # a 0.2.0 configuration
    cluster = load_cluster(str(tmp_path / "node1" / "hamirror.toml"))
    assert link_engine(cluster, {}) == ("stream", f"[link] engine of {cluster.path} (curve when absent)")
    monkeypatch.setenv("HAMIRROR_LINK_ENGINE", "aead")
    assert _node(tmp_path / "env", "node1", 7410).engine == "aead"
    assert link_engine(cluster) == (
        "aead", "$HAMIRROR_LINK_ENGINE in the agent's environment (the cluster file says stream)")
    with pytest.raises(ValueError) as refused:
        link_engine(cluster, {"HAMIRROR_LINK_ENGINE": "tls"})
    assert str(refused.value) == ("HAMIRROR_LINK_ENGINE='tls': the replication link engine must be 'curve', 'aead' "
                                  "or 'stream'")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_a_live_receiver_whose_pid_file_is_lost_is_adopted_not_started_again(tmp_path, monkeypatch):
    """Campaign 4003: the agent took node1's live receiver for dead (its pid file's check failed)
    and started another every tick, each exiting on the log's lock. Now it adopts the live one."""
    monkeypatch.delenv("HAMIRROR_LINK_ENGINE", raising=False)
    receiving = _node(tmp_path, "node1", free_port())
    try:
        receiving.start_receivers()
        pid = receiving.receiver_pid(0)
        pid_file = receiving._receiver_file(0)
        with open(pid_file, "w") as f:
            f.write('{"pid": %d, "create_time": 1.0}' % pid)     # a check that fails for the live process
        assert receiving.receiver_pid(0) is None
        receiving.start_receivers()
        assert receiving.receiver_pid(0) == pid
        state_dir = receiving.dir_states[0]
        assert _receivers_of(state_dir) == [pid]                      # no second one
    finally:
        for pid in _receivers_of(receiving.dir_states[0]):             # every one, even on failure
            os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not _receivers_of(receiving.dir_states[0]), 20, what="the receivers' exit")


def _receivers_of(state_dir: str) -> list[int]:
    return [p.pid for p in psutil.process_iter(["cmdline"]) if state_dir in (p.info["cmdline"] or [])]
