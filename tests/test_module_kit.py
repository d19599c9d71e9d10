"""The module kit: ``hamirror module new`` and ``module check`` (config, rendering, durability), and
the shipped modules being exactly what the kit makes."""

from __future__ import annotations

import filecmp
import os
import subprocess
from pathlib import Path

import psutil
import pytest

from hamirror.lab import agent as labagent
from hamirror.lab import nodeconfig
from hamirror.lab.naming import LabPaths
from hamirror.lab.state import Started
from hamirror.modkit import durability, scaffold
from tests.conftest import run_cli
from tests.configfiles import write_cluster, write_module

REPO_MODULES = Path(__file__).resolve().parent.parent / "modules"


def new(tmp_path: Path, name: str, *args: str) -> subprocess.CompletedProcess:
    return run_cli("module", "new", name, "-c", str(tmp_path / "hamirror.toml"), *args)


def check(tmp_path: Path, target: str, *args: str) -> subprocess.CompletedProcess:
    return run_cli("module", "check", target, "-c", str(tmp_path / "hamirror.toml"), *args)


@pytest.mark.parametrize("template", scaffold.TEMPLATES)
def test_every_template_scaffolds_a_module_that_checks_and_renders_as_bash(tmp_path, template):
    write_cluster(tmp_path)
    made = new(tmp_path, "my-app", "--template", template)
    assert made.returncode == 0, made.stderr
    folder = tmp_path / "modules" / "my-app"
    assert sorted(os.listdir(folder)) == sorted(scaffold.template_files(template))
    assert 'name = "my-app"' in (folder / "module.toml").read_text()
    assert "/srv/hamirror-my-app" in (folder / "module.toml").read_text()
    result = check(tmp_path, "my-app")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"OK: module my-app ({folder}), scripts rendered for node node1")
    for script in ("start_prim", "stop_prim", "start_second", "stop_second"):
        shown = check(tmp_path, "my-app", "--show", script)
        assert shown.returncode == 0, shown.stderr
        assert "{{" not in shown.stdout and "{%" not in shown.stdout
        syntax = subprocess.run(["bash", "-n"], input=shown.stdout, capture_output=True, text=True)
        assert syntax.returncode == 0, f"{script}: {syntax.stderr}"
    assert subprocess.run(["bash", "-n", str(folder / "check")]).returncode == 0


@pytest.mark.parametrize("template", scaffold.TEMPLATES)
def test_the_shipped_module_is_what_the_kit_makes(tmp_path, template):
    """modules/TEMPLATE is generated ('hamirror module new T --template T --dir modules'): no drift."""
    values = scaffold.values_for(template, template, str(tmp_path), directory=f"/srv/hamirror-{template}")
    made = Path(scaffold.create(values, str(tmp_path)))
    shipped = REPO_MODULES / template
    assert sorted(os.listdir(shipped)) == sorted(os.listdir(made))
    _, mismatch, errors = filecmp.cmpfiles(shipped, made, os.listdir(made), shallow=False)
    assert (mismatch, errors) == ([], []), f"regenerate modules/{template} with 'hamirror module new'"
    for entry in os.listdir(made):
        assert os.stat(shipped / entry).st_mode & 0o777 == os.stat(made / entry).st_mode & 0o777, entry


def test_new_picks_the_next_free_replication_port_and_refuses_to_overwrite(tmp_path):
    write_cluster(tmp_path)
    assert new(tmp_path, "db1", "--template", "postgresql").returncode == 0
    assert new(tmp_path, "db2", "--template", "postgresql", "--directory", "/srv/db2",
               "--vip", "198.18.0.101/24").returncode == 0   # each module its own VIP
    assert "replication_port = 7421" in (tmp_path / "modules" / "db2" / "module.toml").read_text()
    again = new(tmp_path, "db1", "--template", "postgresql")
    assert again.returncode == 1 and "exists already" in again.stderr
    assert check(tmp_path, "db2").returncode == 0


def test_new_makes_the_modules_directory_of_a_fresh_install(tmp_path):
    """Finding (issue 17): nothing made /etc/hamirror/modules, and 'module new' then said 'no modules
    directory: give --dir, or a valid cluster file' about a valid cluster file."""
    path = write_cluster(tmp_path)
    os.rmdir(tmp_path / "modules")
    result = run_cli("module", "new", "app", "-c", path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"{tmp_path}/modules: modules directory created"
    assert (tmp_path / "modules" / "app" / "module.toml").is_file()


def test_the_postgresql_module_lets_the_vips_network_in(tmp_path):
    """Finding (issue 17): pg_hba.conf allowed the lab's 198.18.0.0/24 whatever --vip said, so
    clients of a real VIP were refused."""
    write_cluster(tmp_path)
    assert new(tmp_path, "pg", "--template", "postgresql", "--vip", "10.0.0.100/24").returncode == 0
    hba = (tmp_path / "modules" / "pg" / "pg_hba.conf").read_text().splitlines()
    assert [line.split() for line in hba if line.startswith("host")] == [
        ["host", "all", "all", "127.0.0.1/32", "scram-sha-256"], ["host", "all", "all", "10.0.0.0/24", "scram-sha-256"]]


def test_new_skips_every_port_of_a_module_with_two_directories(tmp_path):
    """Finding (issue 17): a module with two directories listens on replication_port and the next
    one; 'module new' took the next port, and config check then refused it."""
    write_cluster(tmp_path)
    assert new(tmp_path, "db1", "--template", "postgresql").returncode == 0
    toml = tmp_path / "modules" / "db1" / "module.toml"
    toml.write_text(toml.read_text() + '\n[[directories]]\npath = "/srv/db1-wal"\n')
    assert new(tmp_path, "db2", "--template", "postgresql", "--directory", "/srv/db2",
               "--vip", "198.18.0.101/24").returncode == 0
    assert "replication_port = 7422" in (tmp_path / "modules" / "db2" / "module.toml").read_text()


@pytest.mark.parametrize("args, message", [
    (["Bad Name"], "use lowercase letters"),
    (["ok", "--directory", "relative"], "must be an absolute path"),
    (["ok", "--vip", "198.18.0.100"], "prefix length"),
])
def test_new_names_what_is_wrong(tmp_path, args, message):
    write_cluster(tmp_path)
    result = new(tmp_path, *args)
    assert result.returncode == 1 and message in result.stderr


def test_new_without_cluster_file_needs_dir(tmp_path):
    result = run_cli("module", "new", "x", "-c", str(tmp_path / "none.toml"))
    assert (result.returncode, result.stderr) == (2, f"hamirror: no modules directory: give --dir, or fix the "
                                                     f"cluster file: {tmp_path}/none.toml: cannot read: No such file "
                                                     "or directory\n")
    assert run_cli("module", "new", "x", "-c", str(tmp_path / "none.toml"), "--dir", str(tmp_path)).returncode == 0


def test_check_reports_the_loaders_problems_with_file_and_key(tmp_path):
    write_cluster(tmp_path)
    folder = write_module(tmp_path, scripts={"start_prim": "#!/bin/sh\necho {{ prot }}\n"})
    result = check(tmp_path, "app")
    assert result.returncode == 2
    assert f"{folder}/start_prim: line 2: cannot render: 'prot' is undefined" in result.stderr


def test_check_a_folder_outside_modules_dir_against_the_installed_modules(tmp_path):
    write_cluster(tmp_path)
    write_module(tmp_path)                                   # app, port 7410, /srv/app
    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    assert run_cli("module", "new", "web", "--dir", str(elsewhere), "--replication-port", "7410",
                   "--directory", "/srv/app/web").returncode == 0
    result = check(tmp_path, str(elsewhere / "web"))
    assert result.returncode == 2
    assert "module.replication_port: port 7410 is also used by module 'app'" in result.stderr
    assert "directories[0].path: /srv/app/web overlaps /srv/app of module 'app'" in result.stderr


def test_check_an_unknown_module(tmp_path):
    write_cluster(tmp_path)
    result = check(tmp_path, "nope")
    assert result.returncode == 2 and "no module 'nope' here" in result.stderr


def test_check_refuses_fsync_off_and_warns_of_synchronous_commit_off(tmp_path):
    write_cluster(tmp_path)
    assert new(tmp_path, "pg", "--template", "postgresql").returncode == 0
    conf = tmp_path / "modules" / "pg" / "postgresql.conf"
    conf.write_text(conf.read_text().replace("synchronous_commit = on", "synchronous_commit = off"))
    warned = check(tmp_path, "pg")
    assert warned.returncode == 0, warned.stderr
    assert f"{conf}: synchronous_commit: warning: is 'off'" in warned.stderr and "1 warning(s)" in warned.stdout
    conf.write_text(conf.read_text().replace("fsync = on", "fsync = off"))
    refused = check(tmp_path, "pg")
    assert refused.returncode == 2
    assert f"{conf}: fsync: is 'off': a commit is acknowledged before it is on disk" in refused.stderr


def test_postgresql_settings_follow_includes_and_the_last_value_wins(tmp_path):
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "10-fast.conf").write_text("full_page_writes = 'false'   # tempting\n")
    (tmp_path / "main.conf").write_text("fsync off\nfsync = on\ninclude_dir 'conf.d'\n"
                                        "include_if_exists 'missing.conf'\n")
    auto = tmp_path / "postgresql.auto.conf"
    auto.write_text("synchronous_commit = 'off'\n")
    findings = durability.check_postgresql([str(tmp_path / "main.conf"), str(auto), str(tmp_path / "absent")])
    assert [(f.error.file, f.error.key, f.fatal) for f in findings] == [
        (str(tmp_path / "conf.d" / "10-fast.conf"), "full_page_writes", True),
        (str(auto), "synchronous_commit", False)]


def test_postgresql_missing_main_file_is_an_error(tmp_path):
    findings = durability.check_postgresql([str(tmp_path / "nope.conf")])
    assert [str(f.error) for f in findings] == [f"{tmp_path}/nope.conf: cannot read: No such file or directory"]


@pytest.mark.parametrize("cnf, key", [
    ("[mysqld]\ninnodb_flush_log_at_trx_commit = 2\n", "innodb_flush_log_at_trx_commit"),
    ("[mariadb-10.11]\nlog-bin\n", "sync_binlog"),
    ("[server]\nlog_bin = x\nsync-binlog = 0\n", "sync_binlog"),
    ("[mariadbd]\nskip-innodb-doublewrite\n", "innodb_doublewrite"),
    ("[mariadbd]\nloose-innodb-flush-log-at-trx-commit = '0'\n", "innodb_flush_log_at_trx_commit"),
])
def test_mariadb_settings_that_lose_commits_are_errors(tmp_path, cnf, key):
    (tmp_path / "my.cnf").write_text(cnf)
    findings = durability.check_mariadb(str(tmp_path / "my.cnf"))
    assert [(f.error.key, f.fatal) for f in findings] == [(key, True)]


def test_mariadb_reads_only_the_servers_groups_and_follows_includes(tmp_path):
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "a.cnf").write_text("[mysqld]\nlog_bin\nsync_binlog = 1\n")
    (tmp_path / "my.cnf").write_text(f"[client]\ninnodb_flush_log_at_trx_commit = 0\n[mariadbd]\n"
                                     f"innodb_flush_log_at_trx_commit = 1  # durable\n!includedir {tmp_path}/extra\n")
    assert durability.check_mariadb(str(tmp_path / "my.cnf")) == []


def test_shipped_server_configs_are_durable():
    assert durability.check_postgresql([str(REPO_MODULES / "postgresql" / "postgresql.conf")]) == []
    assert durability.check_mariadb(str(REPO_MODULES / "mariadb" / "my.cnf")) == []


def test_the_lab_waits_for_a_module_folder_under_its_configured_name(tmp_path):
    """Finding (issue 9, item 7): 'lab up --module PATH' waited for the folder's name until timeout."""
    assert run_cli("module", "new", "web1", "--dir", str(tmp_path)).returncode == 0
    (tmp_path / "web1").rename(tmp_path / "folder-x")
    assert nodeconfig.module_name(str(tmp_path / "folder-x")) == "web1"
    assert nodeconfig.module_name("demo") == "demo"
    assert nodeconfig.module_name("not-a-module") == "not-a-module"
    mirrored = {"node1": "PRIM", "node2": "SECOND"}

    def status(paths, node):
        return {"modules": [{"name": "web1", "state": mirrored[node], "uptodate": True}]}

    me = Started("node1", "agent", os.getpid(), psutil.Process().create_time(), ["pytest"])   # alive
    labagent.wait_ready(LabPaths(str(tmp_path)), [me], [str(tmp_path / "folder-x")], timeout=5,
                        status=status, poll=0.01)


def test_check_needs_the_servers_user_and_binaries_on_this_node(tmp_path):
    write_cluster(tmp_path)
    assert new(tmp_path, "pg", "--template", "postgresql").returncode == 0
    toml = tmp_path / "modules" / "pg" / "module.toml"
    toml.write_text(toml.read_text().replace('os_user = "postgres"', 'os_user = "no-such-user"')
                    .replace('pg_bin = "/usr/lib/postgresql/15/bin"', 'pg_bin = "/usr/lib/postgresql/99/bin"'))
    result = check(tmp_path, "pg")
    assert result.returncode == 2
    assert f"{toml}: vars.os_user: no user 'no-such-user' on this node" in result.stderr
    assert f"{toml}: vars.pg_bin: /usr/lib/postgresql/99/bin is not a directory on this node" in result.stderr
