"""The cluster file: every check names the file, the key and the problem."""

from __future__ import annotations

import os
import socket

import pytest

from hamirror.config import ConfigError, check, config_path, load_cluster
from tests.configfiles import CLUSTER, edit, messages, write_cluster, write_module


def errors_for(tmp_path, replace=None, text=None) -> list[str]:
    return messages(check(write_cluster(tmp_path, replace, text)))


def test_valid_cluster_file_is_parsed_into_typed_values(tmp_path):
    path = write_cluster(tmp_path, {'[heartbeat]': '[quorum]\nwitness = "198.18.0.254:7402"\n\n'
                                                   '[http]\nlisten = "127.0.0.1:9453"\n\n[heartbeat]'})
    cluster = load_cluster(path)
    assert cluster.name == "lab"
    assert cluster.modules_dir == str(tmp_path / "modules")  # relative to the cluster file
    assert cluster.module_run_dir("demo") == str(tmp_path / "run" / "modules" / "demo")
    assert (cluster.heartbeat.port, cluster.heartbeat.interval, cluster.heartbeat.timeout) == (7401, 0.3, 2.0)
    assert cluster.quorum.witness_endpoint == ("198.18.0.254", 7402)
    assert cluster.http is not None and cluster.http.endpoint == ("127.0.0.1", 9453)
    assert cluster.local_node.name == "node1"
    assert cluster.peer_node.name == "node2"
    assert cluster.peer_node.replication_address == "198.18.0.2"


def test_defaults_apply_when_optional_sections_are_absent(tmp_path):
    text = edit(CLUSTER, {"[heartbeat]\nport = 7401\ninterval = 0.3\ntimeout = 2.0\n": "",
                          'keys_dir = "keys"\n': ""})
    cluster = load_cluster(write_cluster(tmp_path, text=text))
    assert (cluster.heartbeat.interval, cluster.heartbeat.timeout, cluster.http) == (0.3, 2.0, None)
    assert cluster.keys_dir == "/etc/hamirror/keys"
    assert cluster.quorum.witness is None


def test_unreadable_file(tmp_path):
    missing = str(tmp_path / "none.toml")
    assert messages(check(missing)) == [f"{missing}: cannot read: No such file or directory"]
    with pytest.raises(ConfigError) as raised:
        load_cluster(missing)
    assert (raised.value.file, raised.value.key) == (missing, None)


def test_toml_syntax_error_gives_the_line(tmp_path):
    path = write_cluster(tmp_path, {'name = "lab"': "name = "})
    assert messages(check(path)) == [f"{path}: line 2, column 8: TOML syntax error: Invalid value"]


def test_unknown_keys_are_named_at_every_level(tmp_path):
    path = str(tmp_path / "hamirror.toml")
    assert errors_for(tmp_path, {"[heartbeat]": "[heartbeats]\nport = 1\n\n[heartbeat]",
                                 'node = "node1"': 'node = "node1"\nnmae = "x"',
                                 'addresses = ["198.18.0.2"]': 'addresses = ["198.18.0.2"]\nadress = "x"'}) == [
        f"{path}: heartbeats: unknown section (expected one of: cluster, fence, heartbeat, http, link, nodes, notify, quorum)",
        f"{path}: cluster.nmae: unknown key (expected one of: cluster_key_file, keys_dir, modules_dir, name, "
        "node, run_dir, state_dir)",
        f"{path}: nodes[1].adress: unknown key (expected one of: addresses, name)",
    ]


def test_wrong_types_and_missing_keys(tmp_path):
    path = str(tmp_path / "hamirror.toml")
    assert errors_for(tmp_path, {"port = 7401": 'port = "7401"', "interval = 0.3": "interval = true",
                                 'name = "lab"\n': "", 'addresses = ["198.18.0.1"]': 'addresses = "198.18.0.1"'}) == [
        f"{path}: cluster.name: missing required key",
        f"{path}: heartbeat.port: must be an integer, not a string",
        f"{path}: heartbeat.interval: must be a number, not a boolean",
        f"{path}: nodes[0].addresses: must be an array, not a string",
    ]


def test_a_section_that_is_not_a_table(tmp_path):
    text = CLUSTER.replace("[heartbeat]\nport = 7401\ninterval = 0.3\ntimeout = 2.0\n", "").replace(
        "[cluster]", "heartbeat = 3\n[cluster]")
    path = write_cluster(tmp_path, text=text)
    assert messages(check(path)) == [f"{path}: heartbeat: must be a table ([heartbeat]), not an integer"]


def test_exactly_two_nodes(tmp_path):
    path = str(tmp_path / "hamirror.toml")
    one = CLUSTER[:CLUSTER.rindex("[[nodes]]")]
    assert errors_for(tmp_path, text=one) == [f"{path}: nodes: must list exactly two nodes ([[nodes]] tables), found 1"]
    three = CLUSTER + '\n[[nodes]]\nname = "node3"\naddresses = ["198.18.0.3"]\n'
    assert errors_for(tmp_path, text=three) == [
        f"{path}: nodes: must list exactly two nodes ([[nodes]] tables), found 3"]


def test_duplicate_node_names_and_addresses(tmp_path):
    path = str(tmp_path / "hamirror.toml")
    assert errors_for(tmp_path, {'name = "node2"': 'name = "node1"', '["198.18.0.2"]': '["198.18.0.1"]'}) == [
        f"{path}: nodes[1].name: duplicate node name 'node1'",
        f"{path}: nodes[1].addresses: address 198.18.0.1 is also used by node 'node1'",
    ]


def test_addresses_must_be_ips_every_bad_one_is_reported(tmp_path):
    path = str(tmp_path / "hamirror.toml")
    assert errors_for(tmp_path, {'["198.18.0.1"]': '["node1.example", "10.0.0.1", "10.0.0.300"]',
                                 '["198.18.0.2"]': '["198.18.0.2", "10.0.0.2", "10.0.0.3"]'}) == [
        f"{path}: nodes[0].addresses[0]: must be an IP address (got 'node1.example')",
        f"{path}: nodes[0].addresses[2]: must be an IP address (got '10.0.0.300')"]


def test_nodes_have_one_address_per_heartbeat_network(tmp_path):
    path = str(tmp_path / "hamirror.toml")
    assert errors_for(tmp_path, {'["198.18.0.2"]': '["198.18.0.2", "10.1.0.2"]'}) == [
        f"{path}: nodes[1].addresses: must have as many addresses as node 'node1' (1): one per heartbeat network"]


def test_heartbeat_timeout_must_exceed_interval(tmp_path):
    path = str(tmp_path / "hamirror.toml")
    assert errors_for(tmp_path, {"timeout = 2.0": "timeout = 0.3"}) == [
        f"{path}: heartbeat.timeout: must be a number greater than heartbeat.interval (0.3)"]


def test_endpoints_must_be_ip_and_port(tmp_path):
    path = str(tmp_path / "hamirror.toml")
    assert errors_for(tmp_path, {"[heartbeat]": '[quorum]\nwitness = "witness:7402"\n\n[heartbeat]'}) == [
        f"{path}: quorum.witness: must be IP:PORT, e.g. \"192.0.2.10:7402\" (got 'witness:7402')"]   # not the HTTP port


def test_local_node_must_be_one_of_the_two(tmp_path):
    path = str(tmp_path / "hamirror.toml")
    assert errors_for(tmp_path, {'node = "node1"': 'node = "node3"'}) == [
        f"{path}: cluster.node: this node 'node3' (cluster.node) is not one of the cluster's nodes: node1, node2"]


def test_local_node_defaults_to_the_host_name(tmp_path):
    host = socket.gethostname()
    path = str(tmp_path / "hamirror.toml")
    assert errors_for(tmp_path, {'node = "node1"\n': ""}) == [
        f"{path}: cluster.node: this node {host!r} (the host name) is not one of the cluster's nodes: node1, node2"]
    cluster = load_cluster(write_cluster(tmp_path, {'node = "node1"\n': "", '"node2"': repr(host).replace("'", '"')}))
    assert (cluster.local_node.name, cluster.peer_node.name) == (host, "node1")


def test_modules_dir_must_exist(tmp_path):
    """Finding (issue 17): the quick start never made /etc/hamirror/modules; the check must say
    how to make it, not only that something is wrong."""
    path = write_cluster(tmp_path, {'modules_dir = "modules"': 'modules_dir = "nowhere"'})
    assert messages(check(path)) == [f"{path}: cluster.modules_dir: {tmp_path}/nowhere does not exist (create it: "
                                     f"mkdir -p {tmp_path}/nowhere; 'hamirror module new' puts modules there)"]
    (tmp_path / "nowhere").write_text("")
    assert messages(check(path)) == [f"{path}: cluster.modules_dir: {tmp_path}/nowhere is not a directory"]


def test_modules_dir_defaults_to_etc_hamirror_modules(tmp_path):
    path = write_cluster(tmp_path, {'modules_dir = "modules"\n': ""})
    if os.path.isdir("/etc/hamirror/modules"):
        pytest.skip("this machine has /etc/hamirror/modules")
    assert f"{path}: cluster.modules_dir: /etc/hamirror/modules does not exist (create it: mkdir -p " \
           "/etc/hamirror/modules; 'hamirror module new' puts modules there)" in messages(check(path))


def test_check_reports_every_problem_of_every_file(tmp_path):
    path = write_cluster(tmp_path, {"timeout = 2.0": "timeout = 0.1"})
    write_module(tmp_path, replace={"replication_port = 7410": "replication_port = 0"})
    assert messages(check(path)) == [
        f"{path}: heartbeat.timeout: must be a number greater than heartbeat.interval (0.3)",
        f"{tmp_path}/modules/app/module.toml: module.replication_port: must be an integer from 1 to 65535 (got 0)",
    ]
    with pytest.raises(ConfigError, match=r"heartbeat\.timeout"):
        load_cluster(path)


def test_config_path_lookup_order(monkeypatch):
    monkeypatch.setenv("HAMIRROR_CONFIG", "/from/env.toml")
    assert config_path("/from/cli.toml") == "/from/cli.toml"
    assert config_path(None) == "/from/env.toml"
    monkeypatch.delenv("HAMIRROR_CONFIG")
    assert config_path(None) == "/etc/hamirror/hamirror.toml"


def test_http_off_loopback_needs_a_token_file(tmp_path):
    path = str(tmp_path / "hamirror.toml")
    assert errors_for(tmp_path, {"[heartbeat]": '[http]\nlisten = "0.0.0.0:9453"\n\n[heartbeat]'}) == [
        f"{path}: http.token_file: required when http.listen is not a loopback address (got 0.0.0.0:9453): "
        "the status API would be open to the network"]
    cluster = load_cluster(write_cluster(tmp_path, {"[heartbeat]": '[http]\nlisten = "[::]:9453"\n'
                                                                    'token_file = "http.token"\n\n[heartbeat]'}))
    assert cluster.http is not None and cluster.http.token_file == str(tmp_path / "http.token")
    assert not cluster.http.loopback
    assert load_cluster(write_cluster(tmp_path, {"[heartbeat]": '[http]\nlisten = "[::1]:9453"\n\n[heartbeat]'})
                        ).http.loopback


def test_fence_table(tmp_path):
    from hamirror.config import load_cluster
    from hamirror.config.loader import check
    script = tmp_path / "fence.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    path = tmp_path / "c.toml"
    base = ('[cluster]\nname = "c"\nnode = "a"\nmodules_dir = "."\n[[nodes]]\nname = "a"\naddresses = ["198.18.0.1"]\n'
            '[[nodes]]\nname = "b"\naddresses = ["198.18.0.2"]\n')
    path.write_text(base + f'[fence]\nscript = "{script}"\ntakeover_delay = 1.5\n')
    cluster = load_cluster(str(path))
    assert cluster.fence.script == str(script) and cluster.fence.takeover_delay == 1.5
    assert cluster.fence.block_timeout == 60.0 and not cluster.availability_first
    path.write_text(base + '[fence]\nscript = "missing.sh"\ntakeover_delay = -1\n')
    problems = {str(e) for e in check(str(path))}
    assert f"{path}: fence.takeover_delay: must be a number of seconds, 0 or more" in problems
    assert f"{path}: fence.script: {tmp_path}/missing.sh is not an executable file" in problems


def test_console_actions_is_a_boolean_and_needs_a_token(tmp_path):
    path = str(tmp_path / "hamirror.toml")
    http = '[http]\nlisten = "127.0.0.1:9453"\nconsole_actions = {}\n\n[heartbeat]'
    assert errors_for(tmp_path, {"[heartbeat]": http.format('"yes"')}) == [
        f"{path}: http.console_actions: must be true or false, not a string"]
    assert errors_for(tmp_path, {"[heartbeat]": http.format("true")}) == [
        f"{path}: http.console_actions: true needs http.token_file: the console's commands are token-authenticated"]
    assert load_cluster(write_cluster(tmp_path, {"[heartbeat]": http.format("false")})).http.console_actions is False


def test_link_engine_absent_is_curve_as_in_0_2_0(tmp_path):
    """A configuration written for 0.2.0 (or kept through an upgrade) has no [link]: curve, the
    only engine a 0.2.0 peer speaks."""
    assert load_cluster(write_cluster(tmp_path)).link.engine == "curve"


@pytest.mark.parametrize("engine", ["curve", "aead", "stream"])
def test_link_engine_is_read(tmp_path, engine):
    path = write_cluster(tmp_path, {"[heartbeat]": f'[link]\nengine = "{engine}"\n\n[heartbeat]'})
    assert load_cluster(path).link.engine == engine


def test_link_engine_problems_name_file_key_and_problem(tmp_path):
    path = str(tmp_path / "hamirror.toml")
    assert errors_for(tmp_path, {"[heartbeat]": '[link]\nengine = "tls"\nengin = "aead"\n\n[heartbeat]'}) == [
        f"{path}: link.engin: unknown key (expected one of: engine)",
        f"{path}: link.engine: must be one of curve, aead, stream (got 'tls')",
    ]
    assert errors_for(tmp_path, {"[heartbeat]": "[link]\nengine = 1\n\n[heartbeat]"}) == [
        f"{path}: link.engine: must be a string, not an integer"]
