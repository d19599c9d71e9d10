"""``[quorum] etcd``: parsed into typed values, and every mistake named by file, key and problem."""

from __future__ import annotations

import os

from hamirror.config import load_cluster
from tests.configfiles import write_cluster
from tests.test_config_cluster import errors_for


def quorum(text: str) -> dict[str, str]:
    return {"[heartbeat]": f"[quorum]\n{text}\n\n[heartbeat]"}


def test_etcd_endpoints_and_defaults(tmp_path):
    cluster = load_cluster(write_cluster(tmp_path, quorum(
        'etcd = ["http://198.18.0.11:2379", "http://[fd00::1]:2379/"]\netcd_ttl = 6')))
    q = cluster.quorum
    assert q.etcd == ("http://198.18.0.11:2379", "http://[fd00::1]:2379")
    assert (q.etcd_prefix, q.etcd_ttl, q.witness, q.arbiter) == ("/hamirror", 6, None, True)
    assert not cluster.availability_first


def test_etcd_mistakes_name_file_key_and_problem(tmp_path):
    path = str(tmp_path / "hamirror.toml")
    assert errors_for(tmp_path, quorum('etcd = ["198.18.0.11:2379", "ftp://h:1"]\netcd_ttl = 1')) == [
        f"{path}: quorum.etcd[0]: must be http://HOST:PORT or https://HOST:PORT, e.g. "
        "\"https://192.0.2.21:2379\" (got '198.18.0.11:2379')",
        f"{path}: quorum.etcd[1]: must be http://HOST:PORT or https://HOST:PORT, e.g. "
        "\"https://192.0.2.21:2379\" (got 'ftp://h:1')",
        f"{path}: quorum.etcd_ttl: must be an integer from 2 to 3600 (got 1)"]
    assert errors_for(tmp_path, quorum('witness = "198.18.0.254:7402"\netcd = ["http://198.18.0.11:2379"]')) == [
        f"{path}: quorum.etcd: set either quorum.witness or quorum.etcd, not both"]
    assert errors_for(tmp_path, quorum('etcd_ttl = 5')) == [
        f"{path}: quorum.etcd_ttl: has no effect without quorum.etcd"]
    assert errors_for(tmp_path, quorum('etcd = ["http://198.18.0.11:2379"]\netcd_ttl = 2\netcd_prefix = "x"')) == [
        f"{path}: quorum.etcd_prefix: must be a key path starting with '/' (got 'x')",
        f"{path}: quorum.etcd_ttl: too short for heartbeat.interval 0.3: a node believes it holds the key "
        "for a quarter of it, which must outlast two intervals"]


def test_etcd_tls_and_password_file(tmp_path):
    path = str(tmp_path / "hamirror.toml")
    secret = tmp_path / "etcd.pw"
    secret.write_text("s3cret\n")
    os.chmod(secret, 0o644)
    assert errors_for(tmp_path, quorum(
        'etcd = ["http://198.18.0.11:2379"]\netcd_user = "hamirror"\netcd_password_file = "etcd.pw"\n'
        'etcd_cert_file = "nothere.pem"')) == [
        f"{path}: quorum.etcd_cert_file: {tmp_path}/nothere.pem is not a file",
        f"{path}: quorum.etcd_key_file: etcd_cert_file and etcd_key_file go together (a client certificate "
        "and its key)",
        f"{path}: quorum.etcd_password_file: {secret}: the etcd password is accessible by other users "
        "(mode 0644); chmod 600 it",
        f"{path}: quorum.etcd: http://198.18.0.11:2379 is plain HTTP, but quorum.etcd_cert_file is set: use "
        "https:// endpoints (a password or certificate is for TLS connections)"]
    os.chmod(secret, 0o600)
    cluster = load_cluster(write_cluster(tmp_path, quorum(
        'etcd = ["https://198.18.0.11:2379"]\netcd_user = "hamirror"\netcd_password_file = "etcd.pw"')))
    assert cluster.quorum.etcd_password_file == str(secret)
