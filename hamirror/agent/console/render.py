"""HTML of the console, rendered on the server with jinja2 (autoescaped: every value from a status
document, ours or the peer's, becomes text). The page is complete without JavaScript; its one
inline script only re-fetches the view every 2 s and drives the command dialogs. The style and
script are files beside this module, allowed by the Content-Security-Policy by their hashes.
"""

from __future__ import annotations

import base64
import hashlib
import time
from importlib import resources

import jinja2

from hamirror.agent.console.view import page_model

ASSETS = resources.files("hamirror.agent.console") / "templates"
STYLE = (ASSETS / "console.css").read_text(encoding="utf-8")
SCRIPT = (ASSETS / "console.js").read_text(encoding="utf-8")

# (action, button label, what the confirmation says happens)
ACTIONS = (
    ("swap", "swap", "exchange the roles of the two nodes: the application stops here or on the peer and starts "
                     "on the other node, with no data lost"),
    ("restart", "restart", "restart the module on this node (a primary stops and starts its application)"),
    ("stop", "stop", "stop the module on this node (a primary stops its application; the peer may take over)"),
    ("start", "start", "start the module on this node"),
    ("maintenance-on", "maintenance on", "suspend checkers and automatic failover on this node; the application "
                                         "is left alone"),
    ("maintenance-off", "maintenance off", "resume checkers and automatic failover on this node"),
)


def _digest(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# Only this page's own style and script run; it may only talk to the node that served it.
CSP = (f"default-src 'none'; style-src {_digest(STYLE)}; script-src {_digest(SCRIPT)}; connect-src 'self'; "
       "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def number(value: object) -> float | None:
    """A value as a float; None for anything else (missing, Undefined, text from an odd peer)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def human_bytes(value: object) -> str:
    try:
        size = float(number(value))  # type: ignore[arg-type]
    except TypeError:
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(size) < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return "-"


def clock(value: object) -> str:
    """A wall-clock time as HH:MM:SS (the node's local time)."""
    try:
        return time.strftime("%H:%M:%S", time.localtime(float(number(value))))  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError, OSError):
        return "-"


def ago(value: object, now: float) -> str:
    try:
        seconds = max(0, int(now - float(number(value))))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "-"
    return f"{seconds} s ago" if seconds < 120 else f"{seconds // 60} min ago"


def duration(value: object) -> str:
    try:
        seconds = float(number(value))  # type: ignore[arg-type]
    except TypeError:
        return "-"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


ENV = jinja2.Environment(loader=jinja2.PackageLoader("hamirror.agent.console", "templates"),
                         autoescape=True, trim_blocks=True, lstrip_blocks=True, undefined=jinja2.ChainableUndefined)
ENV.filters.update(bytes=human_bytes, clock=clock, duration=duration)
ENV.globals.update(ago=ago, ACTIONS=ACTIONS)


def view(local: dict, peer_name: str, peer_doc: dict | None, peer_error: str | None, peer_since: float | None,
         peer_url: str | None = None) -> str:
    """The part of the page that the script refreshes."""
    model = page_model(local, peer_name, peer_doc, peer_error, peer_since)
    return ENV.get_template("view.html.j2").render(model=model, peer_url=peer_url)


def page(local: dict, peer_name: str, peer_doc: dict | None, peer_error: str | None, peer_since: float | None,
         csrf: str, peer_url: str | None = None) -> str:
    """The whole page: status of both nodes, rendered here, usable without JavaScript."""
    body = view(local, peer_name, peer_doc, peer_error, peer_since, peer_url)
    return ENV.get_template("page.html.j2").render(view=body, csrf=csrf, style=STYLE, script=SCRIPT,
                                                   cluster=local.get("status", {}).get("cluster"), now=time.time())


def login(message: str | None = None) -> str:
    """The page that asks for the token (the only page a client without a session gets)."""
    return ENV.get_template("login.html.j2").render(message=message, style=STYLE)
