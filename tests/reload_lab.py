"""``hamirror reload`` on a running pair (root, lab): a module added on both nodes comes up
PRIM + SECOND and serves on its own VIP; its VIP changed, it serves the same data on the new one
(the application restarted around it, the mount kept); removed (``module remove`` on the secondary, then a
reload on the primary) it is stopped, unmounted, its VIP and state gone, its data kept; the demo
module beside it is not touched (same application, mount and receiver processes, same states). A
bad configuration, by ``hamirror reload`` or by SIGHUP, is refused and the agent goes on with the
running one. Run in tests/test_agent_lab.py's lab (one lab up less for the suite)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time

import psutil

from hamirror.agent.control import SOCKET_NAME, request
from hamirror.lab.nodeconfig import REPO_MODULES
from tests.agent_lab import tail

NODES = ("node1", "node2")
VIP2, VIP3 = "198.18.0.101", "198.18.0.102"


def install_demo2(lab) -> None:
    """The demo module again as ``demo2``: its own port, directory and VIP, on both nodes."""
    for node in NODES:
        folder = os.path.join(lab.paths.node_dir(node, "etc"), "modules", "demo2")
        shutil.copytree(os.path.join(REPO_MODULES, "demo"), folder)
        path = os.path.join(folder, "module.toml")
        text = open(path).read()
        for old, new in (('name = "demo"', 'name = "demo2"'), ("7410", "7420"),
                         ("/srv/hamirror-demo", "/srv/hamirror-demo2"), ("198.18.0.100/24", f"{VIP2}/24")):
            assert old in text
            text = text.replace(old, new)
        open(path, "w").write(text)
        os.makedirs(os.path.join(lab.paths.node_dir(node, "srv"), "hamirror-demo2"), exist_ok=True)


def reload(lab, node: str, *args: str):
    return lab.exec(node, "hamirror", *args, "--json", timeout=120)


def agent_pid(lab, node: str) -> int:
    return int(open(os.path.join(lab.paths.node_dir(node, "run"), "agent.pid")).read())


def demo_processes(lab) -> dict:
    """The demo module's application, mount and receiver processes (pid files and status files)."""
    def pid_in(path: str) -> int:
        return json.load(open(path))["pid"] if path.endswith(".json") else int(open(path).read())
    found = {"app": pid_in(os.path.join(lab.paths.node_dir("node1", "run"), "modules", "demo", "kvserver.pid")),
             "mount": pid_in(os.path.join(lab.paths.node_dir("node1", "state"), "modules", "demo", "0", "status.json")),
             "receiver": pid_in(os.path.join(lab.paths.node_dir("node2", "run"), "modules", "demo", "receiver-0.json"))}
    assert all(psutil.pid_exists(pid) for pid in found.values()), found
    return found


def modules(lab, node: str) -> dict[str, dict]:
    """The node's modules by name, asked on its control socket from here (no process to start)."""
    answer = request(os.path.join(lab.paths.node_dir(node, "run"), SOCKET_NAME), {"cmd": "status"}, 10)
    return {m["name"]: m for m in answer["status"]["modules"]}


def states(lab, name: str = "demo") -> tuple:
    """(node1's state, node2's state, node2 up to date) of the module."""
    node1, node2 = modules(lab, "node1").get(name, {}), modules(lab, "node2").get(name, {})
    return node1.get("state"), node2.get("state"), node2.get("uptodate")


def reload_scenario(lab) -> None:
    """The whole story above, on a lab whose demo module is PRIM on node1, SECOND on node2."""
    before = demo_processes(lab)
    assert states(lab) == ("PRIM", "SECOND", True)
    install_demo2(lab)

    # Added: by `hamirror reload` on node2, by SIGHUP on node1; it joins (WAIT) and takes its role.
    result = reload(lab, "node2", "reload")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["added"] == ["demo2"]
    os.kill(agent_pid(lab, "node1"), signal.SIGHUP)
    deadline = time.monotonic() + 40
    while states(lab, "demo2") != ("PRIM", "SECOND", True):
        assert time.monotonic() < deadline, f"demo2: {states(lab, 'demo2')}\n{tail(lab, 'node1')}\n{tail(lab, 'node2')}"
        time.sleep(0.3)
    assert lab.exec("client", "curl", "-sf", "-X", "PUT", "--data", "v2", f"http://{VIP2}:8080/kv/k").returncode == 0

    # Live: demo2's VIP changes; on the primary its application restarts around it, the mount stays.
    mount = json.load(open(os.path.join(lab.paths.node_dir("node1", "state"), "modules", "demo2", "0", "status.json")))
    for node in NODES:
        path = os.path.join(lab.paths.node_dir(node, "etc"), "modules", "demo2", "module.toml")
        text = open(path).read()
        open(path, "w").write(text.replace(f"{VIP2}/24", f"{VIP3}/24"))
        result = reload(lab, node, "reload")
        assert result.returncode == 0, result.stdout + result.stderr
        assert json.loads(result.stdout)["changed"] == {"demo2": ["vip.address"]}
    assert lab.exec("client", "curl", "-sf", f"http://{VIP3}:8080/kv/k").stdout == "v2"
    assert VIP2 not in lab.sh("node1", "ip -o addr show")
    assert psutil.pid_exists(mount["pid"]) and states(lab, "demo2") == ("PRIM", "SECOND", True)

    # Removed: from the secondary first, then the primary (stop_prim, VIP, unmount), each by
    # `module remove`: the folder goes to modules_dir/.removed and the agent's reload stops it.
    for node in ("node2", "node1"):
        result = reload(lab, node, "module", "remove", "demo2")
        assert result.returncode == 0, result.stdout + result.stderr
        assert json.loads(result.stdout)["removed"] == ["demo2"]
        assert list(modules(lab, node)) == ["demo"]
        assert not os.path.exists(os.path.join(lab.paths.node_dir(node, "state"), "modules", "demo2"))
        left = lab.sh(node, "cat /proc/self/mounts; ip -o addr show")
        assert "hamirror-demo2" not in left and VIP3 not in left
    assert os.path.exists(os.path.join(lab.paths.node_dir("node1", "srv"), "hamirror-demo2", "kv.sqlite3"))

    # A bad configuration: refused with file, key and problem; the agent goes on with the old one.
    toml = os.path.join(lab.paths.node_dir("node1", "etc"), "modules", "demo", "module.toml")
    good = open(toml).read()
    open(toml, "w").write(good.replace("replication_port = 7410", 'replication_port = "7411"'))
    try:
        result = lab.exec("node1", "hamirror", "reload", timeout=60)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "/etc/hamirror/modules/demo/module.toml: module.replication_port: " in result.stderr
        assert "the agent keeps running its current configuration" in result.stderr
        pid = agent_pid(lab, "node1")
        os.kill(pid, signal.SIGHUP)
        refused = ("reload refused, the running configuration is kept: 1 problem(s); first: /etc/hamirror/modules/"
                   "demo/module.toml: module.replication_port: must be an integer, not a string (SIGHUP)")
        deadline = time.monotonic() + 20
        while refused not in open(lab.paths.log_file("node1", "agent")).read():
            assert time.monotonic() < deadline and psutil.pid_exists(pid), tail(lab, "node1")
            time.sleep(0.2)
        assert psutil.pid_exists(pid) and agent_pid(lab, "node1") == pid
        assert states(lab) == ("PRIM", "SECOND", True)       # answers, with the running configuration
    finally:
        open(toml, "w").write(good)

    # The demo module was never touched.
    assert demo_processes(lab) == before
    assert states(lab) == ("PRIM", "SECOND", True)
