"""The application's processes are known, and a stop leaves none (issue 15, what to build 4).

Real processes: a module whose start_prim leaves a daemon in its own session (as pg_ctl and
mariadbd do), and whose stop_prim may lie (PostgreSQL's read postmaster.pid through a dead mount
and said "not running"). Each hierarchy this host has is tried: cgroup v2 (unified), cgroup v1
(pids), and the process-tree fallback.
"""

from __future__ import annotations

import os

import pytest

from hamirror.actions import appprocs
from hamirror.actions.scripts import ScriptRunner
from hamirror.config import load_cluster, load_modules
from hamirror.config.errors import ConfigError
from tests.configfiles import write_cluster, write_module

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="cgroups need root")

# A daemon in its own session that ignores SIGTERM (only SIGKILL ends it), as a stuck server would.
START = """#!/bin/bash
setsid bash -c 'trap "" TERM; echo $$ > {{ run_dir }}/daemon.pid; exec sleep 300' </dev/null >/dev/null 2>&1 &
for i in $(seq 100); do [ -s {{ run_dir }}/daemon.pid ] && exit 0; sleep 0.02; done
exit 1
"""
LYING_STOP = "#!/bin/bash\necho not running\nexit 0\n"      # what PostgreSQL's said on a dead mount
FAILING_STOP = "#!/bin/bash\necho cannot read the pid file >&2\nexit 1\n"

KINDS = [kind for kind in ("cgroup2", "cgroup1") if any(k == kind for k, _ in appprocs.hierarchies())] + ["tree"]


def runner(tmp_path, kind: str, stop: str = LYING_STOP, extra: str = "kill_after = 0.5") -> ScriptRunner:
    path = write_cluster(tmp_path)
    write_module(tmp_path, replace={"replication_port = 7410": f"replication_port = 7410\n\n[scripts]\n{extra}"},
                 scripts={"start_prim": START, "stop_prim": stop})
    cluster = load_cluster(path)
    module = load_modules(cluster)[0]
    os.makedirs(cluster.module_run_dir("app"), exist_ok=True)
    os.makedirs(cluster.state_dir, exist_ok=True)
    instance = appprocs.instance_name(cluster.local_name, cluster.state_dir)
    return ScriptRunner(module, cluster, appprocs.open_group(instance, "app", kinds=(kind,)))


def daemon_pid(scripts: ScriptRunner) -> int:
    with open(os.path.join(scripts.cluster.module_run_dir("app"), "daemon.pid")) as f:
        return int(f.read())


def alive(pid: int) -> bool:
    return appprocs._alive(pid)


@pytest.fixture
def cleanup():
    made: list[ScriptRunner] = []
    yield made.append
    for scripts in made:
        appprocs.sweep(scripts.group, 0.0, term=False)
        appprocs.remove_instance(scripts.group.instance)     # and the top folder, once no one uses it


@pytest.mark.parametrize("kind", KINDS)
def test_a_lying_stop_prim_is_made_true(tmp_path, cleanup, kind):
    """stop_prim says "not running" while the daemon it started lives: the stop still ends with
    no process of the application left (TERM ignored, so KILL after kill_after)."""
    scripts = runner(tmp_path, kind)
    cleanup(scripts)
    assert scripts.run("start_prim", "ALONE").ok
    pid = daemon_pid(scripts)
    assert alive(pid) and pid in scripts.group.pids()
    assert os.getsid(pid) == pid                  # its own session: the script's group kill misses it
    result = scripts.run("stop_prim", "STOP")
    assert result.ok
    assert not alive(pid)
    log = open(scripts.log_path).read()
    assert f"stop_prim: 1 process(es) left: SIGTERM [{pid}]; SIGKILL after 0.5 s [{pid}]; none left" in log
    if kind != "tree":
        assert not os.path.exists(scripts.group.path)       # removed once empty


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "tree"])
def test_a_failed_stop_prim_with_nothing_left_is_a_stop(tmp_path, cleanup, kind):
    """With a cgroup, no process left *is* the stop, whatever the script says."""
    scripts = runner(tmp_path, kind, stop=FAILING_STOP)
    cleanup(scripts)
    assert scripts.run("start_prim", "ALONE").ok
    pid = daemon_pid(scripts)
    result = scripts.run("stop_prim", "STOP")
    assert result.ok and "no process left: stopped" in result.detail
    assert not alive(pid)


def test_without_a_cgroup_a_failed_stop_prim_stays_a_failure(tmp_path, cleanup):
    """The process tree can be left (a process clearing its environment): the script's word stands."""
    scripts = runner(tmp_path, "tree", stop=FAILING_STOP)
    cleanup(scripts)
    assert scripts.run("start_prim", "ALONE").ok
    pid = daemon_pid(scripts)
    result = scripts.run("stop_prim", "STOP")
    assert not result.ok and not alive(pid)


@pytest.mark.parametrize("kind", KINDS)
def test_two_nodes_on_one_host_never_see_each_other(tmp_path, cleanup, kind):
    """Two agents (lab nodes, or labs) on one host: same module name, same node name, different
    state directories: each sees and stops only its own application."""
    one, two = runner(tmp_path / "a", kind), runner(tmp_path / "b", kind)
    cleanup(one)
    cleanup(two)
    assert one.run("start_prim", "ALONE").ok and two.run("start_prim", "ALONE").ok
    pid_one, pid_two = daemon_pid(one), daemon_pid(two)
    assert one.group.pids() == {pid_one} and two.group.pids() == {pid_two}
    assert one.run("stop_prim", "STOP").ok
    assert not alive(pid_one) and alive(pid_two)
    assert two.kill_app() == [pid_two] and not alive(pid_two)


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "tree"])
def test_lab_down_removes_an_instance_and_kills_what_it_holds(tmp_path, cleanup, kind):
    scripts = runner(tmp_path, kind)
    cleanup(scripts)
    assert scripts.run("start_prim", "ALONE").ok
    pid = daemon_pid(scripts)
    removed = appprocs.remove_instance(scripts.group.instance)
    assert not alive(pid)
    assert os.path.dirname(scripts.group.path) in removed and not os.path.exists(scripts.group.path)


def test_kill_after_is_validated_with_file_key_and_problem(tmp_path):
    path = write_cluster(tmp_path)
    folder = write_module(tmp_path, replace={"replication_port = 7410": "replication_port = 7410\n\n[scripts]\n"
                                                                         "kill_after = 0"})
    with pytest.raises(ConfigError) as caught:
        load_modules(load_cluster(path))
    assert f"{folder}/module.toml: scripts.kill_after: must be a number greater than 0" in str(caught.value)


def test_the_default_kill_after(tmp_path):
    path = write_cluster(tmp_path)
    write_module(tmp_path)
    assert load_modules(load_cluster(path))[0].scripts.kill_after == 10.0


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "tree"])
def test_a_term_that_works_needs_no_kill(tmp_path, cleanup, kind):
    """A process that honours SIGTERM is not SIGKILLed (it may flush on the way out)."""
    scripts = runner(tmp_path, kind, extra="kill_after = 30")
    cleanup(scripts)
    child = os.fork()
    if child == 0:
        os.execvp("sleep", ["sleep", "300"])
    try:
        os.makedirs(scripts.group.path, exist_ok=True)
        with open(os.path.join(scripts.group.path, "cgroup.procs"), "w") as f:
            f.write(str(child))
        swept = appprocs.sweep(scripts.group, 30.0)
        assert swept == appprocs.Sweep(termed=(child,))
    finally:
        os.waitpid(child, 0)
