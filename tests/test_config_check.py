"""``config check`` says what the agent will refuse, and a problem never hides another.

The secrets (cluster key, CURVE keys, HTTP token) through the real CLI; the loader's
reporting of lists, templates and node names in process.
"""

from __future__ import annotations

import os

import pytest

from hamirror.config import check
from tests.configfiles import messages, write_cluster, write_module, write_secrets
from tests.conftest import run_cli
from tests.test_agent_http import TOKEN, write_token

HTTP = {"[heartbeat]": '[http]\nlisten = "127.0.0.1:9453"\ntoken_file = "http.token"\n\n[heartbeat]'}


def ready(tmp_path) -> str:
    """A valid cluster file with one module, its secrets and an HTTP token file."""
    path = write_cluster(tmp_path, HTTP)
    write_module(tmp_path)
    write_secrets(tmp_path)
    write_token(tmp_path)
    return path


def test_check_ok_with_every_secret_in_place(tmp_path):
    result = run_cli("config", "check", "-c", ready(tmp_path))
    assert (result.returncode, result.stdout) == (0, "OK: cluster lab, 1 module(s): app\n")
    assert "warning: neither [quorum] witness nor [fence] script" in result.stderr


@pytest.mark.parametrize("case, key, problem", [
    ("token 0644", "http.token_file",
     "{root}/http.token: token file is accessible by other users (mode 0644); chmod 600 it"),
    ("token missing", "http.token_file", "{root}/http.token: cannot read: No such file or directory"),
    ("no secret key", "cluster.keys_dir",
     "{root}/keys: no secret key found (run 'hamirror keygen --keys {root}/keys')"),
    ("no peer key", "cluster.keys_dir", "{root}/keys: no public key node2.key for the peer"),
    ("8-byte cluster key", "cluster.cluster_key_file",
     "{root}/cluster.key: cluster key has 8 bytes, needs 32 to 4096 (make one with: head -c 32 /dev/urandom)"),
    ("cluster key 0644", "cluster.cluster_key_file",
     "{root}/cluster.key: cluster key is accessible by other users (mode 0644); chmod 600 it"),
    ("cluster key 0640", "cluster.cluster_key_file",
     "{root}/cluster.key: cluster key is accessible by other users (mode 0640); chmod 600 it"),
    ("secret key 0644", "cluster.keys_dir",
     "{root}/keys/node1.key_secret: CURVE secret key is accessible by other users (mode 0644); chmod 600 it"),
    ("secret key 0640", "cluster.keys_dir",
     "{root}/keys/node1.key_secret: CURVE secret key is accessible by other users (mode 0640); chmod 600 it"),
])
def test_check_fails_where_the_agent_would(tmp_path, case, key, problem):
    """Finding: each of these said OK, then the agent failed (or ran without its HTTP API).
    Finding (issue 17): a CURVE secret key readable by other users said OK (anyone on the node
    could pass for it on the replication link)."""
    path = ready(tmp_path)
    if case == "token 0644":
        os.chmod(tmp_path / "http.token", 0o644)
    elif case == "token missing":
        os.remove(tmp_path / "http.token")
    elif case == "no secret key":
        os.remove(tmp_path / "keys" / "node1.key_secret")
    elif case == "no peer key":
        os.remove(tmp_path / "keys" / "node2.key")
    elif case == "8-byte cluster key":
        (tmp_path / "cluster.key").write_bytes(os.urandom(8))
    elif case.startswith("secret key"):
        os.chmod(tmp_path / "keys" / "node1.key_secret", int(case[-4:], 8))
    else:
        os.chmod(tmp_path / "cluster.key", int(case[-4:], 8))
    expected = f"{path}: {key}: {problem.format(root=tmp_path)}"
    result = run_cli("config", "check", "-c", path)
    assert (result.returncode, result.stdout, result.stderr) == (2, "", expected + "\n")
    if case.startswith("token"):          # the agent refuses to start rather than run without its API
        agent = run_cli("agent", "-c", path, timeout=30)
        assert (agent.returncode, agent.stderr) == (2, f"hamirror: cannot start the agent:\n{expected}\n")


def test_module_checks_run_even_when_the_cluster_file_has_errors(tmp_path):
    """Finding: a bad node address skipped every check of the modules against the cluster."""
    path = write_cluster(tmp_path, {'["198.18.0.1"]': '["node1.example", "10.0.0.1", "nope"]',
                                    '["198.18.0.2"]': '["198.18.0.2", "10.0.0.2", "10.0.0.3"]'})
    write_module(tmp_path, replace={'default_primary = "node1"': 'default_primary = "node9"',
                                    '"198.18.0.100/24"': '"10.9.9.9/24"'},
                 scripts={"stop_second": "#!/bin/sh\n{{ nope }}\n"})
    app = f"{tmp_path}/modules/app"
    assert messages(check(path)) == [
        f"{path}: nodes[0].addresses[0]: must be an IP address (got 'node1.example')",     # every bad item
        f"{path}: nodes[0].addresses[2]: must be an IP address (got 'nope')",
        f"{app}/module.toml: module.default_primary: must be one of the cluster's nodes: node1, node2 (got 'node9')",
        f"{app}/module.toml: vip.address: network 10.9.9.0/24 does not contain 198.18.0.2, the first address "
        f"of node 'node2'",
        f"{app}/stop_second: line 2: cannot render: 'nope' is undefined",
    ]


@pytest.mark.parametrize("replace", [{'name = "app"': 'name = "App!"'}, {'"198.18.0.100/24"': '"bad"'},
                                     {'interface = "eth0"': 'interface = ""'}])
def test_template_errors_are_not_hidden_by_another_problem_of_the_module(tmp_path, replace):
    path = write_cluster(tmp_path)
    write_module(tmp_path, replace=replace, scripts={"start_prim": "#!/bin/sh\n{{ vip }}\n{% if %}\n"})
    os.chmod(tmp_path / "modules" / "app" / "start_prim", 0o644)        # not executable: still rendered
    problems = messages(check(path))
    assert len(problems) == 3, problems
    assert problems[1:] == [f"{tmp_path}/modules/app/start_prim: script is not executable "
                            f"(chmod +x {tmp_path}/modules/app/start_prim)",
                            f"{tmp_path}/modules/app/start_prim: line 3: cannot render: Expected an expression, "
                            f"got 'end of statement block'"]


def test_duplicate_node_names_are_said_once_as_such(tmp_path):
    path = write_cluster(tmp_path, {'name = "node2"': 'name = "node1"', '["198.18.0.2"]': '["198.18.0.3"]'})
    write_module(tmp_path, replace={'default_primary = "node1"': 'default_primary = "node2"'})
    problems = messages(check(path))
    assert problems[0] == f"{path}: nodes[1].name: duplicate node name 'node1'"
    assert not any("node1, node1" in problem for problem in problems), problems
