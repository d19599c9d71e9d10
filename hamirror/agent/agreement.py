"""Whether the two nodes agree: the same configuration (digests in the heartbeats) and releases
that interoperate (docs/upgrade.md). Differences are warnings, never actions: a node goes on
with its own configuration, and the operator is told in status, events, metrics and the console.

Each finding is recorded in the timeline once when it appears, changes or ends, not every
heartbeat. Pure but for the events: fed every heartbeat accepted from the peer as it arrives
(:meth:`Agreement.heard`), and each tick the last refusal of a newer protocol.
"""

from __future__ import annotations

from collections.abc import Callable

from hamirror import versions
from hamirror.cluster.heartbeat import Heartbeat, NewerProtocol
from hamirror.config.cluster import ClusterConfig
from hamirror.config.digest import CLUSTER_SECTIONS, MODULE_SECTIONS, ConfigDigests, compute, differences
from hamirror.config.module import ModuleConfig

Emit = Callable[..., object]     # EventLog.add(kind, text, module=None, **fields)
# Event kinds: (when a finding appears or changes, when it ends).
DIFFERS = ("config-differs", "config-same")
VERSION = ("peer-version", "peer-version")
INCOMPATIBLE = ("peer-incompatible", "peer-compatible")


def _what(sections: tuple[str, ...]) -> str:
    return ", ".join("files of the module folder" if s == "files" else f"[{s}]" for s in sections) \
        or "sections not named"


def compare(ours: str | None, theirs: str | None, order: tuple[str, ...]) -> list[str] | None:
    """The differing sections (a list, maybe empty) or None: the same, or not comparable."""
    if ours is None or theirs is None:
        return None
    found = differences(ours, theirs, order)
    return None if found is None else list(found)


def digests_for(cluster: ClusterConfig, modules: list[ModuleConfig], key: bytes) -> ConfigDigests:
    """The digests of this configuration, read now, keyed with the cluster key ``key``
    (hamirror/config/digest.py)."""
    return compute(cluster.path, {m.name: m.folder for m in modules}, key)


def for_config(cluster: ClusterConfig, modules: list[ModuleConfig], key: bytes, emit: Emit) -> Agreement:
    """The agreement of a node running this configuration."""
    return Agreement(cluster.local_name, cluster.peer_node.name, digests_for(cluster, modules, key), emit)


class Agreement:
    """This node's view of how it agrees with its peer; :meth:`observe` each tick."""

    def __init__(self, node: str, peer: str, digests: ConfigDigests, emit: Emit) -> None:
        self.node, self.peer, self.digests, self.emit = node, peer, digests, emit
        self.cluster: dict = self._entry(digests.cluster, None, None, None)
        self.modules: dict[str, dict] = {name: self._entry(d, None, None, None) for name, d in digests.modules.items()}
        self.only_peer: list[str] = []           # modules configured on the peer only
        self.peer_software: str | None = None
        self.assumed = False                     # the peer sent no version: 0.2.0
        self.incompatible: str | None = None
        self._said: dict[str, str | None] = {}   # what the timeline was last told, per topic
        self.count = 0                           # heartbeats heard from the peer since this start
        self._last: tuple[str, int] | None = None   # the last one's (boot, counter)

    def update(self, digests: ConfigDigests) -> None:
        """A new configuration was loaded (a reload): compare it from the next heartbeat on; what
        the timeline was told is kept, so a difference that stays is not told again. The caller
        hands ``self.digests`` to the heartbeat service too."""
        self.digests = digests
        self.modules = {name: self.modules.get(name, self._entry(d, None, None, None))
                        for name, d in digests.modules.items()}
        for topic in [t for t in self._said if t.startswith("module ") and t[7:] not in digests.modules]:
            del self._said[topic]          # a module removed here: nothing more to say of it
        self._last = None

    def _entry(self, ours: str | None, theirs: str | None, differs: list[str] | None, warning: str | None) -> dict:
        return {"digest": ours, "peer_digest": theirs, "differs": differs, "warning": warning}

    def refused(self, newer: NewerProtocol | None) -> None:
        """Each tick: the last refusal of a heartbeat in a newer protocol (None: none since the
        peer was last heard in a protocol this node knows)."""
        self.incompatible = str(newer).removeprefix("version: ") if newer is not None else None
        self._tell("incompatible", INCOMPATIBLE, self.incompatible, "the peer's heartbeats are understood again")

    def heard(self, hb: Heartbeat) -> None:
        """Compare with a heartbeat just accepted from the peer (each one: a difference shows at
        the first heartbeat that carries it); record what changed. The events say which
        heartbeat told: its counter in the peer's boot, and how many this node heard since it
        started."""
        if (hb.boot_id, hb.counter) == self._last:
            return                         # the same heartbeat, by another network
        self._last = (hb.boot_id, hb.counter)
        self.count += 1
        when = {"peer_boot": hb.boot_id, "peer_counter": hb.counter, "heard": self.count}
        self.peer_software, self.assumed = hb.software or versions.PREVIOUS_RELEASE, hb.software is None
        note = versions.pair_note(self.peer_software)
        self._tell("version", VERSION, note and note + (" (assumed: it sends no version)" if self.assumed else ""),
                   f"the peer runs hamirror {self.peer_software}, as this node", **when)
        differs = compare(self.digests.cluster, hb.config, CLUSTER_SECTIONS)
        self.cluster = self._entry(self.digests.cluster, hb.config, differs, None if differs is None else
                                   f"the cluster file differs from {self.peer}'s: {_what(tuple(differs))} "
                                   "(compare the two hamirror.toml: docs/configuration.md)")
        self._tell("cluster", DIFFERS, self.cluster["warning"],
                   f"the cluster file is the same as {self.peer}'s again", **when)
        # Module digests sent (or none to send: a peer without modules); not sent by 0.2.0, nor
        # when they did not fit in the datagram.
        sent = bool(hb.module_config) or (hb.config is not None and not hb.modules)
        self.only_peer = sorted(name for name in hb.modules if name not in self.modules) if sent else []
        for name, ours in self.digests.modules.items():
            self.modules[name] = self._module(name, ours, hb, sent)
            self._tell(f"module {name}", DIFFERS, self.modules[name]["warning"],
                       f"the module's configuration is the same as {self.peer}'s again", module=name, **when)
        self._tell("only-peer", DIFFERS, self.only_peer and
                   f"module(s) configured on {self.peer} only: {', '.join(self.only_peer)}",
                   "both nodes configure the same modules again", **when)

    def _module(self, name: str, ours: str | None, hb: Heartbeat, sent: bool) -> dict:
        if not sent:
            return self._entry(ours, None, None, None)
        if name not in hb.modules:
            return self._entry(ours, None, ["module"], f"module not configured on {self.peer}")
        theirs = hb.module_config.get(name)
        differs = compare(ours, theirs, MODULE_SECTIONS)
        return self._entry(ours, theirs, differs, None if differs is None else
                           f"configuration differs from {self.peer}'s: {_what(tuple(differs))} "
                           "(the module folder must be the same on both nodes)")

    def _tell(self, topic: str, kinds: tuple[str, str], text: str | None, cleared: str,
              module: str | None = None, **fields: object) -> None:
        """One event when ``text`` (None or empty: nothing to say) appears or changes (the first
        kind), and one when it ends (the second kind, with ``cleared``)."""
        text = text or None
        before = self._said.get(topic)
        if text == before:
            return
        self._said[topic] = text
        if text is not None:
            self.emit(kinds[0], text, module=module, **fields)
        elif before is not None:
            self.emit(kinds[1], cleared, module=module, **fields)

    def status(self) -> dict:
        """The node-wide part of the status document."""
        note = versions.pair_note(self.peer_software) if self.peer_software else None
        return {
            "versions": {"software": versions.SOFTWARE, "heartbeat_protocol": versions.HEARTBEAT_PROTOCOL,
                         "link_protocol": versions.LINK_PROTOCOL, "peer_software": self.peer_software,
                         "peer_software_assumed": self.assumed, "note": note, "incompatible": self.incompatible},
            "config": {**self.cluster, "only_peer": list(self.only_peer)},
        }

    def annotate(self, doc: dict) -> dict:
        """Add the agreement to a status document (node-wide keys, and ``config`` per module)."""
        doc.update(self.status())
        for entry in doc.get("modules", []):
            entry["config"] = self.modules.get(entry.get("name"), self._entry(None, None, None, None))
        return doc


def status_lines(doc: dict) -> list[str]:
    """The human status lines for what the two nodes disagree on (empty when nothing)."""
    lines: list[str] = []
    ver, config = doc.get("versions") or {}, doc.get("config") or {}
    if ver.get("incompatible"):
        lines.append(f"PEER INCOMPATIBLE: {ver['incompatible']}")
    if ver.get("note"):
        lines.append(f"peer: {ver['note']}")
    if config.get("warning"):
        lines.append(f"warning: {config['warning']}")
    if config.get("only_peer"):
        lines.append(f"warning: module(s) configured on the peer only: {', '.join(config['only_peer'])}")
    for m in doc.get("modules", []):
        if (m.get("config") or {}).get("warning"):
            lines.append(f"{m['name']}: warning: {m['config']['warning']}")
    return lines


def metric_families(doc: dict) -> list[tuple[str, str, str, list[tuple[dict, int]]]]:
    """The agreement's Prometheus families (name, type, help, samples)."""
    ver, config = doc.get("versions") or {}, doc.get("config") or {}
    modules = doc.get("modules", [])
    return [
        ("hamirror_config_differs", "gauge",
         "1 when this node's configuration differs from the peer's (scope cluster: the cluster file's shared "
         "part, or modules configured on one node only; scope module: that module's folder).",
         [({"scope": "cluster", "module": ""},
           int(config.get("differs") is not None or bool(config.get("only_peer"))))]
         + [({"scope": "module", "module": m["name"]}, int((m.get("config") or {}).get("differs") is not None))
            for m in modules]),
        ("hamirror_peer_incompatible", "gauge",
         "1 while the peer's heartbeats are refused: it speaks a protocol newer than this node knows.",
         [({}, int(bool(ver.get("incompatible"))))]),
        ("hamirror_version_info", "gauge", "The release of this node and of its peer (always 1).",
         [({"software": ver.get("software") or "", "peer_software": ver.get("peer_software") or ""}, 1)]),
    ]
