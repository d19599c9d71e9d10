"""The etcd backend over TLS with a client certificate, and with etcd's user/password
authentication (a token that expires is fetched again), against a real one-member etcd; the
backend built from a cluster file (``quorum.build``); answers of the wrong shape never raise."""

from __future__ import annotations

import asyncio
import http.server
import os
import ssl
import subprocess
import threading
import time

import pytest

from hamirror.cluster.etcd_client import EtcdClient, EtcdError
from hamirror.cluster.etcd_quorum import EtcdWitness
from hamirror.cluster.quorum import build
from hamirror.config import load_cluster
from tests.configfiles import write_cluster
from tests.etcd_cluster import EtcdCluster, needs_etcd

pytestmark = needs_etcd


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def certificates(d: str) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, in ``d``."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", f"{d}/ca.key", "-out", f"{d}/ca.pem", "-days", "1", "-subj", "/CN=t-ca")
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")):
        openssl("req", *ec, "-keyout", f"{d}/{name}.key", "-out", f"{d}/{name}.csr", "-subj", f"/CN={name}")
        with open(f"{d}/{name}.ext", "w") as f:
            f.write(ext + "\n")
        openssl("x509", "-req", "-in", f"{d}/{name}.csr", "-CA", f"{d}/ca.pem", "-CAkey", f"{d}/ca.key",
                "-CAcreateserial", "-out", f"{d}/{name}.pem", "-days", "1", "-extfile", f"{d}/{name}.ext")


@pytest.fixture
def tls_etcd(tmp_path):
    d = str(tmp_path)
    certificates(d)
    health = ssl.create_default_context(cafile=f"{d}/ca.pem")
    health.load_cert_chain(f"{d}/client.pem", f"{d}/client.key")
    cluster = EtcdCluster(os.path.join(d, "etcd"), members=1, scheme="https", tls=health, extra=(
        "--cert-file", f"{d}/server.pem", "--key-file", f"{d}/server.key", "--trusted-ca-file", f"{d}/ca.pem",
        "--client-cert-auth"))
    os.makedirs(cluster.base)
    try:
        yield cluster.start()
    finally:
        cluster.close()


def test_tls_with_a_client_certificate_built_from_the_cluster_file(tls_etcd, tmp_path):
    def node(extra: str) -> EtcdWitness:
        path = write_cluster(tmp_path, {"[heartbeat]": f'[quorum]\netcd = ["{tls_etcd.urls[0]}"]\n'
                                                       f'etcd_ca_file = "ca.pem"\n{extra}\n[heartbeat]'})
        witness = build(load_cluster(path), claim=lambda: True)
        assert isinstance(witness, EtcdWitness)
        return witness

    async def scenario() -> None:
        with_cert = node('etcd_cert_file = "client.pem"\netcd_key_file = "client.key"\n')
        without = node("")
        try:
            assert await with_cert.verdict(0) is True and with_cert.token() is not None
            assert await without.verdict(0) is False
            assert "certificate" in without.status()["error"].lower() or "ssl" in without.status()["error"].lower()
        finally:
            await with_cert.stop()
            await without.stop()

    asyncio.run(scenario())


def test_user_and_password_a_token_that_expires_is_fetched_again(tmp_path):
    cluster = EtcdCluster(str(tmp_path / "etcd"), members=1, extra=("--auth-token-ttl", "1"))
    os.makedirs(cluster.base)
    try:
        cluster.start()
        admin = EtcdClient(cluster.urls, timeout=2)
        admin.call("/v3/auth/role/add", {"name": "root"})
        admin.call("/v3/auth/user/add", {"name": "root", "password": "pw"})
        admin.call("/v3/auth/user/grant", {"user": "root", "role": "root"})
        admin.call("/v3/auth/enable", {})
        with pytest.raises(EtcdError, match="user name is empty|permission denied|token"):
            admin.put("/t/x", "1")                                     # no credentials: refused
        client = EtcdClient(cluster.urls, timeout=2, credentials=("root", "pw"))
        lease, _ = client.grant(5)
        client.put("/t/x", "1", lease)
        first = client.token
        time.sleep(2.5)                                                # the token expires (1 s)
        client.put("/t/x", "2", lease)
        assert client.token != first and client.keepalive(lease) == 5
        with pytest.raises(EtcdError, match="authentication failed"):
            EtcdClient(cluster.urls, timeout=2, credentials=("root", "wrong")).grant(5)
    finally:
        cluster.close()


class Garbage(http.server.BaseHTTPRequestHandler):
    bodies = [b"not json", b"[1, 2]", b'{"header": 7, "ID": "x", "TTL": "y"}', b'{"result": {"TTL": "z"}}',
              b'{"succeeded": true, "header": {"revision": "1"}, "responses": [{"response_range": {"kvs": ["x"]}}]}']
    served = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = self.bodies[Garbage.served % len(self.bodies)]
        Garbage.served += 1
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_answers_of_the_wrong_shape_are_no_answer_never_a_crash():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Garbage)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    async def scenario() -> None:
        n = EtcdWitness(EtcdClient([f"http://127.0.0.1:{server.server_port}"], timeout=1), "/t", "lab", "node1",
                        "node2", interval=0.05, ttl=3)
        try:
            for _ in range(3 * len(Garbage.bodies)):
                assert await n.verdict(0) is False
            assert n.errors > 0 and n.status()["error"]
        finally:
            await n.stop()

    try:
        asyncio.run(scenario())
    finally:
        server.shutdown()
        server.server_close()
