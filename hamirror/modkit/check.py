"""``hamirror module check``: one module folder, checked the way the agent of this node would use it.

The configuration checks are the loader's (``hamirror/config``): the module alone, against the
cluster file and against the other modules; scripts and checker values rendered as each node
would. On top of those: the durability settings of the server the module runs (see
``durability``), and the distribution's own service, which must not start the server at boot
outside the cluster.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass, field

from hamirror.config.cluster import ClusterConfig
from hamirror.config.errors import ConfigError
from hamirror.config.loader import SCRIPT_STATES, check_module_folder, validate
from hamirror.config.module import ModuleConfig
from hamirror.config.templates import render_script
from hamirror.modkit import durability


@dataclass
class Report:
    """What ``module check`` found: errors refuse the module, warnings do not."""

    module: ModuleConfig | None = None
    cluster: ClusterConfig | None = None
    errors: list[ConfigError] = field(default_factory=list)
    warnings: list[ConfigError] = field(default_factory=list)


def locate(target: str, cluster: ClusterConfig | None) -> str:
    """A module folder from a path (anything with a '/' or an existing folder) or a module name."""
    if os.sep in target or os.path.isdir(target) or cluster is None or cluster.modules_dir is None:
        return os.path.abspath(target)
    return os.path.abspath(os.path.join(cluster.modules_dir, target))


def _var_path(module: ModuleConfig, key: str) -> str | None:
    """A ``[vars]`` file path, relative to the module folder unless absolute."""
    value = module.vars.get(key)
    if not isinstance(value, str) or not value:
        return None
    return value if os.path.isabs(value) else os.path.join(module.folder, value)


def durability_findings(module: ModuleConfig) -> list[durability.Finding]:
    """The server's durability settings, from the files ``[vars]`` names (none: nothing to check).

    PostgreSQL: ``postgresql_conf``, then ``postgresql.auto.conf`` (ALTER SYSTEM) in the data
    directory (``dirs[0]/pgdata_subdir``) where this node can read it. MariaDB: ``mariadb_cnf``.
    """
    findings: list[durability.Finding] = []
    pg_conf = _var_path(module, "postgresql_conf")
    if pg_conf is not None:
        files = [pg_conf]
        if module.directories:
            pgdata = os.path.join(module.directories[0].path, str(module.vars.get("pgdata_subdir", "")))
            files.append(os.path.join(pgdata, "postgresql.auto.conf"))
        findings += durability.check_postgresql(files)
    cnf = _var_path(module, "mariadb_cnf")
    if cnf is not None:
        findings += durability.check_mariadb(cnf)
    return findings


def distro_service_warning(module: ModuleConfig) -> ConfigError | None:
    """A warning when ``[vars] distro_service`` names a systemd unit that is enabled or running here."""
    unit = module.vars.get("distro_service")
    if not isinstance(unit, str) or not unit or not os.path.isdir("/run/systemd/system") \
            or shutil.which("systemctl") is None:
        return None
    states = []
    for verb in ("is-enabled", "is-active"):
        result = subprocess.run(["systemctl", verb, unit], capture_output=True, text=True, timeout=10)
        states.append(result.stdout.strip())
    if states[0] in ("enabled", "enabled-runtime") or states[1] == "active":
        return ConfigError(module.file, "vars.distro_service", (
            f"warning: {unit} is {states[0]} and {states[1]} on this node: it would start the server outside the "
            f"cluster; 'systemctl disable --now {unit} && systemctl mask {unit}' (start_prim does it too)"))
    return None


def environment_errors(module: ModuleConfig) -> list[ConfigError]:
    """What the scripts need on this node: ``[vars] os_user`` exists, ``pg_bin`` is a directory."""
    errors = []
    user = module.vars.get("os_user")
    if isinstance(user, str) and user:
        try:
            pwd.getpwnam(user)
        except KeyError:
            errors.append(ConfigError(module.file, "vars.os_user", f"no user {user!r} on this node "
                                                                   "(is the server's package installed?)"))
    pg_bin = module.vars.get("pg_bin")
    if isinstance(pg_bin, str) and not os.path.isdir(pg_bin):
        errors.append(ConfigError(module.file, "vars.pg_bin", f"{pg_bin} is not a directory on this node "
                                                              "(is postgresql installed, in this version?)"))
    return errors


def check(target: str, config: str) -> Report:
    """Check the module ``target`` (name or folder) with the cluster file ``config``."""
    report = Report()
    result = validate(config)
    report.cluster = result.cluster
    report.errors += [e for e in result.errors if e.file == config]
    if result.cluster is None:
        return report
    folder = locate(target, result.cluster)
    if not os.path.isfile(os.path.join(folder, "module.toml")):
        report.errors.append(ConfigError(os.path.join(folder, "module.toml"), None,
                                         f"no module {target!r} here (give a module name or a folder)"))
        return report
    others = [m for m in result.modules if m.folder != folder]
    sink: list[ConfigError] = []
    report.module = check_module_folder(folder, result.cluster, sink, others)
    report.errors += sink
    if report.module is None:
        return report
    report.errors += environment_errors(report.module)
    for finding in durability_findings(report.module):
        (report.errors if finding.fatal else report.warnings).append(finding.error)
    service = distro_service_warning(report.module)
    if service is not None:
        report.warnings.append(service)
    return report


def show(report: Report, script: str) -> str:
    """One script rendered for this node, as the agent would run it entering its state."""
    assert report.module is not None and report.cluster is not None
    return render_script(report.module, report.cluster, script, SCRIPT_STATES[script])
