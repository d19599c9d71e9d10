"""Settings a database's durability depends on, read from the server's own configuration files.

A failover is a power loss for the server: only what it made durable before acknowledging a
commit is there on the secondary. ``hamirror module check`` reads the files a module points at
(``[vars] postgresql_conf`` or ``mariadb_cnf``) the way the server would, and reports a setting
that lets the server acknowledge a commit it has not made durable: an error when acknowledged
commits can be lost or the data corrupted, a warning when the loss is bounded and documented.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass

from hamirror.config.errors import ConfigError

MAX_DEPTH = 10      # include nesting: a loop of includes must end


@dataclass(frozen=True)
class Finding:
    """One problem: ``fatal`` refuses the module; otherwise it is a warning."""

    error: ConfigError
    fatal: bool


@dataclass(frozen=True)
class Setting:
    """A setting's last value and the file that set it (for the message)."""

    value: str
    file: str


def _lines(path: str, problems: list[ConfigError], depth: int) -> list[str] | None:
    """The lines of a configuration file, or None after saying why it cannot be read."""
    if depth > MAX_DEPTH:
        problems.append(ConfigError(path, None, f"includes nested more than {MAX_DEPTH} deep"))
        return None
    try:
        with open(path, encoding="utf-8") as stream:
            return stream.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(ConfigError(path, None, f"cannot read: {getattr(exc, 'strerror', None) or exc}"))
        return None


# ------------------------------------------------------------------ PostgreSQL (postgresql.conf)

PG_LINE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(?:=\s*|\s+)(.*?)\s*$")
PG_TRUE = ("on", "true", "yes", "1")
PG_FALSE = ("off", "false", "no", "0")


def _pg_value(raw: str) -> str:
    """The value of a postgresql.conf line: quoted ('it''s') or up to a comment."""
    if raw.startswith("'"):
        match = re.match(r"'((?:[^'\\]|''|\\.)*)'", raw)
        return match[1].replace("''", "'") if match else raw
    return raw.split("#", 1)[0].strip()


def read_postgresql_conf(path: str, settings: dict[str, Setting], problems: list[ConfigError], depth: int = 0) -> None:
    """Apply the file's settings to ``settings`` (last one wins), following include directives."""
    lines = _lines(path, problems, depth)
    if lines is None:
        return
    here = os.path.dirname(path)
    for line in lines:
        match = PG_LINE.match(line)
        if not match or line.lstrip().startswith("#"):
            continue
        name, value = match[1].lower(), _pg_value(match[2])
        target = value if os.path.isabs(value) else os.path.join(here, value)
        if name == "include" or (name == "include_if_exists" and os.path.exists(target)):
            read_postgresql_conf(target, settings, problems, depth + 1)
        elif name == "include_dir":
            for file in sorted(glob.glob(os.path.join(target, "*.conf"))):
                read_postgresql_conf(file, settings, problems, depth + 1)
        elif name != "include_if_exists":
            settings[name] = Setting(value, path)


def check_postgresql(files: list[str]) -> list[Finding]:
    """fsync and full_page_writes off: errors; synchronous_commit off: a warning."""
    settings: dict[str, Setting] = {}
    problems: list[ConfigError] = []
    for file in files:
        if os.path.exists(file) or file == files[0]:
            read_postgresql_conf(file, settings, problems)
    findings = [Finding(problem, True) for problem in problems]
    for name, why in (("fsync", "a commit is acknowledged before it is on disk; a failover can lose it and "
                                "corrupt the database"),
                      ("full_page_writes", "a page torn by the failover cannot be repaired from the WAL")):
        found = settings.get(name)
        if found and found.value.lower() in PG_FALSE:
            findings.append(Finding(ConfigError(found.file, name, f"is {found.value!r}: {why}; set it to on"), True))
    found = settings.get("synchronous_commit")
    if found and found.value.lower() in PG_FALSE:
        findings.append(Finding(ConfigError(found.file, "synchronous_commit", (
            f"warning: is {found.value!r}: commits are acknowledged before their WAL is flushed; a failover "
            "loses the last ones (up to 3 x wal_writer_delay)")), False))
    return findings


# ------------------------------------------------------------------ MariaDB (my.cnf)

# The option groups mariadbd reads (10.11); a version suffix (mariadb-10.11) counts too.
MARIADB_GROUPS = ("mysqld", "server", "mariadb", "mariadbd", "client-server", "galera")
CNF_SECTION = re.compile(r"^\s*\[([^\]]+)\]\s*$")
CNF_OPTION = re.compile(r"^\s*([A-Za-z][\w-]*)\s*(?:=\s*(.*?))?\s*$")


def _cnf_value(raw: str | None) -> str:
    if raw is None:
        return "1"                              # a bare option turns it on
    raw = raw.split("#", 1)[0].strip() if not raw.startswith(("'", '"')) else raw
    return raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"" else raw


def _cnf_name(raw: str) -> tuple[str, str | None]:
    """Normalised option name ('-' and '_' alike, loose- dropped); skip-/disable- give the value 0."""
    name = raw.lower().replace("-", "_")
    name = name[len("loose_"):] if name.startswith("loose_") else name
    for prefix, value in (("skip_", "0"), ("disable_", "0"), ("enable_", "1")):
        if name.startswith(prefix):
            return name[len(prefix):], value
    return name, None


def _applies(group: str) -> bool:
    group = group.strip().lower()
    base = re.sub(r"-\d+(\.\d+)*$", "", group)
    return base in MARIADB_GROUPS


def read_my_cnf(path: str, settings: dict[str, Setting], problems: list[ConfigError], depth: int = 0) -> None:
    """Apply the server's options of the file to ``settings``, following !include and !includedir."""
    lines = _lines(path, problems, depth)
    if lines is None:
        return
    active = False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("!includedir "):
            for file in sorted(glob.glob(os.path.join(stripped.split(None, 1)[1], "*.cnf"))):
                read_my_cnf(file, settings, problems, depth + 1)
        elif stripped.startswith("!include "):
            read_my_cnf(stripped.split(None, 1)[1], settings, problems, depth + 1)
        elif section := CNF_SECTION.match(line):
            active = _applies(section[1])
        elif active and not stripped.startswith(("#", ";")) and (option := CNF_OPTION.match(line)):
            name, forced = _cnf_name(option[1])
            settings[name] = Setting(forced or _cnf_value(option[2]), path)


def _off(value: str) -> bool:
    return value.lower() in ("0", "off", "false")


def check_mariadb(file: str) -> list[Finding]:
    """InnoDB commits flushed at each commit, the binary log synced at each commit, doublewrite on."""
    settings: dict[str, Setting] = {}
    problems: list[ConfigError] = []
    read_my_cnf(file, settings, problems)
    findings = [Finding(problem, True) for problem in problems]
    flush = settings.get("innodb_flush_log_at_trx_commit")
    if flush and flush.value.strip() != "1":
        findings.append(Finding(ConfigError(flush.file, "innodb_flush_log_at_trx_commit", (
            f"is {flush.value!r}: InnoDB acknowledges commits before its redo log is on disk; a failover "
            "loses them; set it to 1")), True))
    doublewrite = settings.get("innodb_doublewrite")
    if doublewrite and _off(doublewrite.value):
        findings.append(Finding(ConfigError(doublewrite.file, "innodb_doublewrite", (
            "is off: a page torn by the failover cannot be repaired; turn it on")), True))
    binlog = settings.get("log_bin")
    if binlog is not None and not _off(binlog.value):
        sync = settings.get("sync_binlog")
        if sync is None or sync.value.strip() != "1":
            where = sync.file if sync else file
            said = f"is {sync.value!r}" if sync else "is not set (default 0)"
            findings.append(Finding(ConfigError(where, "sync_binlog", (
                f"{said} while log_bin is on: the binary log is not synced at each commit; after a failover "
                "it misses acknowledged transactions (replicas and point-in-time recovery diverge); set it to 1")),
                True))
    return findings
