"""The cluster file: who the two nodes are, how they watch each other, where things live."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hamirror.config import schema
from hamirror.config.errors import ConfigError, ErrorList
from hamirror.config.schema import Field
from hamirror.link import session
from hamirror.secretfile import refuse_shared

BELIEF = 0.25     # hamirror.cluster.quorum.BELIEF (config is below cluster: it may not import it)

NODE_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
EVENT_KIND = r"[a-z][a-z0-9-]*"


@dataclass(frozen=True)
class NodeConfig:
    """One server: its name and one address per heartbeat network (the first carries replication)."""

    name: str
    addresses: tuple[str, ...]

    @property
    def replication_address(self) -> str:
        return self.addresses[0]


@dataclass(frozen=True)
class HeartbeatConfig:
    """UDP heartbeats: the peer is lost after ``timeout`` seconds of silence on every network."""

    port: int = 7401
    interval: float = 0.3
    timeout: float = 2.0


@dataclass(frozen=True)
class QuorumConfig:
    """Optional arbiter that breaks ties when the two nodes cannot see each other: a hamirror
    witness (``witness``) or an etcd v3 cluster (``etcd``: its client URLs; the other keys say
    where the lease key lives, its TTL and how to reach etcd securely)."""

    witness: str | None = None
    etcd: tuple[str, ...] | None = None
    etcd_prefix: str = "/hamirror"
    etcd_ttl: int = 10
    etcd_ca_file: str | None = None
    etcd_cert_file: str | None = None
    etcd_key_file: str | None = None
    etcd_user: str | None = None
    etcd_password_file: str | None = None

    @property
    def arbiter(self) -> bool:
        return self.witness is not None or self.etcd is not None

    @property
    def witness_endpoint(self) -> tuple[str, int] | None:
        return None if self.witness is None else split_endpoint(self.witness)


@dataclass(frozen=True)
class FenceConfig:
    """I/O fencing (docs/reliability.md). ``script``: run before acting without an unreachable
    peer (a takeover, or a primary going on alone); the action waits for its success (exit 0).
    ``block_timeout``: how long a primary's writes may stay blocked waiting for a verdict
    before they are refused (EIO) and the node steps down. ``takeover_delay``: the node that
    loses the fence race (fewer primary modules; on a tie, listed second) waits this long
    before fencing, so that in a partition only one node fences (hamirror/actions/fence.py)."""

    script: str | None = None
    timeout: float = 30.0
    block_timeout: float = 60.0
    takeover_delay: float = 2.0


@dataclass(frozen=True)
class NotifyConfig:
    """The notify hook: ``script`` run for each event of ``kinds`` (all when empty), killed after
    ``timeout`` seconds (hamirror.agent.notify)."""

    script: str | None = None
    kinds: tuple[str, ...] = ()
    timeout: float = 30.0


@dataclass(frozen=True)
class HttpConfig:
    """The status API's listening endpoint; ``token_file``: bearer token every data request must carry;
    ``console_actions``: whether the web console may run operator commands (needs the token)."""

    listen: str = "127.0.0.1:9453"
    token_file: str | None = None
    console_actions: bool = False

    @property
    def endpoint(self) -> tuple[str, int]:
        return split_endpoint(self.listen)

    @property
    def loopback(self) -> bool:
        """Whether only this host can reach the listener (a 127.0.0.0/8 or ::1 address)."""
        return ipaddress.ip_address(self.endpoint[0]).is_loopback


@dataclass(frozen=True)
class LinkConfig:
    """The replication link. ``engine`` (docs/security.md): never negotiated, so both nodes must
    say the same; absent, ``curve``, the only engine of 0.2.0, so that a configuration written for
    it (or an upgraded cluster's) keeps interoperating. New configurations write ``stream``."""

    engine: str = session.DEFAULT_ENGINE


LINK_ENGINES = (session.CURVE, session.AEAD, session.STREAM)


@dataclass(frozen=True)
class ClusterConfig:
    """The whole cluster file. ``node`` is the configured local name (None: use the host name)."""

    path: str
    name: str
    node: str | None
    keys_dir: str
    cluster_key_file: str
    modules_dir: str
    state_dir: str
    run_dir: str
    heartbeat: HeartbeatConfig
    quorum: QuorumConfig
    http: HttpConfig | None
    nodes: tuple[NodeConfig, NodeConfig]
    fence: FenceConfig = FenceConfig()
    notify: NotifyConfig = NotifyConfig()
    link: LinkConfig = LinkConfig()

    @property
    def availability_first(self) -> bool:
        """Neither witness nor fence script: after a full heartbeat timeout of silence a node
        acts alone, so a real partition between the nodes makes two primaries (split brain)."""
        return not self.quorum.arbiter and self.fence.script is None

    @property
    def local_name(self) -> str:
        """This node's name: ``cluster.node``, else the host name (short form if the full one is unknown)."""
        if self.node is not None:
            return self.node
        host = socket.gethostname()
        names = [node.name for node in self.nodes]
        short = host.split(".", 1)[0]
        return short if host not in names and short in names else host

    @property
    def local_node(self) -> NodeConfig:
        """This node; ConfigError if neither ``cluster.node`` nor the host name is one of the two nodes."""
        name = self.local_name
        for node in self.nodes:
            if node.name == name:
                return node
        origin = "cluster.node" if self.node is not None else "the host name"
        raise ConfigError(self.path, "cluster.node",
                          f"this node {name!r} ({origin}) is not one of the cluster's nodes: "
                          f"{', '.join(node.name for node in self.nodes)}")

    @property
    def peer_node(self) -> NodeConfig:
        local = self.local_node
        return next(node for node in self.nodes if node is not local)

    def node_named(self, name: str) -> NodeConfig | None:
        return next((node for node in self.nodes if node.name == name), None)

    def module_state_dir(self, module: str) -> str:
        """Where a module's journal and persisted state live."""
        return os.path.join(self.state_dir, "modules", module)

    def module_run_dir(self, module: str) -> str:
        """Where a module's scripts keep pid files and other runtime state."""
        return os.path.join(self.run_dir, "modules", module)


def split_endpoint(text: str) -> tuple[str, int]:
    """``"IP:PORT"`` or ``"[IPv6]:PORT"`` to (IP, port); the text was checked by :func:`schema.endpoint`."""
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def path_field(base: str, default: str) -> Field:
    """A filesystem path; a relative one is taken relative to the cluster file's folder."""
    def check(value: Any) -> str:
        return os.path.normpath(os.path.join(base, schema.string()(value)))
    return Field(check, default)


def parse_cluster(doc: Mapping[str, Any], path: str, errors: ErrorList) -> ClusterConfig:
    """Build the ClusterConfig from a parsed cluster file, reporting every problem to ``errors``."""
    base = os.path.dirname(os.path.abspath(path))
    schema.unknown_sections(errors, doc, ("cluster", "heartbeat", "quorum", "http", "nodes", "fence", "notify",
                                            "link"))
    main = schema.read_table(errors, schema.section(errors, doc, "cluster", True) or {}, "cluster.", {
        "name": Field(schema.string(NODE_NAME, "letters, digits, '_', '.' or '-'")),
        "node": Field(schema.string(NODE_NAME, "a node name"), None),
        "keys_dir": path_field(base, "/etc/hamirror/keys"),
        "cluster_key_file": path_field(base, "/etc/hamirror/cluster.key"),
        "modules_dir": path_field(base, "/etc/hamirror/modules"),
        "state_dir": path_field(base, "/var/lib/hamirror"),
        "run_dir": path_field(base, "/run/hamirror"),
    })
    heartbeat = _heartbeat(errors, doc)
    quorum = _quorum(errors, doc, base, heartbeat)
    http = None
    if "http" in doc:
        http = HttpConfig(**schema.read_table(errors, schema.section(errors, doc, "http", False) or {}, "http.",
                                              {"listen": Field(schema.endpoint("127.0.0.1:9453"), HttpConfig.listen),
                                               "token_file": path_field(base, None),
                                               "console_actions": Field(schema.boolean, False)}))
        if not http.loopback and http.token_file is None:
            errors.add("http.token_file", f"required when http.listen is not a loopback address "
                                          f"(got {http.listen}): the status API would be open to the network")
        if http.console_actions and http.token_file is None:
            errors.add("http.console_actions", "true needs http.token_file: the console's commands are "
                                               "token-authenticated")
    fence = FenceConfig(**schema.read_table(errors, schema.section(errors, doc, "fence", False) or {}, "fence.", {
        "script": path_field(base, None),
        "timeout": Field(schema.number(greater_than=0), FenceConfig.timeout),
        "block_timeout": Field(schema.number(greater_than=0), FenceConfig.block_timeout),
        "takeover_delay": Field(schema.number(), FenceConfig.takeover_delay),
    }))
    if fence.takeover_delay is not None and fence.takeover_delay < 0:
        errors.add("fence.takeover_delay", "must be a number of seconds, 0 or more")
    if fence.script is not None and not os.access(fence.script, os.X_OK):
        errors.add("fence.script", f"{fence.script} is not an executable file")
    cluster = ClusterConfig(path=path, heartbeat=heartbeat, quorum=quorum, http=http,
                            nodes=_nodes(errors, doc), fence=fence, notify=_notify(errors, doc, base),
                            link=_link(errors, doc), **main)
    modules_dir = main["modules_dir"]
    if modules_dir is not None and not os.path.exists(modules_dir):
        errors.add("cluster.modules_dir", f"{modules_dir} does not exist (create it: mkdir -p {modules_dir}; "
                                          "'hamirror module new' puts modules there)")
    elif modules_dir is not None and not os.path.isdir(modules_dir):
        errors.add("cluster.modules_dir", f"{modules_dir} is not a directory")
    if len(cluster.nodes) == 2 and all(node.name for node in cluster.nodes):
        try:
            cluster.local_node
        except ConfigError as exc:
            errors.items.append(exc)
    return cluster


def _notify(errors: ErrorList, doc: Mapping[str, Any], base: str) -> NotifyConfig:
    values = schema.read_table(errors, schema.section(errors, doc, "notify", False) or {}, "notify.", {
        "script": path_field(base, None),
        "kinds": Field(schema.list_of(schema.string(EVENT_KIND, "an event kind (see `hamirror events`)")), ()),
        "timeout": Field(schema.number(greater_than=0), NotifyConfig.timeout),
    })
    notify = NotifyConfig(**{**values, "kinds": tuple(values["kinds"] or ())})
    if notify.script is not None and not (os.path.isfile(notify.script) and os.access(notify.script, os.X_OK)):
        errors.add("notify.script", f"{notify.script} is not an executable file")
    if notify.kinds and notify.script is None:
        errors.add("notify.kinds", "needs notify.script")
    return notify


def _link(errors: ErrorList, doc: Mapping[str, Any]) -> LinkConfig:
    return LinkConfig(**schema.read_table(errors, schema.section(errors, doc, "link", False) or {}, "link.", {
        "engine": Field(schema.one_of(*LINK_ENGINES), LinkConfig.engine),
    }))


def _heartbeat(errors: ErrorList, doc: Mapping[str, Any]) -> HeartbeatConfig:
    values = schema.read_table(errors, schema.section(errors, doc, "heartbeat", False) or {}, "heartbeat.", {
        "port": Field(schema.port(), HeartbeatConfig.port),
        "interval": Field(schema.number(greater_than=0), HeartbeatConfig.interval),
        "timeout": Field(schema.number(greater_than=0), HeartbeatConfig.timeout),
    })
    if values["timeout"] <= values["interval"]:
        errors.add("heartbeat.timeout",
                   f"must be a number greater than heartbeat.interval ({values['interval']:g})")
    return HeartbeatConfig(**values)


def _quorum(errors: ErrorList, doc: Mapping[str, Any], base: str, heartbeat: HeartbeatConfig) -> QuorumConfig:
    quorum = QuorumConfig(**schema.read_table(errors, schema.section(errors, doc, "quorum", False) or {}, "quorum.", {
        "witness": Field(schema.endpoint("192.0.2.10:7402"), None),
        "etcd": Field(schema.list_of(schema.url(("http", "https"), "https://192.0.2.21:2379")), None),
        "etcd_prefix": Field(schema.string(r"/[A-Za-z0-9_.\-/]*", "a key path starting with '/'"), "/hamirror"),
        "etcd_ttl": Field(schema.integer(2, 3600), QuorumConfig.etcd_ttl),
        "etcd_ca_file": path_field(base, None), "etcd_cert_file": path_field(base, None),
        "etcd_key_file": path_field(base, None),
        "etcd_user": Field(schema.string(), None), "etcd_password_file": path_field(base, None),
    }))
    if quorum.witness is not None and quorum.etcd is not None:
        errors.add("quorum.etcd", "set either quorum.witness or quorum.etcd, not both")
    etcd_keys = ("etcd_prefix", "etcd_ttl", "etcd_ca_file", "etcd_cert_file", "etcd_key_file", "etcd_user",
                "etcd_password_file")
    if quorum.etcd is None:
        for key in etcd_keys if "etcd" not in (doc.get("quorum") or {}) else ():
            if key in (doc.get("quorum") or {}):
                errors.add(f"quorum.{key}", "has no effect without quorum.etcd")
        return quorum
    if quorum.etcd_ttl is not None and quorum.etcd_ttl * BELIEF <= 2 * heartbeat.interval:
        errors.add("quorum.etcd_ttl", f"too short for heartbeat.interval {heartbeat.interval:g}: a node believes "
                                      f"it holds the key for a quarter of it, which must outlast two intervals")
    plain = [url for url in quorum.etcd if url.startswith("http://")]
    for key in ("etcd_ca_file", "etcd_cert_file", "etcd_key_file", "etcd_password_file"):
        path = getattr(quorum, key)
        if path is not None and not os.path.isfile(path):
            errors.add(f"quorum.{key}", f"{path} is not a file")
    if (quorum.etcd_cert_file is None) != (quorum.etcd_key_file is None):
        errors.add("quorum.etcd_key_file" if quorum.etcd_key_file is None else "quorum.etcd_cert_file",
                   "etcd_cert_file and etcd_key_file go together (a client certificate and its key)")
    if (quorum.etcd_user is None) != (quorum.etcd_password_file is None):
        errors.add("quorum.etcd_password_file" if quorum.etcd_password_file is None else "quorum.etcd_user",
                   "etcd_user and etcd_password_file go together")
    elif quorum.etcd_password_file is not None and os.path.isfile(quorum.etcd_password_file):
        try:
            refuse_shared(quorum.etcd_password_file, os.stat(quorum.etcd_password_file).st_mode, "the etcd password")
        except ValueError as exc:
            errors.add("quorum.etcd_password_file", str(exc))
    secured = [key for key in ("etcd_ca_file", "etcd_cert_file", "etcd_user") if getattr(quorum, key) is not None]
    if plain and secured:
        errors.add("quorum.etcd", f"{plain[0]} is plain HTTP, but quorum.{secured[0]} is set: use https:// "
                                  "endpoints (a password or certificate is for TLS connections)")
    return quorum


def _nodes(errors: ErrorList, doc: Mapping[str, Any]) -> tuple[NodeConfig, ...]:
    nodes: list[NodeConfig] = []
    fields = {
        "name": Field(schema.string(NODE_NAME, "a host-like name (letters, digits, '_', '.', '-')")),
        "addresses": Field(schema.list_of(schema.ip_address)),
    }
    tables = schema.table_array(errors, doc, "nodes")
    for prefix, table in tables or []:
        values = schema.read_table(errors, table, prefix, fields)
        node = NodeConfig(name=values["name"], addresses=values["addresses"] or ())
        _check_unique(errors, prefix, node, nodes)
        nodes.append(node)
    if tables is not None and len(nodes) != 2:
        errors.add("nodes", f"must list exactly two nodes ([[nodes]] tables), found {len(nodes)}")
    return tuple(nodes)


def _check_unique(errors: ErrorList, prefix: str, node: NodeConfig, earlier: list[NodeConfig]) -> None:
    """A node's name and addresses must not repeat those of an earlier node (or its own)."""
    for other in earlier:
        if node.name is not None and node.name == other.name:
            errors.add(f"{prefix}name", f"duplicate node name {node.name!r}")
        if node.addresses and other.addresses and len(node.addresses) != len(other.addresses):
            errors.add(f"{prefix}addresses", f"must have as many addresses as node {other.name!r} "
                                             f"({len(other.addresses)}): one per heartbeat network")
    seen = {address: other.name for other in earlier for address in other.addresses}
    for address in node.addresses:
        if address in seen:
            errors.add(f"{prefix}addresses", f"address {address} is also used by node {seen[address]!r}")
        seen[address] = node.name


__all__ = ["ClusterConfig", "FenceConfig", "HeartbeatConfig", "HttpConfig", "LinkConfig", "NodeConfig", "QuorumConfig",
           "parse_cluster", "split_endpoint"]
