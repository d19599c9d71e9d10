"""Reading the configuration from disk: the cluster file, then every module folder under ``modules_dir``.

``load_*`` raise the first problem; ``check`` returns every problem, for ``hamirror config check``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass
from typing import Any

from hamirror.config.cluster import ClusterConfig, NodeConfig, parse_cluster
from hamirror.config.errors import ConfigError, ErrorList
from hamirror.config.module import SCRIPTS, ModuleConfig, VipConfig, check_scripts, overlap, parse_module
from hamirror.config.templates import render_script, render_text
from hamirror.fs.control import SOCKET_NAME as MOUNT_SOCKET

DEFAULT_PATH = "/etc/hamirror/hamirror.toml"
# The state each script is rendered with when the configuration is checked.
SCRIPT_STATES = {"start_prim": "PRIM", "stop_prim": "STOP", "start_second": "SECOND", "stop_second": "STOP"}


def config_path(cli_value: str | None) -> str:
    """The cluster file: ``-c``, else ``$HAMIRROR_CONFIG``, else /etc/hamirror/hamirror.toml."""
    return cli_value or os.environ.get("HAMIRROR_CONFIG") or DEFAULT_PATH


def read_toml(path: str, errors: ErrorList) -> dict[str, Any] | None:
    """The parsed file, or None after reporting why it cannot be read or parsed."""
    try:
        with open(path, "rb") as stream:
            data = stream.read()
        return tomllib.loads(data.decode("utf-8"))
    except OSError as exc:
        errors.add(None, f"cannot read: {exc.strerror or exc}")
    except UnicodeDecodeError as exc:
        errors.add(None, f"not UTF-8 text (byte {exc.start})")
    except tomllib.TOMLDecodeError as exc:
        text = str(exc)
        where = re.search(r"\s*\(at line (\d+), column (\d+)\)$", text)
        if where:
            errors.add(f"line {where[1]}, column {where[2]}", f"TOML syntax error: {text[:where.start()]}")
        else:
            errors.add(None, f"TOML syntax error: {text}")
    return None


def _cluster(path: str, sink: list[ConfigError]) -> ClusterConfig | None:
    errors = ErrorList(path, sink)
    doc = read_toml(path, errors)
    return None if doc is None else parse_cluster(doc, path, errors)


def _stand_in(module: ModuleConfig, cluster: ClusterConfig) -> tuple[ModuleConfig, ClusterConfig]:
    """The module and cluster with stand-ins for values already reported as wrong or missing
    (names, addresses, VIP, paths), so that the templates are still checked: one problem must
    not hide another."""
    nodes = [*cluster.nodes[:2], *[NodeConfig(None, ())] * (2 - len(cluster.nodes[:2]))]  # type: ignore[arg-type]
    names: list[str] = []
    for index, node in enumerate(nodes):
        name = node.name if node.name and node.name not in names else f"node{index + 1}"
        names.append(name)
        nodes[index] = NodeConfig(name, node.addresses or (f"192.0.2.{index + 1}",))
    vip = module.vip
    if vip is not None and (vip.address is None or vip.interface is None):
        vip = VipConfig(vip.address or "192.0.2.100/24", vip.interface or "eth0")
    module = dataclasses.replace(module, name=module.name or os.path.basename(module.folder), vip=vip)
    cluster = dataclasses.replace(cluster, nodes=tuple(nodes), state_dir=cluster.state_dir or "/var/lib/hamirror",
                                  run_dir=cluster.run_dir or "/run/hamirror")
    return module, cluster


def _modules(cluster: ClusterConfig, sink: list[ConfigError]) -> list[ModuleConfig]:
    try:
        entries = sorted(os.listdir(cluster.modules_dir))
    except OSError as exc:
        sink.append(ConfigError(cluster.path, "cluster.modules_dir",
                                f"cannot list {cluster.modules_dir}: {exc.strerror or exc}"))
        return []
    modules: list[ModuleConfig] = []
    for entry in entries:
        folder = os.path.abspath(os.path.join(cluster.modules_dir, entry))
        if entry.startswith(".") or not os.path.isdir(folder):
            continue
        module = check_module_folder(folder, cluster, sink, modules)
        if module is not None:
            modules.append(module)
    return modules


def check_module_folder(folder: str, cluster: ClusterConfig, sink: list[ConfigError],
                        others: list[ModuleConfig] | tuple[ModuleConfig, ...] = ()) -> ModuleConfig | None:
    """Every check of one module folder (alone, against the cluster, against ``others``), problems
    into ``sink``; the module as parsed, or None when its module.toml cannot be read.
    ``hamirror module check`` uses it for a folder outside ``modules_dir`` too."""
    errors = ErrorList(os.path.join(folder, "module.toml"), sink)
    doc = read_toml(errors.file, errors)
    if doc is None:
        return None
    module = parse_module(doc, folder, errors)
    check_scripts(folder, errors)
    _check_against_cluster(module, cluster, errors)
    _check_against_others(module, list(others), errors)
    return module


def _check_against_cluster(module: ModuleConfig, cluster: ClusterConfig, errors: ErrorList) -> None:
    """Checks that need the cluster file; each runs with what the cluster file got right."""
    names = list(dict.fromkeys(node.name for node in cluster.nodes if node.name))   # a duplicate: once
    if module.default_primary is not None and names and module.default_primary not in names:
        errors.add("module.default_primary",
                   f"must be one of the cluster's nodes: {', '.join(names)} (got {module.default_primary!r})")
    if module.vip is not None and module.vip.address is not None:
        network = ipaddress.ip_interface(module.vip.address).network
        for node in cluster.nodes:
            if not node.addresses:
                continue          # reported in the cluster file
            first = ipaddress.ip_address(node.addresses[0])
            if first == ipaddress.ip_interface(module.vip.address).ip:
                errors.add("vip.address", f"{first} is the address of node {node.name!r}")
            elif first not in network:
                errors.add("vip.address", f"network {network} does not contain {first}, "
                                          f"the first address of node {node.name!r}")
    _check_control_socket(module, cluster, errors)
    _check_templates(*_stand_in(module, cluster), errors)


UNIX_SOCKET_PATH_MAX = 107   # bytes of a unix socket's path (sun_path's 108, with its closing NUL)


def _check_control_socket(module: ModuleConfig, cluster: ClusterConfig, errors: ErrorList) -> None:
    """Each mount binds its control socket at STATE_DIR/modules/MODULE/N/control.sock: a path
    longer than a unix socket takes would fail only when the mount starts (it cannot bind), on
    both nodes at once, so it is refused here, with what makes it long."""
    if module.name is None or not module.directories or not cluster.state_dir:
        return
    path = os.path.join(cluster.module_state_dir(module.name), str(len(module.directories) - 1), MOUNT_SOCKET)
    size = len(os.fsencode(path))
    if size > UNIX_SOCKET_PATH_MAX:
        errors.add("module.name", f"the mount's control socket {path} would be {size} bytes, more than the "
                                  f"{UNIX_SOCKET_PATH_MAX} of a unix socket's path: shorten cluster.state_dir "
                                  f"({cluster.state_dir}) or the module's name")


def _check_templates(module: ModuleConfig, cluster: ClusterConfig, errors: ErrorList) -> None:
    """Render every script and checker string as each node would; report each distinct failure once."""
    found: list[ConfigError] = []
    for node in cluster.nodes:
        for script in SCRIPTS:
            if os.path.isfile(module.script_path(script)):    # not executable: reported, still checked
                _attempt(found, render_script, module, cluster, script, SCRIPT_STATES[script], node)
        for index, checker in enumerate(module.checkers):
            for key in ("process", "cmdline_contains", "host", "interface"):
                value = getattr(checker, key)
                if value is not None:
                    _attempt(found, render_text, module, cluster, f"checkers[{index}].{key}", value, node)
    for error in dict.fromkeys(found):
        errors.items.append(error)


def _attempt(found: list[ConfigError], render: Any, *args: Any) -> None:
    try:
        render(*args)
    except ConfigError as exc:
        found.append(exc)


def _check_against_others(module: ModuleConfig, others: list[ModuleConfig], errors: ErrorList) -> None:
    for other in others:
        if module.name is not None and module.name == other.name:
            errors.add("module.name", f"duplicate module name {module.name!r} (also in {other.file})")
        clash = _port_clash(module, other)
        if clash is not None:
            errors.add("module.replication_port", clash)
        if module.vip is not None and other.vip is not None and module.vip.address and other.vip.address \
                and module.vip.ip == other.vip.ip:
            errors.add("vip.address", f"{module.vip.ip} is also the VIP of module {other.name!r}: "
                                      "each module needs its own VIP (the modules may run on different nodes)")
        for index, directory in enumerate(module.directories):
            for theirs in other.directories:
                if overlap(directory.path, theirs.path):
                    errors.add(f"directories[{index}].path",
                               f"{directory.path} overlaps {theirs.path} of module {other.name!r}")


def port_range(module: ModuleConfig) -> tuple[int, int] | None:
    """The replication ports a module uses: one per directory, from ``replication_port`` on."""
    if module.replication_port is None:
        return None
    return module.replication_port, module.replication_port + max(len(module.directories), 1) - 1


def _ports_text(ports: tuple[int, int]) -> str:
    return f"port {ports[0]}" if ports[0] == ports[1] else f"ports {ports[0]}-{ports[1]}"


def _port_clash(module: ModuleConfig, other: ModuleConfig) -> str | None:
    """Why the two modules' replication ports collide, or None: a module with N directories
    listens on N consecutive ports, so ranges must not overlap, not only first ports."""
    mine, theirs = port_range(module), port_range(other)
    if mine is None or theirs is None or mine[1] < theirs[0] or theirs[1] < mine[0]:
        return None
    if mine[0] == mine[1] == theirs[0] == theirs[1]:
        return f"port {mine[0]} is also used by module {other.name!r}"
    return (f"{_ports_text(mine)} overlap {_ports_text(theirs)} of module {other.name!r} "
            "(a module uses one port per directory, from replication_port on)")


def load_cluster(path: str) -> ClusterConfig:
    """The cluster file, fully checked (local node included); raises the first ConfigError."""
    sink: list[ConfigError] = []
    cluster = _cluster(path, sink)
    if sink or cluster is None:
        raise sink[0]
    return cluster


def load_modules(cluster: ClusterConfig) -> list[ModuleConfig]:
    """Every module folder under ``cluster.modules_dir``, sorted by name; raises the first ConfigError."""
    sink: list[ConfigError] = []
    modules = _modules(cluster, sink)
    if sink:
        raise sink[0]
    return modules


@dataclass(frozen=True)
class Validation:
    """What ``config check`` found: the parsed cluster and modules (possibly partial) and every problem."""

    cluster: ClusterConfig | None
    modules: tuple[ModuleConfig, ...]
    errors: tuple[ConfigError, ...]


def validate(path: str) -> Validation:
    """Check the cluster file and every module, collecting every problem instead of stopping."""
    sink: list[ConfigError] = []
    cluster = _cluster(path, sink)
    modules: list[ModuleConfig] = []
    if cluster is not None and cluster.modules_dir is not None and os.path.isdir(cluster.modules_dir):
        modules = _modules(cluster, sink)
    return Validation(cluster, tuple(modules), tuple(sink))


def check(path: str) -> list[ConfigError]:
    """Every problem of the cluster file and of all modules (empty when the configuration is valid)."""
    return list(validate(path).errors)
