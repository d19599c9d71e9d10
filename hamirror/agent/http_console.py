"""The web console served at ``/``: one self-contained page (no external assets) that polls ``/status``.

The page holds no data itself; it fetches ``/status`` every 2 s and builds the table with DOM
text nodes (never HTML from the document). With a token configured it asks for it once and keeps
it in the tab's sessionStorage. Kept in a Python module so that it is packaged with the code.
"""

from __future__ import annotations

import base64
import hashlib

STYLE = """
body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.2em; margin: 0 0 .3em; }
#summary { margin-bottom: 1em; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: .3em .7em; text-align: left; }
th { background: #f0f0f0; }
.PRIM, .ALONE { background: #d8f5d8; }
.SECOND { background: #dde8ff; }
.WAIT { background: #fff3c4; }
.STOP { background: #eee; }
.bad { color: #b00; }
#note { color: #666; margin-top: 1em; font-size: .9em; }
#auth { display: none; margin-bottom: 1em; }
"""

SCRIPT = """
"use strict";
const $ = (id) => document.getElementById(id);
function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text;
  if (cls) td.className = cls;
}
function progress(r) {
  if (!r) return "-";
  const pct = r.total_bytes ? Math.floor(100 * r.done_bytes / r.total_bytes) : 0;
  return pct + "% of " + r.total_bytes + " B";
}
function show(doc) {
  const peer = doc.peer || {};
  $("summary").textContent = "node " + doc.node + " (cluster " + doc.cluster + "), peer " + peer.name + ": " +
    (peer.alive ? "alive" : "not heard");
  $("summary").className = peer.alive ? "" : "bad";
  const body = $("rows");
  body.replaceChildren();
  for (const m of doc.modules || []) {
    const row = body.insertRow();
    cell(row, m.name);
    const moving = m.target && m.target !== m.state;
    cell(row, m.state + (moving ? " -> " + m.target : m.busy ? " (busy)" : ""), m.serving === false ? "" : m.state);
    cell(row, m.peer_state || "-", m.peer_state || "");
    cell(row, m.uptodate ? "yes" : "no", m.uptodate ? "" : "bad");
    cell(row, progress(m.resync));
    cell(row, m.relation || "-", m.relation === "diverged" ? "bad" : "");
    const notes = (m.warnings || []).slice();
    const damped = m.failovers && m.failovers.damped;
    if (damped) notes.unshift("FAILOVER DAMPED: " + m.failovers.recent + " failover(s) within " +
                              m.failovers.window + " s; hamirror clear " + m.name);
    if (m.maintenance) notes.unshift("MAINTENANCE: checkers and automatic failover suspended");
    if (m.error) notes.push("error: " + m.error);
    if (m.checker) notes.push("checker: " + m.checker);
    cell(row, notes.join("; "), notes.length ? "bad" : "");
  }
}
async function refresh() {
  const headers = {};
  const token = sessionStorage.getItem("hamirror-token");
  if (token) headers["Authorization"] = "Bearer " + token;
  try {
    const reply = await fetch("status", {headers, cache: "no-store"});
    if (reply.status === 401) {
      $("auth").style.display = "block";
      $("note").textContent = "this API needs its bearer token";
      return;
    }
    if (!reply.ok) throw new Error("HTTP " + reply.status);
    show(await reply.json());
    $("note").textContent = "updated " + new Date().toLocaleTimeString() + "; refreshed every 2 s";
    $("note").className = "";
  } catch (err) {
    $("note").textContent = "agent not answering (" + err.message + ")";
    $("note").className = "bad";
  }
}
$("auth").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("hamirror-token", $("token").value.trim());
  $("auth").style.display = "none";
  refresh();
});
refresh();
setInterval(refresh, 2000);
"""

CONSOLE_HTML = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>hamirror</title>
<style>{STYLE}</style>
</head>
<body>
<h1>hamirror</h1>
<form id="auth"><label>Bearer token <input id="token" type="password" autocomplete="off"></label>
<button>Use</button></form>
<div id="summary">loading...</div>
<table>
<thead><tr><th>module</th><th>state</th><th>peer</th><th>up to date</th><th>resync</th><th>relation</th>
<th>notes</th></tr></thead>
<tbody id="rows"></tbody>
</table>
<div id="note"></div>
<script>{SCRIPT}</script>
</body>
</html>
"""


def _digest(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# Only this page's own inline style and script run; it may only fetch from the agent itself.
CONSOLE_CSP = (f"default-src 'none'; style-src {_digest(STYLE)}; script-src {_digest(SCRIPT)}; "
               "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")
