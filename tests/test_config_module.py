"""Module folders: every check of module.toml and its scripts, with the exact message."""

from __future__ import annotations

import os

import pytest

from hamirror.config import ConfigError, check, load_cluster, load_modules
from tests.configfiles import messages, write_cluster, write_module


@pytest.fixture
def cluster_path(tmp_path) -> str:
    return write_cluster(tmp_path)


def module_errors(tmp_path, cluster_path, **module) -> list[str]:
    write_module(tmp_path, **module)
    return messages(check(cluster_path))


def toml_of(tmp_path, folder: str = "app") -> str:
    return f"{tmp_path}/modules/{folder}/module.toml"


def test_valid_module_is_parsed(tmp_path, cluster_path):
    write_module(tmp_path)
    write_module(tmp_path, "zeta", name="zeta", replace={"7410": "7411", "/srv/app": "/srv/zeta",
                                                         "198.18.0.100/24": "198.18.0.101/24"})
    modules = load_modules(load_cluster(cluster_path))
    assert [module.name for module in modules] == ["app", "zeta"]
    app = modules[0]
    assert (app.mode, app.replication_port, app.peer_timeout, app.default_primary) == ("sync", 7410, 3.0, "node1")
    assert [directory.path for directory in app.directories] == ["/srv/app"]
    assert app.vip is not None and (app.vip.ip, app.vip.prefixlen, app.vip.interface) == ("198.18.0.100", 24, "eth0")
    assert app.checkers[0].type == "tcp" and app.checkers[0].port == 8080 and app.checkers[0].host == "{{ vip_ip }}"
    assert (app.scripts.timeout, app.restart.max_restarts, app.restart.window) == (30.0, 3, 300.0)
    assert dict(app.vars) == {"port": 8080}
    assert app.script_path("start_prim") == f"{tmp_path}/modules/app/start_prim"


def test_load_modules_raises_the_first_problem(tmp_path, cluster_path):
    write_module(tmp_path, replace={'"node1"': '"node9"'})
    with pytest.raises(ConfigError) as raised:
        load_modules(load_cluster(cluster_path))
    assert str(raised.value) == (f"{toml_of(tmp_path)}: module.default_primary: "
                                 "must be one of the cluster's nodes: node1, node2 (got 'node9')")


def test_module_name_must_be_valid_and_match_its_folder(tmp_path, cluster_path):
    assert module_errors(tmp_path, cluster_path, name="App!") == [
        f"{toml_of(tmp_path)}: module.name: must be lowercase letters, digits, '_' or '-' (got 'App!')"]
    assert module_errors(tmp_path, cluster_path, name="other") == [
        f"{toml_of(tmp_path)}: module.name: must match the folder name 'app' (got 'other')"]


def test_module_names_and_replication_ports_are_unique(tmp_path, cluster_path):
    write_module(tmp_path, "app")
    write_module(tmp_path, "bpp", name="app", replace={"/srv/app": "/srv/bpp"})
    assert messages(check(cluster_path)) == [
        f"{toml_of(tmp_path, 'bpp')}: module.name: must match the folder name 'bpp' (got 'app')",
        f"{toml_of(tmp_path, 'bpp')}: module.name: duplicate module name 'app' (also in {toml_of(tmp_path)})",
        f"{toml_of(tmp_path, 'bpp')}: module.replication_port: port 7410 is also used by module 'app'",
        f"{toml_of(tmp_path, 'bpp')}: vip.address: 198.18.0.100 is also the VIP of module 'app': each module "
        "needs its own VIP (the modules may run on different nodes)",
    ]


TWO_DIRS = {'[[directories]]\npath = "/srv/bpp"\n': '[[directories]]\npath = "/srv/bpp"\n\n'
                                                   '[[directories]]\npath = "/srv/bpp2"\n'}


@pytest.mark.parametrize("port, expected", [
    (7409, "ports 7409-7410 overlap port 7410 of module 'app'"),      # bpp's second directory uses 7410
    (7410, "ports 7410-7411 overlap port 7410 of module 'app'"),
])
def test_replication_port_ranges_must_not_overlap(tmp_path, cluster_path, port, expected):
    """Finding (issue 17): a module with two directories also listens on the next port, and
    config check said OK to another module on that port; the agent then failed to bind."""
    write_module(tmp_path, "app")
    write_module(tmp_path, "bpp", name="bpp", replace={"/srv/app": "/srv/bpp", "7410": str(port),
                                                       "198.18.0.100/24": "198.18.0.101/24", **TWO_DIRS})
    assert messages(check(cluster_path)) == [
        f"{toml_of(tmp_path, 'bpp')}: module.replication_port: {expected} "
        "(a module uses one port per directory, from replication_port on)"]


def test_adjacent_port_ranges_are_accepted_and_the_last_port_is_65535(tmp_path, cluster_path):
    write_module(tmp_path, "app", replace={"7410": "7412"})
    write_module(tmp_path, "bpp", name="bpp", replace={"/srv/app": "/srv/bpp", "198.18.0.100/24": "198.18.0.101/24",
                                                       **TWO_DIRS})
    assert messages(check(cluster_path)) == []
    write_module(tmp_path, "bpp", name="bpp", replace={"/srv/app": "/srv/bpp", "7410": "65535",
                                                       "198.18.0.100/24": "198.18.0.101/24", **TWO_DIRS})
    assert messages(check(cluster_path)) == [
        f"{toml_of(tmp_path, 'bpp')}: module.replication_port: 2 directories need ports 65535-65536, past 65535 "
        "(one port per directory)"]


def test_two_modules_may_not_share_a_vip(tmp_path, cluster_path):
    """Finding (issue 17): config check said OK; the module that stopped second removed the
    other's address."""
    write_module(tmp_path, "app")
    write_module(tmp_path, "bpp", name="bpp", replace={"/srv/app": "/srv/bpp", "7410": "7411",
                                                       "198.18.0.100/24": "198.18.0.100/25"})
    assert messages(check(cluster_path)) == [
        f"{toml_of(tmp_path, 'bpp')}: vip.address: 198.18.0.100 is also the VIP of module 'app': each module "
        "needs its own VIP (the modules may run on different nodes)"]


def test_directories_are_absolute_and_not_nested(tmp_path, cluster_path):
    two = '[[directories]]\npath = "/srv/app"\n\n[[directories]]\npath = "/srv/app/sub/"\n'
    assert module_errors(tmp_path, cluster_path, replace={'[[directories]]\npath = "/srv/app"\n': two}) == [
        f"{toml_of(tmp_path)}: directories[1].path: /srv/app/sub overlaps /srv/app (directories[0].path): "
        "directories must not be the same or nested"]
    assert module_errors(tmp_path, cluster_path, replace={'"/srv/app"': '"srv/app"'}) == [
        f"{toml_of(tmp_path)}: directories[0].path: must be an absolute path (got 'srv/app')"]
    assert module_errors(tmp_path, cluster_path, replace={'[[directories]]\npath = "/srv/app"\n': ""}) == [
        f"{toml_of(tmp_path)}: directories: at least one [[directories]] table is required"]


def test_directories_are_not_shared_between_modules(tmp_path, cluster_path):
    write_module(tmp_path)
    write_module(tmp_path, "web", name="web", replace={"7410": "7411", '"/srv/app"': '"/srv/app/www"',
                                                       "198.18.0.100/24": "198.18.0.101/24"})
    assert messages(check(cluster_path)) == [
        f"{toml_of(tmp_path, 'web')}: directories[0].path: /srv/app/www overlaps /srv/app of module 'app'"]


def test_mode_and_default_primary(tmp_path, cluster_path):
    assert module_errors(tmp_path, cluster_path, replace={
        'default_primary = "node1"': 'default_primary = "node3"\nmode = "semi"'}) == [
        f"{toml_of(tmp_path)}: module.mode: must be one of sync, barrier, async (got 'semi')",
        f"{toml_of(tmp_path)}: module.default_primary: must be one of the cluster's nodes: node1, node2 (got 'node3')",
    ]


def test_scripts_must_exist_and_be_executable(tmp_path, cluster_path):
    folder = write_module(tmp_path, scripts={"stop_second": None})
    os.chmod(folder / "start_second", 0o644)
    assert messages(check(cluster_path)) == [
        f"{folder}/start_second: script is not executable (chmod +x {folder}/start_second)",
        f"{folder}/stop_second: script is missing",
    ]


def test_vip_must_be_an_interface_address(tmp_path, cluster_path):
    assert module_errors(tmp_path, cluster_path, replace={'"198.18.0.100/24"': '"198.18.0.100"'}) == [
        f'{toml_of(tmp_path)}: vip.address: must be an address with its prefix length, e.g. "198.18.0.100/24" '
        "(got '198.18.0.100')"]
    assert module_errors(tmp_path, cluster_path, replace={'"198.18.0.100/24"': '"198.18.0.255/24"'}) == [
        f"{toml_of(tmp_path)}: vip.address: 198.18.0.255 is the network or broadcast address of 198.18.0.0/24"]
    assert module_errors(tmp_path, cluster_path, replace={'"eth0"': '"eth0/1"'}) == [
        f"{toml_of(tmp_path)}: vip.interface: must be a network interface name (got 'eth0/1')"]


def test_vip_network_must_contain_each_nodes_first_address(tmp_path, cluster_path):
    assert module_errors(tmp_path, cluster_path, replace={'"198.18.0.100/24"': '"198.18.0.101/30"'}) == [
        f"{toml_of(tmp_path)}: vip.address: network 198.18.0.100/30 does not contain 198.18.0.1, "
        "the first address of node 'node1'",
        f"{toml_of(tmp_path)}: vip.address: network 198.18.0.100/30 does not contain 198.18.0.2, "
        "the first address of node 'node2'",
    ]
    assert module_errors(tmp_path, cluster_path, replace={'"198.18.0.100/24"': '"198.18.0.2/24"'}) == [
        f"{toml_of(tmp_path)}: vip.address: 198.18.0.2 is the address of node 'node2'"]


def test_checker_type_and_keys(tmp_path, cluster_path):
    assert module_errors(tmp_path, cluster_path, replace={'type = "tcp"': 'type = "http"'}) == [
        f"{toml_of(tmp_path)}: checkers[0].type: must be one of process, tcp, interface, script (got 'http')"]
    assert module_errors(tmp_path, cluster_path, replace={"port = 8080\n\n[vars]": "\n[vars]"}) == [
        f"{toml_of(tmp_path)}: checkers[0].port: missing required key"]
    assert module_errors(tmp_path, cluster_path, replace={
        'type = "tcp"\nname = "port"\nhost = "{{ vip_ip }}"\nport = 8080': 'type = "process"\nhost = "x"'}) == [
        f"{toml_of(tmp_path)}: checkers[0].host: unknown key (expected one of: cmdline_contains, interval, name, "
        "process, timeout, type)",
        f"{toml_of(tmp_path)}: checkers[0].process: a process checker needs process or cmdline_contains",
    ]
    assert module_errors(tmp_path, cluster_path, replace={
        'type = "tcp"\nname = "port"\nhost = "{{ vip_ip }}"\nport = 8080': 'type = "script"\npath = "probe"'}) == [
        f"{toml_of(tmp_path)}: checkers[0].path: {tmp_path}/modules/app/probe is not an executable file"]


def test_templates_that_fail_to_render_name_the_script_and_line(tmp_path, cluster_path):
    folder = write_module(tmp_path, scripts={"start_prim": "#!/bin/sh\n\necho {{ prot }}\n",
                                             "stop_prim": "#!/bin/sh\n{% if %}\n"},
                          replace={'"{{ vip_ip }}"': '"{{ vip_adress }}"'})
    assert messages(check(cluster_path)) == [
        f"{folder}/start_prim: line 3: cannot render: 'prot' is undefined",
        f"{folder}/stop_prim: line 2: cannot render: Expected an expression, got 'end of statement block'",
        f"{toml_of(tmp_path)}: checkers[0].host: cannot render: 'vip_adress' is undefined",
    ]


def test_vars_must_not_shadow_builtin_variables(tmp_path, cluster_path):
    assert module_errors(tmp_path, cluster_path, replace={"[vars]\n": "[vars]\nnode = 'x'\n"}) == [
        f"{toml_of(tmp_path)}: vars.node: conflicts with a built-in template variable"]


def test_a_module_folder_without_module_toml(tmp_path, cluster_path):
    (tmp_path / "modules" / "empty").mkdir()
    (tmp_path / "modules" / ".hidden").mkdir()
    assert messages(check(cluster_path)) == [
        f"{toml_of(tmp_path, 'empty')}: cannot read: No such file or directory"]


def test_checker_names_are_unique_and_vars_are_identifiers(tmp_path, cluster_path):
    second = '[[checkers]]\ntype = "interface"\nname = "port"\ninterface = "{{ interface }}"\n\n[vars]\nmy-port = 1'
    assert module_errors(tmp_path, cluster_path, replace={"[vars]": second}) == [
        f"{toml_of(tmp_path)}: checkers[1].name: duplicate checker name 'port'",
        f"{toml_of(tmp_path)}: vars.my-port: must be a valid template variable name (got 'my-port')",
    ]


def test_a_state_dir_too_long_for_the_mounts_control_socket_is_refused(tmp_path):
    """The mount binds STATE_DIR/modules/MODULE/N/control.sock: past 107 bytes it cannot start."""
    state_dir = str(tmp_path / ("s" * 120))
    cluster_path = write_cluster(tmp_path, replace={'state_dir = "state"': f'state_dir = "{state_dir}"'})
    socket = f"{state_dir}/modules/app/0/control.sock"
    assert module_errors(tmp_path, cluster_path) == [
        f"{toml_of(tmp_path)}: module.name: the mount's control socket {socket} would be {len(socket)} bytes, "
        f"more than the 107 of a unix socket's path: shorten cluster.state_dir ({state_dir}) or the module's name"]


def test_the_longest_state_dir_a_mount_can_bind_in_is_accepted(tmp_path):
    room = 107 - len(f"{tmp_path}/") - len("/modules/app/0/control.sock")
    cluster_path = write_cluster(tmp_path, replace={'state_dir = "state"': f'state_dir = "{"s" * room}"'})
    assert module_errors(tmp_path, cluster_path) == []
