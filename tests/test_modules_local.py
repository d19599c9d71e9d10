"""The shipped modules' scripts and checkers with their real servers (Debian's packages), on this
machine's loopback, without the lab and without replication: what a stop, a hang and a stale pid
file do. The agent's own runner and checkers run them (``ScriptRunner``, ``checkers.build``).
Failover with replication is proven in the lab (``test_modules_lab.py``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from hamirror.actions.checkers import Checker, build
from hamirror.actions.scripts import ScriptRunner
from hamirror.config.cluster import ClusterConfig
from hamirror.config.loader import load_cluster, load_modules
from hamirror.config.module import ModuleConfig
from hamirror.modkit import scaffold
from tests import configfiles, ports
from tests.configfiles import edit
from tests.conftest import REPO

SERVERS = {"postgresql": "/usr/lib/postgresql/15/bin/postgres", "mariadb": "/usr/sbin/mariadbd",
           "nginx": "/usr/sbin/nginx"}
# A cluster on loopback: the VIP (127.0.0.2/8, on lo) is in the nodes' network and always local.
CLUSTER = edit(configfiles.CLUSTER, {'name = "lab"': 'name = "local"', '"198.18.0.1"': '"127.0.0.1"',
                                     '"198.18.0.2"': '"127.0.0.3"'})


def missing(template: str) -> str | None:
    if os.geteuid() != 0:
        return "needs root (the servers run as their own users)"
    if not os.path.exists(SERVERS[template]) or shutil.which("curl") is None:
        return f"{SERVERS[template]} or curl missing: run scripts/setup.sh"
    return None


def free_port() -> int:
    return ports.free_port("127.0.0.2")


@dataclass
class Local:
    """One module made by the kit, run on 127.0.0.2 (the VIP, on lo) with its own ports and paths."""

    root: Path
    module: ModuleConfig
    cluster: ClusterConfig

    def run(self, script: str, state: str = "PRIM", writes_refused: bool = False) -> str:
        result = ScriptRunner(self.module, self.cluster).run(script, state, writes_refused=writes_refused)
        log = (Path(self.cluster.module_state_dir(self.module.name)) / "scripts.log").read_text()
        assert result.ok, f"{script}: {result.detail}\n{log[-3000:]}"
        return log

    def checker(self) -> Checker:
        return build(self.module.checkers[0], self.module, self.cluster)

    def server_pid(self, pid_file: str) -> int:
        return int(Path(pid_file).read_text().split()[0])


def shipped(name: str, root: Path) -> Path:
    """The repository's modules/NAME (what ships, not the kit's template) on this machine's paths."""
    folder = Path(shutil.copytree(os.path.join(REPO, "modules", name), root / "modules" / name))
    doc = tomllib.loads((folder / "module.toml").read_text())
    (folder / "module.toml").write_text(edit((folder / "module.toml").read_text(), {
        f'"{doc["directories"][0]["path"]}"': f'"{root}/data"', f'"{doc["vip"]["address"]}"': '"127.0.0.2/8"',
        f'interface = "{doc["vip"]["interface"]}"': 'interface = "lo"'}))
    return folder


@pytest.fixture
def local(request) -> Iterator[Local]:
    """request.param: a kit template ("mariadb"), or "shipped/NAME" for the repository's modules/NAME."""
    template = request.param.removeprefix("shipped/")
    why = missing(template)
    if why:
        pytest.skip(why)
    root = Path(tempfile.mkdtemp(prefix=f"hamirror-{template}-"))   # not under pytest's 0700 tmp: the
    root.chmod(0o755)                                                # server's user must reach it
    try:
        (root / "hamirror.toml").write_text(CLUSTER)
        if request.param.startswith("shipped/"):
            folder = shipped(template, root)
        else:
            values = scaffold.values_for(template, template, str(root / "modules"), vip="127.0.0.2/8",
                                         interface="lo", directory=str(root / "data"))
            folder = Path(scaffold.create(values, str(root / "modules")))
        toml = (folder / "module.toml").read_text()
        for key, value in (("port", str(free_port())), ("server_dir", f'"{root}/sock"'),
                           ("stop_timeout", "3"), ("start_timeout", "60")):
            toml = "\n".join(f"{key} = {value}" if line.startswith(f"{key} = ") else line for line in toml.splitlines())
        (folder / "module.toml").write_text(toml + "\n")
        (root / "data").mkdir()
        cluster = load_cluster(str(root / "hamirror.toml"))
        os.makedirs(cluster.module_run_dir(template), mode=0o700)     # as the agent makes it: root only
        yield Local(root, load_modules(cluster)[0], cluster)
    finally:
        _stop_everything_under(root)
        shutil.rmtree(root, ignore_errors=True)


def _stop_everything_under(root: Path) -> None:
    """Kill the servers a failed test left (by pid: those working in or configured under root)."""
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        try:
            if str(root) in " ".join(proc.info["cmdline"] or ()) or str(proc.info["cwd"] or "").startswith(str(root)):
                proc.kill()
        except psutil.Error:
            continue


def wait_result(checker: Checker, healthy: bool, timeout: float = 30.0) -> str | None:
    deadline = time.monotonic() + timeout
    while True:
        result = checker.check()
        if (result is None) == healthy or time.monotonic() > deadline:
            return result
        time.sleep(0.3)


def stopped(pid: int) -> bool:
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def hang_and_resume(checker: Checker, pid: int) -> str:
    """SIGSTOP the server (a hung one: its port is open, nothing answers); the checker's verdict."""
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        verdict = checker.check()
        assert time.monotonic() - started <= checker.timeout + 1
        return verdict or "healthy"
    finally:
        os.kill(pid, signal.SIGCONT)


@pytest.mark.root
@pytest.mark.parametrize("local", ["postgresql"], indirect=True)
def test_postgresql_start_idempotent_hang_stale_pid_and_bounded_stop(local):
    log = local.run("start_prim")
    assert "first start: initdb" in log and "ready (pid" in log
    pgdata = local.root / "data" / "data"
    assert pgdata.stat().st_uid == pwd_uid("postgres")
    assert "already running" in local.run("start_prim")
    checker = local.checker()
    assert wait_result(checker, True) is None
    pid = local.server_pid(str(pgdata / "postmaster.pid"))
    assert hang_and_resume(checker, pid) != "healthy"           # a hung server fails the check
    assert wait_result(checker, True) is None

    # Stop within its bound even when the server ignores fast and immediate shutdown (stopped).
    os.kill(pid, signal.SIGSTOP)
    started = time.monotonic()
    log = local.run("stop_prim", "STOP")
    assert "fast shutdown did not end" in log and "KILL" in log and stopped(pid)
    assert time.monotonic() - started < 3 + 10 + 10

    # The replicated postmaster.pid names a live process here that is no postgres of this directory.
    foreign = subprocess.Popen(["sleep", "300"])
    try:
        (pgdata / "postmaster.pid").write_text(f"{foreign.pid}\n{pgdata}\n")
        log = local.run("start_prim")
        assert f"stale postmaster.pid (pid {foreign.pid} is no postgres" in log
        assert wait_result(checker, True) is None
    finally:
        foreign.kill()
        foreign.wait()
    local.run("stop_prim", "STOP")
    assert "not running" in local.run("stop_prim", "STOP")


@pytest.mark.root
@pytest.mark.parametrize("local", ["mariadb"], indirect=True)
def test_mariadb_start_idempotent_hang_and_stop(local):
    log = local.run("start_prim")
    assert "first start: mariadb-install-db" in log and "ready (pid" in log
    assert "already running" in local.run("start_prim")
    checker = local.checker()
    assert wait_result(checker, True) is None
    pid = local.server_pid(f"{local.root}/sock/mariadbd.pid")
    assert hang_and_resume(checker, pid) != "healthy"
    assert wait_result(checker, True) is None
    log = local.run("stop_prim", "STOP")
    assert f"stopped (pid {pid})" in log and stopped(pid)
    log = local.run("start_prim")                                # InnoDB and the binlog reopen cleanly
    assert "ready (pid" in log and "first start" not in log.split("start_prim\n")[-1]
    local.run("stop_prim", "STOP")


RECOVERED = ("mariadb start_prim: InnoDB holds 1 prepared transaction(s) and the binlog says it was closed cleanly "
             "(a power loss during a shutdown, between the binlog's close and InnoDB's): committing them with "
             "--tc-heuristic-recover=COMMIT, as MariaDB's binlog recovery would (every acknowledged commit is in the "
             "binlog), then starting again")
IN_USE = "this binlog is either in use or was not closed properly"


@pytest.mark.root
@pytest.mark.parametrize("local", ["shipped/mariadb"], indirect=True)
def test_mariadb_commits_prepared_transactions_left_behind_a_cleanly_closed_binlog(local):
    """Campaign 2321 (issue 16): power lost during a shutdown after MariaDB closed its binlog and
    before InnoDB's shutdown leaves a prepared transaction and a binlog marked closed; mariadbd
    then refused to start ("Found 1 prepared transactions!") and start_prim failed for good. Made
    here deterministically: a COMMIT held after InnoDB's prepare (group commit waits for a second
    committer), SIGKILL, the binlog's "in use" flag cleared. start_prim must commit it and start,
    with every acknowledged transfer there and the bank's total intact."""
    local.run("start_prim")
    client = ["mariadb", f"--socket={local.root}/sock/mysqld.sock", "-N", "-B", "-e"]

    def sql(query: str) -> str:
        return subprocess.run(client + [query], check=True, capture_output=True, text=True, timeout=30).stdout

    def transfer(amount: int, src: int, dst: int) -> str:
        return (f"START TRANSACTION; UPDATE bank.acct SET bal = bal - {amount} WHERE id = {src}; "
                f"UPDATE bank.acct SET bal = bal + {amount} WHERE id = {dst}; COMMIT")

    balances = {account: 100 for account in range(1, 6)}
    sql("CREATE DATABASE bank; CREATE TABLE bank.acct (id INT PRIMARY KEY, bal INT NOT NULL) ENGINE=InnoDB; "
        "INSERT INTO bank.acct VALUES " + ",".join(f"({account}, 100)" for account in balances))
    for amount in range(1, 11):                                  # acknowledged: they must all be there
        src, dst = amount % 5 + 1, (amount + 1) % 5 + 1
        sql(transfer(amount, src, dst))
        balances[src] -= amount
        balances[dst] += amount
    sql("SET GLOBAL binlog_commit_wait_count = 2, binlog_commit_wait_usec = 20000000")
    pending = subprocess.Popen(client + [transfer(7, 1, 2)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while "ACTIVE (PREPARED)" not in sql("SHOW ENGINE INNODB STATUS"):
            assert time.monotonic() < deadline, "the COMMIT never sat prepared"
            time.sleep(0.1)
        pid = local.server_pid(f"{local.root}/sock/mariadbd.pid")
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not stopped(pid):
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        pending.kill()
        pending.wait()

    # The binlog as its close leaves it: the format description event's flags (byte 21) without "in use".
    datadir = local.root / "data" / "data"
    binlog = datadir / Path((datadir / "mariadb-bin.index").read_text().split()[-1]).name
    dump = ["mariadb-binlog", "--stop-position=256", str(binlog)]
    assert IN_USE in subprocess.run(dump, check=True, capture_output=True, text=True).stdout
    with open(binlog, "r+b") as stream:
        stream.seek(21)
        assert stream.read(2) == b"\x01\x00"
        stream.seek(21)
        stream.write(b"\x00")
    assert IN_USE not in subprocess.run(dump, check=True, capture_output=True, text=True).stdout

    run = local.run("start_prim").split("start_prim\n")[-1]
    assert RECOVERED in run and "ready (pid" in run and run.count("starting MariaDB on") == 2, run
    balances[1] -= 7                                             # the prepared transfer was committed
    balances[2] += 7
    rows = sql("SELECT id, bal FROM bank.acct ORDER BY id")
    assert {int(a): int(b) for a, b in (line.split() for line in rows.splitlines())} == balances
    assert sql("CHECK TABLE bank.acct EXTENDED").split()[-1] == "OK"
    local.run("stop_prim", "STOP")
    run = local.run("start_prim").split("start_prim\n")[-1]
    assert "ready (pid" in run and "tc-heuristic-recover" not in run
    local.run("stop_prim", "STOP")


@pytest.mark.root
@pytest.mark.parametrize("local", ["nginx"], indirect=True)
def test_nginx_serves_uploads_and_a_hang_fails_the_check(local):
    local.run("start_prim")
    port = local.module.vars["port"]
    url = f"http://127.0.0.2:{port}/files/a.txt"
    # The module allows uploads from the lab's network only; loopback clients may only read.
    put = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT", "--data-binary", "x", url],
                         capture_output=True, text=True)
    assert put.stdout == "403"
    (local.root / "data" / "html" / "files").mkdir(parents=True)
    (local.root / "data" / "html" / "files" / "a.txt").write_text("hello\n")
    get = subprocess.run(["curl", "-fsS", url], capture_output=True, text=True)
    assert get.stdout == "hello\n"
    checker = local.checker()
    assert wait_result(checker, True) is None
    pid = local.server_pid(f"{local.root}/sock/nginx.pid")
    workers = psutil.Process(pid).children()
    for worker in workers:
        os.kill(worker.pid, signal.SIGSTOP)
    try:
        assert checker.check() is not None
    finally:
        for worker in workers:
            os.kill(worker.pid, signal.SIGCONT)
    assert wait_result(checker, True) is None
    assert f"stopped (pid {pid})" in local.run("stop_prim", "STOP")


def mounted(local: Local):
    """The module's directory on a real hamirror mount (ALONE: no peer here)."""
    from hamirror.agent.datapath import DataPath

    if not os.path.exists("/dev/fuse"):
        pytest.skip("needs FUSE")
    datapath = DataPath(local.module, local.cluster)
    datapath.mount(alone=True)
    return datapath


def started(local: Local) -> int:
    """start_prim, and the server's pid (PostgreSQL's or MariaDB's)."""
    local.run("start_prim")
    return local.server_pid(f"{local.root}/sock/.s.PGSQL.{local.module.vars['port']}.lock"
                            if local.module.name == "postgresql" else f"{local.root}/sock/mariadbd.pid")


@pytest.mark.root
@pytest.mark.parametrize("local", ["postgresql", "mariadb"], indirect=True)
def test_stop_prim_stops_the_server_on_a_dead_mount(local):
    """Issue 15, finding 2: the data directory on a real hamirror mount whose daemon is SIGKILLed
    (ENOTCONN for everyone). stop_prim must still find the server (from node-local files, not
    from PGDATA) and stop it itself, at once: nothing can be flushed there. Before, PostgreSQL's
    said "not running" while the postmaster lived."""
    datapath = mounted(local)
    try:
        pid = started(local)
        os.kill(int(datapath.mount_status(0)["pid"]), signal.SIGKILL)
        begun = time.monotonic()
        log = local.run("stop_prim", "STOP").split("--- ")[-3:]
        assert any("cannot be reached (a dead mount?)" in part for part in log), log
        assert any(f"stopped (pid {pid})" in part for part in log), log
        assert not any("process(es) left" in part for part in log), log     # the script did it, not the sweep
        assert stopped(pid) and time.monotonic() - begun < 15
    finally:
        datapath.unmount(force=True)


@pytest.mark.root
@pytest.mark.parametrize("local", ["postgresql", "mariadb"], indirect=True)
def test_stop_prim_stops_the_server_at_once_when_the_mount_refuses_writes(local):
    """Campaign 4213: a primary stepping down refuses writes (EIO), then runs stop_prim. MariaDB's
    clean shutdown, unable to flush, waited out its whole stop_timeout (60 s) while the peer waited
    to take over. Told so (HAMIRROR_WRITES_REFUSED, as the executor does when a mount is REFUSED:
    tests/test_agent_executor.py), both modules (the kit's templates, as shipped in modules/) stop
    the server at once without trying to flush, and it starts again from what the mount holds.
    (An ALONE mount here: only a mirroring one can be refused, and this test has no peer.)"""
    datapath = mounted(local)
    try:
        pid = started(local)
        begun = time.monotonic()
        log = local.run("stop_prim", "WAIT", writes_refused=True).split("--- ")[-3:]
        took = time.monotonic() - begun
        assert any("the mount refuses writes (stepping down)" in part for part in log), log
        assert stopped(pid) and took < 15, f"stopped in {took:.1f} s"
    finally:
        datapath.unmount(force=True)
    datapath.mount(alone=True)
    try:
        started(local)
        assert wait_result(local.checker(), healthy=True) is None
        local.run("stop_prim", "STOP")
    finally:
        datapath.unmount(force=True)


def pwd_uid(user: str) -> int:
    import pwd
    return pwd.getpwnam(user).pw_uid
