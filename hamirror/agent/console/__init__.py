"""The web console: one page that shows both nodes and, if configured, runs operator commands.

| module | job |
|---|---|
| `gather.py` | this node's console document; the ring of replication-rate samples |
| `peer.py` | fetching the peer's document over the cluster network (short timeout, unreachable since) |
| `view.py` | two documents -> what the page shows (colours, VIP holder, plot, merged events) |
| `render.py` | HTML with jinja2 (autoescaped), style and script with their CSP hashes |
| `auth.py` | session cookies and CSRF tokens derived from the HTTP token; Origin check |
| `service.py` | the endpoints (`/`, `/console/...`) on the agent's HTTP server |
| `api.py` | the scriptable commands (`/api/v1/...`, bearer token only) and scheduled switchovers |
"""

from __future__ import annotations

from hamirror.agent.console.api import Api
from hamirror.agent.console.gather import Gatherer
from hamirror.agent.console.peer import Peer
from hamirror.agent.console.service import Console


def for_agent(agent) -> Console:
    """The console of a running agent (``hamirror.agent.runtime.Agent``): its status, events,
    modules and control handler; the peer at its first cluster address, on this node's port."""
    config = agent.cluster.http
    host, port = config.endpoint
    peer_host = None if config.loopback else agent.peer_node.addresses[0]
    name = f"[{peer_host}]" if peer_host and ":" in peer_host else peer_host
    return Console(Gatherer(agent, config.console_actions, agent.events.read), Peer(peer_host, port),
                   agent.node.name, agent.peer_node.name, agent.handle, config.console_actions,
                   peer_url=f"http://{name}:{port}/" if peer_host else None,
                   api=Api(agent.cluster.state_dir, agent.handle, config.console_actions, agent.events.add))


__all__ = ["Console", "Gatherer", "Peer", "for_agent"]
