"""A module folder's ``module.toml``: what to replicate, where the VIP goes, how to watch the application."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from hamirror.config import schema
from hamirror.config.errors import ErrorList
from hamirror.config.schema import Field, Invalid

MODULE_NAME = r"[a-z0-9_-]+"
SCRIPTS = ("start_prim", "stop_prim", "start_second", "stop_second")
CHECKER_TYPES = ("process", "tcp", "interface", "script")
# Names the script templates always receive; [vars] may not redefine them.
BUILTIN_VARS = ("module", "node", "peer", "node_address", "peer_address", "dirs", "vip", "vip_ip", "interface",
                "module_dir", "run_dir", "state_dir", "python", "state")


@dataclass(frozen=True)
class DirectoryConfig:
    """One replicated directory (absolute, normalised)."""

    path: str


@dataclass(frozen=True)
class VipConfig:
    """The virtual IP, with its prefix length, and the interface that carries it."""

    address: str
    interface: str

    @property
    def ip(self) -> str:
        return str(ipaddress.ip_interface(self.address).ip)

    @property
    def prefixlen(self) -> int:
        return ipaddress.ip_interface(self.address).network.prefixlen


@dataclass(frozen=True)
class CheckerConfig:
    """One checker; only the keys of its ``type`` are set. String values may hold templates."""

    type: str
    name: str
    interval: float = 2.0
    timeout: float = 1.0
    process: str | None = None
    cmdline_contains: str | None = None
    host: str | None = None
    port: int | None = None
    interface: str | None = None
    path: str | None = None


@dataclass(frozen=True)
class RestartConfig:
    """Checker failures restarted in place: at most ``max_restarts`` within ``window`` seconds."""

    max_restarts: int = 3
    window: float = 300.0


@dataclass(frozen=True)
class FailoverConfig:
    """Flap damping: at most ``max`` failovers of a node within ``window`` seconds; the next one
    is held back until ``hamirror clear``. ``max = 0`` (the default): no damping."""

    max: int = 0
    window: float = 600.0


@dataclass(frozen=True)
class ScriptsConfig:
    """How long a script may run before it is killed and counted as failed; how long the
    application's processes still running after ``stop_prim`` get between SIGTERM and SIGKILL."""

    timeout: float = 30.0
    kill_after: float = 10.0


@dataclass(frozen=True)
class ModuleConfig:
    """One module folder. ``folder`` is absolute; ``vars`` is read-only."""

    folder: str
    name: str
    default_primary: str
    mode: str
    replication_port: int
    peer_timeout: float
    directories: tuple[DirectoryConfig, ...]
    vip: VipConfig | None
    scripts: ScriptsConfig
    restart: RestartConfig
    checkers: tuple[CheckerConfig, ...]
    vars: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    failover: FailoverConfig = FailoverConfig()

    @property
    def file(self) -> str:
        return os.path.join(self.folder, "module.toml")

    def script_path(self, script: str) -> str:
        return os.path.join(self.folder, script)


def absolute_path(value: Any) -> str:
    """An absolute path other than ``/``, normalised."""
    text = schema.string()(value)
    if not os.path.isabs(text):
        raise Invalid(f"must be an absolute path (got {text!r})")
    text = os.path.normpath(text)
    if text in ("/", "//"):
        raise Invalid("must not be / (replicate the application's own directories)")
    return text


def vip_address(value: Any) -> str:
    """``IP/PREFIX`` where IP is a host address of that network."""
    text = schema.string()(value)
    try:
        iface = ipaddress.ip_interface(text)
        if "/" not in text:
            raise ValueError
    except ValueError:
        raise Invalid(f'must be an address with its prefix length, e.g. "198.18.0.100/24" (got {text!r})') from None
    network = iface.network
    if network.num_addresses > 2 and iface.ip in (network.network_address, network.broadcast_address):
        raise Invalid(f"{iface.ip} is the network or broadcast address of {network}")
    return str(iface)


def interface_name(value: Any) -> str:
    """A Linux interface name: 1 to 15 characters, no '/', ':' or white space."""
    text = schema.string()(value)
    if len(text) > 15 or any(c in text for c in "/: \t\n") or text in (".", ".."):
        raise Invalid(f"must be a network interface name (got {text!r})")
    return text


def identifier(value: Any) -> str:
    text = schema.string()(value)
    if not text.isidentifier():
        raise Invalid(f"must be a valid template variable name (got {text!r})")
    return text


MODULE_FIELDS = {
    "name": Field(schema.string(MODULE_NAME, "lowercase letters, digits, '_' or '-'")),
    "default_primary": Field(schema.string()),
    "mode": Field(schema.one_of("sync", "barrier", "async"), "sync"),
    "replication_port": Field(schema.port()),
    "peer_timeout": Field(schema.number(greater_than=0), 3.0),
}
COMMON_CHECKER_FIELDS = {
    "type": Field(schema.one_of(*CHECKER_TYPES)),
    "name": Field(schema.string(), None),
    "interval": Field(schema.number(greater_than=0), CheckerConfig.interval),
    "timeout": Field(schema.number(greater_than=0), CheckerConfig.timeout),
}
CHECKER_FIELDS = {
    "process": {"process": Field(schema.string(), None), "cmdline_contains": Field(schema.string(), None)},
    "tcp": {"host": Field(schema.string()), "port": Field(schema.port())},
    "interface": {"interface": Field(schema.string())},  # may be a template: "{{ interface }}"
    "script": {"path": Field(schema.string())},
}


def parse_module(doc: Mapping[str, Any], folder: str, errors: ErrorList) -> ModuleConfig:
    """Build a ModuleConfig from ``module.toml`` alone; checks that need the cluster are in the loader."""
    schema.unknown_sections(errors, doc, ("module", "directories", "vip", "scripts", "restart", "failover",
                                          "checkers", "vars"))
    main = schema.read_table(errors, schema.section(errors, doc, "module", True) or {}, "module.", MODULE_FIELDS)
    expected = os.path.basename(folder)
    if main["name"] is not None and main["name"] != expected:
        errors.add("module.name", f"must match the folder name {expected!r} (got {main['name']!r})")
    vip = None
    if "vip" in doc:
        table = schema.section(errors, doc, "vip", False) or {}
        vip = VipConfig(**schema.read_table(errors, table, "vip.", {
            "address": Field(vip_address), "interface": Field(interface_name)}))
    return ModuleConfig(
        folder=folder, vip=vip, directories=_directories(errors, doc), checkers=_checkers(errors, doc, folder),
        scripts=ScriptsConfig(**schema.read_table(errors, schema.section(errors, doc, "scripts", False) or {},
                                                  "scripts.", {"timeout": Field(schema.number(0), 30.0),
                                                               "kill_after": Field(schema.number(greater_than=0),
                                                                                   ScriptsConfig.kill_after)})),
        restart=RestartConfig(**schema.read_table(errors, schema.section(errors, doc, "restart", False) or {},
                                                  "restart.", {"max_restarts": Field(schema.integer(0, 1000), 3),
                                                               "window": Field(schema.number(0), 300.0)})),
        failover=FailoverConfig(**schema.read_table(
            errors, schema.section(errors, doc, "failover", False) or {}, "failover.",
            {"max": Field(schema.integer(0, 1000), 0), "window": Field(schema.number(greater_than=0), 600.0)})),
        vars=_vars(errors, doc), **main)


def _directories(errors: ErrorList, doc: Mapping[str, Any]) -> tuple[DirectoryConfig, ...]:
    tables = schema.table_array(errors, doc, "directories")
    if tables == []:
        errors.add("directories", "at least one [[directories]] table is required")
    found: list[tuple[str, str]] = []
    for prefix, table in tables or []:
        path = schema.read_table(errors, table, prefix, {"path": Field(absolute_path)})["path"]
        if path is None:
            continue
        for other_key, other in found:
            if overlap(path, other):
                errors.add(f"{prefix}path", f"{path} overlaps {other} ({other_key}): "
                                            "directories must not be the same or nested")
        found.append((f"{prefix}path", path))
    return tuple(DirectoryConfig(path) for _, path in found)


def overlap(a: str, b: str) -> bool:
    """True when the two normalised absolute paths are equal or one contains the other."""
    return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")


def _checkers(errors: ErrorList, doc: Mapping[str, Any], folder: str) -> tuple[CheckerConfig, ...]:
    checkers = []
    names: set[str] = set()
    for index, (prefix, table) in enumerate(schema.table_array(errors, doc, "checkers") or []):
        try:
            kind = COMMON_CHECKER_FIELDS["type"].check(table["type"])
        except KeyError:
            errors.add(f"{prefix}type", "missing required key")
            continue
        except Invalid as exc:
            errors.add(f"{prefix}type", str(exc))
            continue
        values = schema.read_table(errors, table, prefix, {**COMMON_CHECKER_FIELDS, **CHECKER_FIELDS[kind]})
        values["type"] = kind
        values["name"] = values["name"] or f"{kind}-{index}"
        if values["name"] in names:
            errors.add(f"{prefix}name", f"duplicate checker name {values['name']!r}")
        names.add(values["name"])
        if kind == "process" and values["process"] is None and values["cmdline_contains"] is None:
            errors.add(f"{prefix}process", "a process checker needs process or cmdline_contains")
        if kind == "script" and values["path"] is not None:
            values["path"] = os.path.normpath(os.path.join(folder, values["path"]))
            if not (os.path.isfile(values["path"]) and os.access(values["path"], os.X_OK)):
                errors.add(f"{prefix}path", f"{values['path']} is not an executable file")
        checkers.append(CheckerConfig(**values))
    return tuple(checkers)


def _vars(errors: ErrorList, doc: Mapping[str, Any]) -> Mapping[str, Any]:
    table = schema.section(errors, doc, "vars", False) or {}
    for key in table:
        try:
            identifier(key)
        except Invalid as exc:
            errors.add(f"vars.{key}", str(exc))
        if key in BUILTIN_VARS:
            errors.add(f"vars.{key}", "conflicts with a built-in template variable")
    return MappingProxyType(dict(table))


def check_scripts(folder: str, errors: ErrorList) -> None:
    """Each of the four scripts must exist as an executable file."""
    for script in SCRIPTS:
        path = os.path.join(folder, script)
        if not os.path.isfile(path):
            errors.for_file(path).add(None, "script is missing")
        elif not os.access(path, os.X_OK):
            errors.for_file(path).add(None, f"script is not executable (chmod +x {path})")
