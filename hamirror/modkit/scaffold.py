"""``hamirror module new``: a module folder from a template of the kit.

A template is a folder of ``templates/``: files ending in ``.j2`` are rendered (the suffix dropped)
with the new module's name, replication port, directory and VIP; every other file is copied as it
is, with its mode. The files of ``templates/common/`` go into every module (shell helpers the
scripts include). The module scripts are themselves jinja2 templates that the agent renders at each
run, so kit-time templates use other delimiters: ``<< name >>``, ``<% if %>``, ``<# comment #>``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import asdict, dataclass

import jinja2

from hamirror.config.module import MODULE_NAME, vip_address
from hamirror.config.schema import Invalid

TEMPLATES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
COMMON = "common"
TEMPLATES = ("generic", "postgresql", "mariadb", "nginx")
# Each template's own replication port, so that modules made from different templates do not clash.
DEFAULT_PORTS = {"generic": 7450, "postgresql": 7420, "mariadb": 7430, "nginx": 7440}


class ScaffoldError(Exception):
    """Why the module could not be made, for the operator."""


@dataclass(frozen=True)
class Values:
    """What a template is rendered with."""

    name: str
    template: str
    replication_port: int
    directory: str
    vip: str
    interface: str
    default_primary: str
    vip_network: str = ""       # the VIP's network (10.0.0.0/24 for 10.0.0.100/24): who may connect


def _environment(folder: str) -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(folder), undefined=jinja2.StrictUndefined,
                              keep_trailing_newline=True, autoescape=False,
                              variable_start_string="<<", variable_end_string=">>",
                              block_start_string="<%", block_end_string="%>",
                              comment_start_string="<#", comment_end_string="#>")


def _used_ports(modules_dir: str, name: str) -> set[int]:
    """Replication ports of the other modules in modules_dir (not NAME's, which --force replaces):
    one per directory, from each module's replication_port on."""
    ports: set[int] = set()
    for entry in os.listdir(modules_dir) if os.path.isdir(modules_dir) else ():
        if entry == name:
            continue
        try:
            with open(os.path.join(modules_dir, entry, "module.toml"), "rb") as stream:
                doc = tomllib.load(stream)
            port, directories = doc.get("module", {}).get("replication_port"), doc.get("directories", [])
        except (OSError, tomllib.TOMLDecodeError, AttributeError):
            continue
        if isinstance(port, int):
            ports.update(range(port, port + max(len(directories) if isinstance(directories, list) else 1, 1)))
    return ports


def values_for(name: str, template: str, modules_dir: str, replication_port: int | None = None,
               directory: str | None = None, vip: str = "198.18.0.100/24", interface: str = "eth0",
               default_primary: str = "node1") -> Values:
    """The template's values for a new module, defaults filled in; ScaffoldError if one is wrong."""
    if not re.fullmatch(MODULE_NAME, name):
        raise ScaffoldError(f"module name {name!r}: use lowercase letters, digits, '_' or '-'")
    if template not in TEMPLATES:
        raise ScaffoldError(f"no template {template!r}; choose one of {', '.join(TEMPLATES)}")
    if replication_port is None:
        used = _used_ports(modules_dir, name)
        replication_port = next(p for p in range(DEFAULT_PORTS[template], 65536) if p not in used)
    directory = directory or f"/srv/hamirror-{name}"
    if not os.path.isabs(directory) or os.path.normpath(directory) == "/":
        raise ScaffoldError(f"--directory {directory!r}: must be an absolute path other than /")
    try:
        vip = vip_address(vip)
    except Invalid as exc:
        raise ScaffoldError(f"--vip: {exc}") from None
    return Values(name, template, replication_port, os.path.normpath(directory), vip, interface, default_primary,
                  str(ipaddress.ip_interface(vip).network))


def _sources(template: str) -> list[tuple[str, str]]:
    """(source file, path relative to the module folder) of a template, common files first."""
    found = []
    for folder in (os.path.join(TEMPLATES_DIR, COMMON), os.path.join(TEMPLATES_DIR, template)):
        for entry in sorted(os.listdir(folder)):
            if not entry.startswith(".") and not entry.startswith("__"):
                found.append((os.path.join(folder, entry), entry))
    return found


def render(values: Values) -> dict[str, tuple[str, int]]:
    """The new module's files: relative path -> (text, mode)."""
    files: dict[str, tuple[str, int]] = {}
    for source, relative in _sources(values.template):
        mode = os.stat(source).st_mode & 0o777
        if relative.endswith(".j2"):
            template = _environment(os.path.dirname(source)).get_template(relative)
            files[relative[:-3]] = (template.render(asdict(values)), mode)
        else:
            with open(source, encoding="utf-8") as stream:
                files[relative] = (stream.read(), mode)
    return files


def create(values: Values, modules_dir: str, force: bool = False) -> str:
    """Write the module folder ``modules_dir/NAME``; its path. Refuses to overwrite unless ``force``."""
    folder = os.path.join(os.path.abspath(modules_dir), values.name)
    if os.path.exists(folder) and not force:
        raise ScaffoldError(f"{folder} exists already (--force replaces its files)")
    files = render(values)
    os.makedirs(folder, exist_ok=True)
    for relative, (text, mode) in files.items():
        path = os.path.join(folder, relative)
        with open(path, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.chmod(path, mode)
    return folder


def template_files(template: str) -> list[str]:
    """The names of the files a module made from ``template`` has (for docs and tests)."""
    return [relative[:-3] if relative.endswith(".j2") else relative for _, relative in _sources(template)]

