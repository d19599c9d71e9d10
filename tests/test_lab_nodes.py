"""Lab nodes for real: separate disks per node, exec, power loss and reboot, several labs (needs root)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from hamirror.lab import agent, process
from hamirror.lab.naming import ADDRESSES
from hamirror.lab.shell import LabError
from hamirror.lab.testing import temporary_lab, unavailable

pytestmark = [pytest.mark.root, pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))]


@pytest.fixture
def module_dir(tmp_path):
    path = tmp_path / "modules" / "kv"
    path.mkdir(parents=True)
    (path / "module.toml").write_text('[module]\nname = "kv"\n')
    (path / "start_prim").write_text("#!/bin/sh\n")
    return str(path)


@pytest.fixture
def lab(tmp_path, module_dir):
    with temporary_lab(str(tmp_path / "lab"), "--module", module_dir) as lab:
        yield lab


def test_the_same_paths_are_different_disks_on_each_node(lab):
    lab.sh("node1", "echo one > /srv/who; echo s1 > /var/lib/hamirror/s")
    lab.sh("node2", "echo two > /srv/who")
    assert lab.sh("node1", "cat /srv/who") == "one\n"
    assert lab.sh("node2", "cat /srv/who") == "two\n"
    assert lab.sh("node2", "ls /var/lib/hamirror") == ""
    assert open(os.path.join(lab.root, "node1", "srv", "who")).read() == "one\n"
    assert not os.path.exists("/srv/who")


def test_each_node_gets_its_config_keys_and_modules(lab):
    for me, peer in (("node1", "node2"), ("node2", "node1")):
        assert f'node = "{me}"' in lab.sh(me, "cat $HAMIRROR_CONFIG")
        assert sorted(lab.sh(me, "ls /etc/hamirror/keys").split()) == sorted([f"{me}.key", f"{me}.key_secret", f"{peer}.key"])
        assert lab.sh(me, "cat /etc/hamirror/modules/kv/module.toml") == '[module]\nname = "kv"\n'
    keys = [os.path.join(lab.root, n, "etc", "cluster.key") for n in ("node1", "node2")]
    assert open(keys[0], "rb").read() == open(keys[1], "rb").read()
    assert len(open(keys[0], "rb").read()) == 32
    assert all(stat.S_IMODE(os.stat(k).st_mode) == 0o600 for k in keys)
    peer_public = os.path.join(lab.root, "node2", "etc", "keys", "node1.key")
    assert open(peer_public).read() == open(os.path.join(lab.root, "node1", "etc", "keys", "node1.key")).read()


def test_exec_passes_stdin_stdout_and_the_exit_code(lab):
    result = lab.exec("node2", "sh", "-c", 'read x; echo "got $x"; echo oops >&2; exit 7', input="hello\n")
    assert result.returncode == 7
    assert result.stdout == "got hello\n"
    assert result.stderr == "oops\n"
    assert lab.exec("client", "sh", "-c", 'echo "[$HAMIRROR_CONFIG]"').stdout == "[]\n"
    assert lab.exec("node1", "sh", "-c", 'echo "$HAMIRROR_CONFIG"').stdout == "/etc/hamirror/hamirror.toml\n"
    root_after_host = subprocess.run([sys.executable, "-m", "hamirror", "lab", "exec", "node1", "--root", lab.root,
                                      "--", "echo", "--root", "x"], capture_output=True, text=True, timeout=60)
    assert (root_after_host.returncode, root_after_host.stdout) == (0, "--root x\n")
    unknown = lab.exec("nodeX", "true")
    assert unknown.returncode == 1 and "unknown host 'nodeX'" in unknown.stderr


def _sleep_pids(lab, host: str) -> list[int]:
    lines = [line for line in lab.cli("status").stdout.splitlines()]
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{host}:"))
    block = []
    for line in lines[start + 1:]:
        if not line.startswith("  "):
            break
        block.append(line)
    return [int(line.split()[1].rstrip(":")) for line in block if line.strip().startswith("pid") and "sleep" in line]


def test_kill_ends_every_process_of_the_node_and_boot_gives_fresh_mounts(lab):
    lab.sh("node1", "mkdir -p /srv/scratch && mount -t tmpfs scratch /srv/scratch && echo volatile > /srv/scratch/f")
    lab.sh("node1", "echo durable > /srv/keep; setsid sleep 600 >/dev/null 2>&1 < /dev/null &")
    lab.sh("node2", "setsid sleep 600 >/dev/null 2>&1 < /dev/null &")
    node1_sleeps, node2_sleeps = _sleep_pids(lab, "node1"), _sleep_pids(lab, "node2")
    assert len(node1_sleeps) == 1 and len(node2_sleeps) == 1

    booted_too_early = lab.cli("boot", "node1", "--no-agent")
    assert booted_too_early.returncode == 1 and "is running" in booted_too_early.stderr

    killed = lab.cli("kill", "node1")
    assert killed.returncode == 0, killed.stderr
    assert not process.is_running(node1_sleeps[0])
    assert _sleep_pids(lab, "node2") == node2_sleeps

    booted = lab.cli("boot", "node1", "--no-agent")
    assert booted.returncode == 0, booted.stderr
    assert lab.sh("node1", "cat /srv/keep") == "durable\n"
    assert lab.sh("node1", "ls -A /srv/scratch") == ""
    assert "/srv/scratch" not in lab.sh("node1", "cat /proc/self/mounts")
    assert lab.probe("node1", ADDRESSES["node2"]) == "reachable"


def test_an_agent_that_dies_fails_the_wait_quoting_its_log(lab):
    dying = process.start(lab.paths, "node1", agent.AGENT,
                          [sys.executable, "-c", "print('cannot bind 198.18.0.1:7410', flush=True); raise SystemExit(3)"])
    with pytest.raises(LabError) as err:
        agent.wait_ready(lab.paths, [dying], ["kv"], timeout=20, poll=0.1)
    assert "the agent on node1 exited" in str(err.value)
    assert "cannot bind 198.18.0.1:7410" in str(err.value)


SERVE_ONCE = "import socket; s = socket.create_server(('198.18.0.2', 7777)); c, _ = s.accept(); c.sendall(b'B')"
READ_ONE = """
import socket, time
for _ in range(30):
    try:
        print(socket.create_connection(('198.18.0.2', 7777), 2).recv(8).decode()); break
    except ConnectionRefusedError:
        time.sleep(0.1)
else:
    print("refused")
"""


def test_two_labs_coexist_and_down_touches_only_its_own(tmp_path):
    with temporary_lab(str(tmp_path / "a")) as lab_a:
        with temporary_lab(str(tmp_path / "b")) as lab_b:
            assert lab_a.paths.prefix != lab_b.paths.prefix
            lab_a.sh("node1", "echo A > /srv/lab")
            lab_b.sh("node1", "echo B > /srv/lab")
            assert lab_a.probe("node1", ADDRESSES["node2"]) == "reachable"
            assert lab_b.probe("client", ADDRESSES["node1"]) == "reachable"
            lab_b.sh("node2", f"setsid python3 -c {SERVE_ONCE!r} >/dev/null 2>&1 </dev/null &")
            assert lab_b.exec("node1", "python3", "-c", READ_ONE).stdout == "B\n"
            assert lab_a.exec("node1", "python3", "-c", READ_ONE).stdout == "refused\n"
        assert lab_a.sh("node1", "cat /srv/lab") == "A\n"
        assert lab_a.probe("client", ADDRESSES["node2"]) == "reachable"


DEAD_FUSE = """
import ctypes, os, sys
os.makedirs(sys.argv[1], exist_ok=True)
fd = os.open("/dev/fuse", os.O_RDWR)
data = f"fd={fd},rootmode=40000,user_id=0,group_id=0".encode()
if ctypes.CDLL(None, use_errno=True).mount(b"labtest", sys.argv[1].encode(), b"fuse.labtest", 0, data) != 0:
    raise SystemExit(os.strerror(ctypes.get_errno()))
"""


@pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")
def test_boot_releases_a_dead_fuse_mount_and_starts_without_any(lab):
    # A FUSE mount whose daemon is gone (the device fd closed when the process exited), as after a kill.
    lab.sh("node1", f"python3 -c '{DEAD_FUSE}' /srv/hamirror-demo")
    assert "fuse.labtest" in lab.sh("node1", "cat /proc/self/mounts")
    assert lab.exec("node1", "ls", "/srv/hamirror-demo").returncode != 0
    assert lab.cli("kill", "node1").returncode == 0
    assert lab.cli("boot", "node1", "--no-agent").returncode == 0
    mounts = lab.sh("node1", "cat /proc/self/mounts")
    assert " fuse" not in mounts
    assert lab.sh("node1", "ls -A /srv/hamirror-demo") == ""
