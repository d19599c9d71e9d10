"""The lab's operations (up, down, kill, boot, exec, partition, heal), composed from the other modules.

Each operation records what it is about to create before creating it, and every failure leaves the
lab as it is for inspection: ``down`` removes whatever exists, from the record or from the names.
"""

from __future__ import annotations

import logging
import os
import shutil

from hamirror.actions import appprocs
from hamirror.lab import agent, etcdlab, mountns, netns, nodeconfig, partition, process, state
from hamirror.lab.naming import NODES, SWITCH, LabPaths, hosts_for
from hamirror.lab.shell import LabError
from hamirror.lab.state import LabState

log = logging.getLogger(__name__)
ALL_HOSTS = hosts_for(witness=True, etcd=True)


def _left_up(paths: LabPaths, exc: Exception) -> LabError:
    return LabError(f"{exc}\nthe lab is left as it is for inspection; 'hamirror lab down --root {paths.root}' removes it")


def require(paths: LabPaths) -> LabState:
    """The lab's record; an operator error if the lab is not up."""
    recorded = state.load(paths)
    if recorded is None:
        raise LabError(f"no lab at {paths.root} (no {paths.state_file}); start one with 'hamirror lab up --root {paths.root}'")
    return recorded


def check_host(recorded: LabState, host: str, nodes_only: bool = False) -> None:
    allowed = NODES if nodes_only else recorded.hosts
    if host not in allowed:
        raise LabError(f"unknown {'node' if nodes_only else 'host'} {host!r}; choose one of {', '.join(allowed)}")


def up(paths: LabPaths, modules: list[str], witness: bool = False, start_agents: bool = True,
       timeout: float = 60.0, fence: bool = False, console: bool = False, etcd: bool = False,
       lease: int | None = None, engine: str | None = nodeconfig.NEW_CLUSTER_ENGINE) -> LabState:
    """Build the lab; with agents, return once every module is PRIM on node1 and SECOND on node2.
    ``etcd``: three etcd hosts run an etcd cluster, the nodes' quorum (ready before the agents start).
    ``lease``: the quorum's lease in seconds (the witness's ``--timeout``, or ``etcd_ttl``).
    ``engine``: the nodes' ``[link] engine`` (None: no ``[link]``, a 0.2.0 configuration: curve)."""
    if witness and etcd:
        raise LabError("choose one quorum: --witness or --etcd")
    if lease is not None and not (witness or etcd):
        raise LabError("--lease needs a quorum: --witness or --etcd")
    if state.load(paths) is not None or netns.lab_netns(paths) or mountns.mounts_under(paths.root):
        raise LabError(f"a lab is up at {paths.root} already; run 'hamirror lab down --root {paths.root}' first")
    if start_agents:
        for module in modules:
            nodeconfig.module_source(module)
    else:
        modules = [m for m in modules if _module_exists(m)]
    _clear_files(paths)
    recorded = LabState(root=paths.root, prefix=paths.prefix, witness=witness, etcd=etcd, lease=lease,
                        modules=modules)
    state.save(paths, recorded)
    try:
        nodeconfig.write_all(paths, modules, witness, fence, console, etcd, lease, engine)
        netns.create_switch(paths)
        for host in recorded.hosts:
            netns.create_host(paths, host)
        mountns.prepare(paths)
        for node in NODES:
            mountns.create(paths, node)
        if witness:
            recorded.processes.append(agent.start_witness(paths, lease))
            state.save(paths, recorded)
        if etcd:
            for host in etcdlab.HOSTS:
                recorded.processes.append(etcdlab.start(paths, host))
                state.save(paths, recorded)
            etcdlab.wait_healthy(paths, timeout)
        if start_agents:
            started = []
            for node in NODES:
                started.append(agent.start(paths, node))
                recorded.processes.append(started[-1])
                state.save(paths, recorded)
            agent.wait_ready(paths, started, modules, timeout)
    except LabError as exc:
        raise _left_up(paths, exc) from exc
    return recorded


def _module_exists(module: str) -> bool:
    try:
        nodeconfig.module_source(module)
        return True
    except LabError:
        log.warning("module %s not found; not copied into the nodes", module)
        return False


def _clear_files(paths: LabPaths) -> None:
    """Remove a previous lab's node directories under root (never anything else, never while mounted)."""
    for name in ALL_HOSTS + ("ns",):
        path = os.path.join(paths.root, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)


def down(paths: LabPaths) -> list[str]:
    """Remove every process, mount and namespace of this lab; idempotent, works without lab.json."""
    recorded = state.load(paths)
    done = []
    for host in ALL_HOSTS + (SWITCH,):
        killed = process.kill_all(paths, host, recorded.started_in(host) if recorded else [])
        if killed:
            done.append(f"killed {len(killed)} process(es) of {host}")
    for node in NODES:
        instance = app_instance(paths, node)
        if instance:
            done += [f"removed cgroup {path}" for path in appprocs.remove_instance(instance)]
    mountns.release_all(paths, NODES)
    for name in netns.lab_netns(paths):
        netns.delete(name)
        done.append(f"deleted namespace {name}")
    state.remove(paths)
    return done


def app_instance(paths: LabPaths, node: str) -> str | None:
    """The name of the node's application groups (cgroups): its agent names them after its state
    directory, the node's own folder of this lab (:func:`hamirror.actions.appprocs.instance_name`)."""
    state_dir = paths.node_dir(node, "state")
    return appprocs.instance_name(node, state_dir) if os.path.isdir(state_dir) else None


def kill(paths: LabPaths, host: str) -> list[int]:
    """Power loss: SIGKILL every process of host. A node's mounts stay, stale, until boot."""
    recorded = require(paths)
    check_host(recorded, host)
    killed = process.kill_all(paths, host, recorded.started_in(host))
    recorded.forget(host)
    state.save(paths, recorded)
    return killed


def boot(paths: LabPaths, node: str, start_agent: bool = True) -> None:
    """Reboot a killed node: a fresh mount namespace (old mounts released), then its agent."""
    recorded = require(paths)
    check_host(recorded, node, nodes_only=True)
    running = [p for p in process.members(paths, node, recorded.started_in(node)) if p != os.getpid()]
    if running:
        raise LabError(f"{node} is running (pids {running}); 'hamirror lab kill {node}' first")
    mountns.release(paths, node)
    mountns.create(paths, node)
    if start_agent:
        recorded.processes.append(agent.start(paths, node))
        state.save(paths, recorded)


def boot_etcd(paths: LabPaths, host: str) -> None:
    """Start a killed etcd member again (it rejoins the cluster with its data)."""
    recorded = require(paths)
    check_host(recorded, host)
    if host not in etcdlab.HOSTS:
        raise LabError(f"{host} is not an etcd host ({', '.join(etcdlab.HOSTS)})")
    running = process.members(paths, host, recorded.started_in(host))
    if running:
        raise LabError(f"{host} is running (pids {running}); 'hamirror lab kill {host}' first")
    recorded.processes.append(etcdlab.start(paths, host, state="existing"))
    state.save(paths, recorded)


def start_agent(paths: LabPaths, node: str) -> None:
    """Start a running node's agent again after it died (what systemd's Restart= does on a real node)."""
    recorded = require(paths)
    check_host(recorded, node, nodes_only=True)
    if any(s.name == agent.AGENT and process.is_alive(s) for s in recorded.started_in(node)):
        raise LabError(f"{node}: the agent is running")
    recorded.processes.append(agent.start(paths, node))
    state.save(paths, recorded)


def run_in(paths: LabPaths, host: str, cmd: list[str]) -> int:
    """Run cmd in host with stdio passed through; its exit code."""
    check_host(require(paths), host)
    if not cmd:
        raise LabError("no command given (usage: hamirror lab exec NODE -- CMD...)")
    return process.exec_in(paths, host, cmd).returncode


def cut(paths: LabPaths, a: str, b: str) -> None:
    recorded = require(paths)
    partition.cut(paths, recorded.hosts, a, b)
    recorded.partitions.append([a, b])
    state.save(paths, recorded)


def heal(paths: LabPaths) -> None:
    recorded = require(paths)
    partition.heal(paths, recorded.hosts)
    recorded.partitions = []
    state.save(paths, recorded)

