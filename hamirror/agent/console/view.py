"""From two nodes' console documents to what the page shows (pure: no I/O, tested without a server).

Colours are decided here, once: *healthy* only for PRIM with an up-to-date SECOND streaming, and
for that SECOND; ALONE, WAIT, a SECOND not up to date, a mirror that is not streaming, a failed
checker, a command under way, maintenance, flap damping and a configuration that differs from the
peer's are *degraded*; a split brain or an error is *failed*; STOP is *stopped*. A node whose
document could not be fetched is UNREACHABLE (with since when), and nothing of its last state is
shown.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

RANK = {"healthy": 0, "stopped": 1, "degraded": 2, "failed": 3, "unreachable": 3}
PLOT_SPAN = 300.0          # seconds of rate history in the plot
PLOT_W, PLOT_H = 300, 60


@dataclass
class NodeCard:
    """One node: its document, or why it is unreachable."""

    name: str
    local: bool
    doc: dict | None
    error: str | None = None
    since: float | None = None

    @property
    def reachable(self) -> bool:
        return self.doc is not None

    def module(self, name: str) -> dict | None:
        if self.doc is None:
            return None
        return next((m for m in self.doc["status"].get("modules", []) if m.get("name") == name), None)

    def extras(self, name: str) -> dict:
        return ((self.doc or {}).get("modules") or {}).get(name) or {}


@dataclass
class Cell:
    """One module on one node."""

    node: NodeCard
    status: dict | None
    extras: dict
    health: str
    reason: str


@dataclass
class ModuleView:
    name: str
    cells: list[Cell]
    health: str
    vip: str | None
    vip_holders: list[str]
    plot: dict
    events: list[dict] = field(default_factory=list)


def health(m: dict) -> tuple[str, str]:
    """``(colour class, why)`` for one module's status entry on one reachable node."""
    state, failovers = m.get("state"), m.get("failovers") or {}
    if m.get("relation") == "diverged":
        return "failed", "split brain: both nodes changed the data"
    if m.get("error"):
        return "failed", f"error: {m['error']}"
    if state == "STOP":
        return "stopped", "stopped"
    if m.get("target") and m["target"] != state:
        return "degraded", f"{state} -> {m['target']} (command under way)"
    if state == "ALONE":
        return "degraded", "primary without a mirror: the peer is gone, changes are recorded for resync"
    if state == "WAIT":
        return "degraded", "waiting for the peer or for its data to be up to date: not serving"
    if state == "SECOND" and not m.get("uptodate"):
        return "degraded", "secondary, not up to date"
    if state == "PRIM" and m.get("mirror") not in (None, "streaming"):
        return "degraded", f"primary, mirror {m.get('mirror')}"
    if state == "PRIM" and m.get("peer_state") != "SECOND":
        return "degraded", f"primary, peer {m.get('peer_state') or 'not heard'}"
    if m.get("checker"):
        return "degraded", f"checker failed: {m['checker']}"
    if m.get("maintenance"):
        return "degraded", "maintenance: checkers and automatic failover suspended"
    if failovers.get("damped"):
        return "degraded", "failovers held back (flap damping)"
    if (m.get("config") or {}).get("warning"):
        return "degraded", m["config"]["warning"]
    return "healthy", "mirrored" if state in ("PRIM", "SECOND") else str(state)


def plot(samples: list, now: float) -> dict:
    """The SVG polyline of ``(time, bytes/s, ops/s)`` samples over the last ``PLOT_SPAN`` seconds."""
    recent = [s for s in samples if isinstance(s, list) and len(s) >= 2 and now - s[0] <= PLOT_SPAN]
    # The last PLOT_SPAN seconds, or less while the agent has been up for less (at least a minute).
    span = min(PLOT_SPAN, max(60.0, now - recent[0][0])) if recent else PLOT_SPAN
    peak = max((float(s[1]) for s in recent), default=0.0)
    scale = (PLOT_H - 2) / peak if peak > 0 else 0.0
    points = " ".join(f"{PLOT_W * (1 - (now - s[0]) / span):.1f},{PLOT_H - 1 - float(s[1]) * scale:.1f}"
                      for s in recent)
    return {"points": points, "peak": peak, "count": len(recent), "width": PLOT_W, "height": PLOT_H, "span": span}


def module_names(cards: list[NodeCard]) -> list[str]:
    names: list[str] = []
    for card in cards:
        for m in (card.doc or {}).get("status", {}).get("modules", []):
            if m.get("name") not in names:
                names.append(m.get("name"))
    return names


def module_view(name: str, cards: list[NodeCard], now: float) -> ModuleView:
    cells = []
    for card in cards:
        m = card.module(name)
        if not card.reachable:
            colour, why = "unreachable", "its agent does not answer: its last state is not shown"
        elif m is None:
            colour, why = "failed", "module not configured on this node"
        else:
            colour, why = health(m)
        cells.append(Cell(card, m, card.extras(name), colour, why))
    vip = next((c.extras.get("vip") for c in cells if c.extras.get("vip")), None)
    holders = [c.node.name for c in cells if c.extras.get("vip_here")]
    sender = next((c for c in cells if c.status and c.status.get("state") in ("PRIM", "ALONE")), None)
    sender = sender or next((c for c in cells if c.node.local), cells[0])
    events = [e for c in cards for e in (c.doc or {}).get("events", [])
              if isinstance(e, dict) and e.get("module") in (name, None)]
    events.sort(key=lambda e: float(e.get("time") or 0), reverse=True)
    return ModuleView(name, cells, max((c.health for c in cells), key=RANK.__getitem__), vip, holders,
                      plot(sender.extras.get("samples") or [], now), events[:20])


def page_model(local: dict, peer_name: str, peer_doc: dict | None, peer_error: str | None,
               peer_since: float | None, now: float | None = None) -> dict:
    """Everything the template needs: the two node cards and one view per module."""
    now = time.time() if now is None else now
    cards = [NodeCard(str(local.get("node")), True, local),
             NodeCard(peer_name, False, peer_doc, peer_error, peer_since)]
    return {"cards": cards, "modules": [module_view(n, cards, now) for n in module_names(cards)], "now": now,
            "actions": bool(local.get("actions"))}
