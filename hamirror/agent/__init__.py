"""The node agent (``hamirror agent``): one asyncio process per node that runs the cluster.

| module | job |
|---|---|
| `runtime.py` | main loop: config, heartbeats, control socket, one tick per heartbeat interval |
| `wiring.py` | one module's runner built from its configuration (at start and on a reload that adds it) |
| `module_runner.py` | per module: build the `ModuleView`, `decide()`, run the actions as a task |
| `executor.py` | map each action to the data path and to `hamirror.actions` |
| `datapath.py` | the replicated mount and the receiver processes (start, adopt, control, stop) |
| `journal_info.py` | what the decision needs from the journals; generation ids on the wire |
| `persist.py` | `agent.json` per module, written atomically before a change takes effect |
| `control.py` | the local control socket (JSON lines, root only) and its client |
| `reload.py` | `hamirror reload` and SIGHUP: check the new configuration, then apply what can change live |
| `status.py` | the `hamirror status` document |
| `http.py` | the HTTP status API (health check, metrics, events) and its admission control |
| `console/` | the web console on that server: both nodes on one page, commands if configured |
"""
