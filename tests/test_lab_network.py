"""The lab's network, for real: addresses, reachability, no way out, partitions (needs root)."""

from __future__ import annotations

import subprocess

import pytest

from hamirror.lab.naming import ADDRESSES, hosts_for
from hamirror.lab.testing import temporary_lab, unavailable

pytestmark = [pytest.mark.root, pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))]


def _host_view() -> tuple[str, str, str]:
    """The machine's own interfaces, addresses and firewall tables (must not change)."""
    def out(*cmd: str) -> str:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    links = sorted(line.split(":")[1].split("@")[0].strip() for line in out("ip", "-o", "link", "show").splitlines())
    return " ".join(links), out("ip", "-o", "addr", "show"), out("nft", "list", "tables")


@pytest.fixture(scope="module")
def host_before():
    return _host_view()


@pytest.fixture(scope="module")
def lab(tmp_path_factory, host_before):
    with temporary_lab(str(tmp_path_factory.mktemp("netlab")), "--witness") as lab:
        yield lab
    assert _host_view() == host_before


def test_every_host_has_its_address_on_eth0_and_no_default_route(lab):
    for host in hosts_for(witness=True):               # this lab's hosts (no --etcd: no etcd hosts)
        address = ADDRESSES[host]
        shown = lab.sh(host, "ip -o -4 addr show dev eth0")
        assert f"inet {address}/24" in shown
        routes = lab.sh(host, "ip -4 route; ip -6 route")
        assert "default" not in routes
        assert lab.sh(host, "ip -4 route").split()[0] == "198.18.0.0/24"


def test_nodes_and_client_reach_each_other(lab):
    pairs = [("node1", "node2"), ("node2", "node1"), ("client", "node1"), ("client", "node2"),
             ("node1", "client"), ("witness", "node2")]
    for src, dst in pairs:
        assert lab.probe(src, ADDRESSES[dst]) == "reachable", f"{src} -> {dst}"


def test_a_real_tcp_exchange_crosses_the_bridge(lab):
    server = "import socket; s=socket.create_server(('198.18.0.2', 7777)); c,_=s.accept(); c.sendall(c.recv(64).upper())"
    proc = subprocess.Popen(lab.cli_command("exec", "node2", "--", "python3", "-c", server))
    try:
        client = ("import socket,time\nfor _ in range(50):\n  try: c=socket.create_connection(('198.18.0.2',7777),1); break\n"
                  "  except OSError: time.sleep(0.1)\nc.sendall(b'ping'); print(c.recv(64).decode())")
        assert lab.exec("client", "python3", "-c", client).stdout.strip() == "PING"
    finally:
        proc.wait(timeout=10)
    assert proc.returncode == 0


def test_nothing_of_the_lab_is_in_the_host_namespace(lab, host_before):
    assert _host_view() == host_before
    assert lab.paths.prefix not in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout


def test_partition_cuts_the_two_nodes_only_and_heal_restores(lab):
    cut = lab.cli("partition", "node1", "node2")
    try:
        assert cut.returncode == 0, cut.stderr
        assert lab.probe("node1", ADDRESSES["node2"]) == "cut"
        assert lab.probe("node2", ADDRESSES["node1"]) == "cut"
        assert lab.probe("client", ADDRESSES["node1"]) == "reachable"
        assert lab.probe("client", ADDRESSES["node2"]) == "reachable"
        assert "partitions: node1-node2" in lab.cli("status").stdout
        assert "hamirror_lab" not in _host_view()[2]
    finally:
        healed = lab.cli("heal")
    assert healed.returncode == 0, healed.stderr
    assert lab.probe("node1", ADDRESSES["node2"]) == "reachable"
    assert "partitions" not in lab.cli("status").stdout


def test_partition_refuses_unknown_hosts(lab):
    result = lab.cli("partition", "node1", "nodeX")
    assert result.returncode == 1
    assert "unknown host 'nodeX'" in result.stderr
