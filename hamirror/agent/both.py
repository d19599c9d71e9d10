"""``hamirror stop|start|restart MODULE --all``: one command on both nodes, typed on either (issue
17, cluster-wide commands; the runbooks' full-site stop and start).

The peer runs its part through its HTTP API (the console's command endpoint, with the shared token),
as ``hamirror verify`` from the secondary does, so both nodes need ``[http]`` with a listen address
on the cluster network, ``token_file`` and ``console_actions = true``. The order never moves the
service by accident: a stop ends the secondary's part first (a primary stopped first would make its
secondary take over, only to be stopped too; the primary's own stop then gives its blocked writes a
verdict first: ``decide._stop_primary``); a start or restart begins here. The first part that
fails ends the command: the other node is left as it was, and the answer says which did what.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hamirror.cluster.view import Command

if TYPE_CHECKING:
    from hamirror.agent.module_runner import ModuleRunner
    from hamirror.agent.runtime import Agent

ON_BOTH = (Command.STOP, Command.START, Command.RESTART)
LOCAL, PEER = "local", "peer"


def order(command: Command, primary_here: bool) -> tuple[str, str]:
    """Which node's part runs first (pure): a stop on a primary begins with the peer."""
    return (PEER, LOCAL) if command is Command.STOP and primary_here else (LOCAL, PEER)


def unavailable(agent: Agent) -> str | None:
    """Why the peer cannot be asked (no usable ``[http]``), None when it can."""
    from hamirror.agent.console.peer import can_ask

    if not can_ask(agent.cluster.http):
        return ("--all asks the peer through its HTTP API: give both nodes [http] with a listen address on "
                "the cluster network, token_file and console_actions = true (or run the command on each node)")
    return None


async def run(agent: Agent, runner: ModuleRunner, command: Command) -> dict:
    """The command on both nodes in :func:`order`; this node's state, and ``nodes``: each node's own
    answer (with its name), in the order they ran."""
    from hamirror.agent.console.peer import ask

    why = unavailable(agent)
    if why is not None:
        return {"ok": False, "state": runner.state.value, "warnings": [], "error": why, "nodes": []}
    peer = agent.peer_node
    nodes: list[dict] = []
    for part in order(command, runner.state.is_primary):
        if part == LOCAL:
            outcome = await runner.submit(command)
            answer = {"ok": outcome.ok, "state": outcome.state, "warnings": outcome.warnings, "error": outcome.error}
            nodes.append({"node": agent.node.name, **answer})
        else:
            answer = await ask(agent.cluster, {"module": runner.name, "action": command.value})
            nodes.append({"node": peer.name, "ok": bool(answer.get("ok")), "state": answer.get("state"),
                          "warnings": answer.get("warnings") or [], "error": answer.get("error")})
        if not answer.get("ok"):
            failed = nodes[-1]["node"]
            return {"ok": False, "state": runner.state.value, "warnings": [], "nodes": nodes,
                    "error": f"{command.value} on {failed}: {answer.get('error') or 'refused'}; "
                             f"{'nothing done on the other node' if len(nodes) == 1 else 'done on the other node'}"}
    return {"ok": True, "state": runner.state.value, "warnings": [w for part in nodes for w in part["warnings"]],
            "error": None, "nodes": nodes}
