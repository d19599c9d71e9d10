"""The fence hook (``[fence] script``): make sure the unreachable peer cannot be primary.

Run before this node acts without a peer it cannot hear (a takeover, or a primary going on
alone); the action, and so the takeover, waits for exit status 0. The script gets the peer's
name as its argument and in ``HAMIRROR_PEER`` (with ``HAMIRROR_NODE``, ``HAMIRROR_CLUSTER``,
``HAMIRROR_MODULE``): typically it powers the peer off through its BMC or hypervisor, or cuts
its storage or switch port. Output goes to ``<state_dir>/modules/<module>/fence.log``.
"""

from __future__ import annotations

import os
import shlex
import time

from hamirror.actions.scripts import ScriptResult, run_text
from hamirror.config.cluster import ClusterConfig


class FenceRunner:
    """Runs the cluster's fence script against the peer for one module."""

    def __init__(self, cluster: ClusterConfig, module: str) -> None:
        self.script, self.timeout = cluster.fence.script, cluster.fence.timeout
        self.takeover_delay = cluster.fence.takeover_delay
        self.peer, self.node, self.cluster, self.module = (cluster.peer_node.name, cluster.local_name,
                                                           cluster.name, module)
        self.log_path = os.path.join(cluster.module_state_dir(module), "fence.log")

    @property
    def configured(self) -> bool:
        return self.script is not None

    def run(self, takeover: bool = False) -> ScriptResult:
        """Fence the peer; ok only for exit status 0 within ``[fence] timeout``. A takeover waits
        ``takeover_delay`` first: the primary's own fencing wins a partition."""
        if self.script is None:
            return ScriptResult("fence", False, None, False, 0.0, "no [fence] script configured")
        if takeover:
            time.sleep(self.takeover_delay)
        env = dict(os.environ, HAMIRROR_PEER=self.peer, HAMIRROR_NODE=self.node, HAMIRROR_CLUSTER=self.cluster,
                   HAMIRROR_MODULE=self.module)
        text = f"exec {shlex.quote(self.script)} {shlex.quote(self.peer)}\n"
        return run_text("fence", text, self.log_path, self.timeout, env=env)
