"""One module's runner, built from its configuration: data path, VIP, scripts, checkers, record.

Apart from runtime.py because building is one job the agent does at start and again on every
``hamirror reload`` that adds a module (reload.py is handed :func:`build_runner`), and it is the
one place that knows which concrete action classes a runner is wired to.
"""

from __future__ import annotations

import math

from hamirror.actions.checkers import build as build_checker
from hamirror.actions.fence import NodeFence
from hamirror.actions.scripts import ScriptRunner
from hamirror.actions.vip import Vip
from hamirror.agent import journal_info
from hamirror.agent.checks import CheckerState
from hamirror.agent.datapath import DataPath
from hamirror.agent.executor import Executor
from hamirror.agent.module_runner import ModuleRunner
from hamirror.agent.persist import Store
from hamirror.config.cluster import ClusterConfig
from hamirror.config.module import ModuleConfig


class _Journals:
    """The executor's journal operations for one module's directories."""

    def __init__(self, dir_states: list[str]) -> None:
        self.dir_states = dir_states

    def read(self) -> journal_info.JournalInfo:
        return journal_info.read(self.dir_states)

    def mark_uptodate(self, value: bool) -> None:
        journal_info.mark_uptodate(self.dir_states, value)

    def forget_history(self) -> None:
        journal_info.forget_history(self.dir_states)


def build_runner(module: ModuleConfig, cluster: ClusterConfig, fence: NodeFence) -> ModuleRunner:
    """Wire one module's data path, resources, checkers and persisted record into a runner."""
    datapath = DataPath(module, cluster)
    # The VIP's kernel lease: the heartbeat timeout, so a node frozen for as long as its peer
    # needs to declare it lost has already dropped the address when it wakes up.
    lease = max(1, math.ceil(cluster.heartbeat.timeout))
    vip = Vip(module.vip.address, module.vip.interface, lifetime=lease) if module.vip else None
    journals = _Journals(datapath.dir_states)
    fencer = fence.for_module(module.name)
    executor = Executor(module.name, datapath, vip, ScriptRunner(module, cluster), journals,
                        persist=lambda state: None, count_restart=lambda: None, fencer=fencer)
    checkers = CheckerState(module.name, [build_checker(c, module, cluster) for c in module.checkers])
    return ModuleRunner(module.name, cluster.local_name, module.default_primary == cluster.local_name,
                        Store(cluster.module_state_dir(module.name)), executor, datapath, journals, checkers,
                        module.restart.max_restarts, module.restart.window, fence_script=fencer.configured,
                        failover_max=module.failover.max, failover_window=module.failover.window)
