"""What changed between the running configuration and the one on disk, key by key (``hamirror reload``).

Pure: two configurations in, a :class:`Plan` out, so the rules "what a reload applies live" are
tested without an agent. A module key is *live* when the agent can apply it without restarting
the module's data path (mount and receiver): the VIP, checkers, scripts' timeouts and [vars],
restart and failover limits, the default primary. The data path's own keys (directories,
replication port, mode, peer_timeout) are passed to the mount and receiver processes when they
start, and the peer's data path must agree on them: they wait until the module is stopped here.
Cluster file keys (nodes, heartbeats, quorum, fence, paths, HTTP) are read once by the agent:
they need an agent restart, which leaves applications and mounts running.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hamirror.config.cluster import ClusterConfig
from hamirror.config.module import ModuleConfig

DATA_PATH = "data-path restart"
AGENT = "agent restart"
# Module keys that the mount and receiver processes were started with.
DATA_PATH_KEYS = ("module.mode", "module.replication_port", "module.peer_timeout", "directories")
_MODULE_FIELDS = {"default_primary": "module.default_primary", "mode": "module.mode",
                  "replication_port": "module.replication_port", "peer_timeout": "module.peer_timeout",
                  "directories": "directories", "vip": "vip", "scripts": "scripts", "restart": "restart",
                  "failover": "failover", "checkers": "checkers", "vars": "vars"}
# Every field of the cluster file: the [cluster] table's plain values, then one per section.
_CLUSTER_FIELDS = {f.name: f"cluster.{f.name}" if str(f.type).startswith("str") else f.name
                   for f in dataclasses.fields(ClusterConfig) if f.name != "path"}


@dataclass(frozen=True)
class Change:
    """One key whose value differs; ``needs``: None when applied live, else what it waits for."""

    key: str
    old: Any
    new: Any
    needs: str | None = None

    @property
    def live(self) -> bool:
        return self.needs is None

    def text(self) -> str:
        """``module.replication_port: 7410 -> 7420`` (lists and tables by key only)."""
        if _scalar(self.old) and _scalar(self.new):
            return f"{self.key}: {_show(self.old)} -> {_show(self.new)}"
        return f"{self.key}: changed"


@dataclass(frozen=True)
class Plan:
    """Modules added and removed (by name), per-module changes, and cluster file changes."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: Mapping[str, tuple[Change, ...]] = dataclasses.field(default_factory=dict)
    cluster: tuple[Change, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.cluster)

    def live(self, module: str) -> tuple[Change, ...]:
        return tuple(c for c in self.changed.get(module, ()) if c.live)

    def pending(self, module: str) -> tuple[Change, ...]:
        return tuple(c for c in self.changed.get(module, ()) if not c.live)


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _show(value: Any) -> str:
    return "(none)" if value is None else repr(value) if isinstance(value, str) else str(value)


def _flatten(key: str, value: Any) -> Iterable[tuple[str, Any]]:
    """``vip`` -> ``vip.address``, ``vip.interface``; lists (directories, checkers, nodes) stay whole."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            yield from _flatten(f"{key}.{field.name}", getattr(value, field.name))
    elif isinstance(value, Mapping):
        yield key, dict(value)
    else:
        yield key, value


def _changes(old: Any, new: Any, fields: Mapping[str, str]) -> list[tuple[str, Any, Any]]:
    """(key, old, new) of every differing key; a table present on one side only is one change."""
    found = []
    for attr, key in fields.items():
        before, after = getattr(old, attr), getattr(new, attr)
        if before == after:
            continue
        if before is None or after is None:
            found.append((key, _summary(before), _summary(after)))
            continue
        mine, theirs = dict(_flatten(key, before)), dict(_flatten(key, after))
        found += [(k, mine.get(k), theirs.get(k)) for k in dict.fromkeys([*mine, *theirs])
                  if mine.get(k) != theirs.get(k)]
    return found


def _summary(value: Any) -> Any:
    """A table appearing or disappearing (``[vip]``, ``[http]``): shown as present or not."""
    if value is None:
        return None
    return getattr(value, "address", None) or getattr(value, "listen", None) or "set"


def module_changes(old: ModuleConfig, new: ModuleConfig) -> tuple[Change, ...]:
    """Every key of one module that differs, each marked live or waiting for a data-path restart."""
    return tuple(Change(key, before, after, DATA_PATH if key in DATA_PATH_KEYS else None)
                 for key, before, after in _changes(old, new, _MODULE_FIELDS))


def cluster_changes(old: ClusterConfig, new: ClusterConfig) -> tuple[Change, ...]:
    """Every key of the cluster file that differs: none is applied by a reload."""
    return tuple(Change(key, before, after, AGENT) for key, before, after in _changes(old, new, _CLUSTER_FIELDS))


def plan(old_cluster: ClusterConfig, old_modules: Iterable[ModuleConfig], new_cluster: ClusterConfig,
         new_modules: Iterable[ModuleConfig]) -> Plan:
    """What differs between the running configuration (``old_*``) and the new one."""
    before = {m.name: m for m in old_modules}
    after = {m.name: m for m in new_modules}
    changed = {name: changes for name in before.keys() & after.keys()
               if (changes := module_changes(before[name], after[name]))}
    return Plan(added=tuple(n for n in after if n not in before), removed=tuple(n for n in before if n not in after),
                changed=dict(sorted(changed.items())), cluster=cluster_changes(old_cluster, new_cluster))


def applied(old: ModuleConfig, new: ModuleConfig) -> ModuleConfig:
    """The module as it runs after a reload that could not restart its data path: the new
    values, except the data path's own keys, kept as the running mount and receiver have them."""
    return dataclasses.replace(new, mode=old.mode, replication_port=old.replication_port,
                               peer_timeout=old.peer_timeout, directories=old.directories)
