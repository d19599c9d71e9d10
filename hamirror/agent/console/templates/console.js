"use strict";
const $ = (id) => document.getElementById(id);
const csrf = document.querySelector('meta[name="hamirror-csrf"]').content;
let pending = null;

function showActions() {
  for (const box of document.querySelectorAll(".actions")) box.hidden = false;
  for (const note of document.querySelectorAll(".nojs")) note.hidden = true;
}

function say(text, bad) {
  $("result").textContent = text;
  $("result").className = bad ? "bad" : "";
  $("result").hidden = false;
}

async function refresh() {
  if ($("confirm").open) return;
  try {
    const reply = await fetch("/console/view", {cache: "no-store", credentials: "same-origin"});
    if (reply.status === 401) { location.reload(); return; }
    if (!reply.ok) throw new Error("HTTP " + reply.status);
    const parsed = new DOMParser().parseFromString(await reply.text(), "text/html");
    const fresh = document.createElement("div");
    fresh.id = "view";
    fresh.append(...parsed.body.childNodes);
    $("view").replaceWith(fresh);
    showActions();
    $("note").textContent = "updated " + new Date().toLocaleTimeString() + "; refreshed every 2 s";
    $("note").className = "";
  } catch (err) {
    $("note").textContent = "this node is not answering (" + err.message + "): reload, or open the other node's console";
    $("note").className = "bad";
  }
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  pending = {module: button.dataset.module, action: button.dataset.action, node: button.dataset.node};
  $("confirm-text").textContent = button.dataset.confirm;
  $("confirm").showModal();
});

$("confirm").addEventListener("close", async () => {
  const chosen = pending;
  pending = null;
  if ($("confirm").returnValue !== "ok" || !chosen) return;
  say(chosen.action + " " + chosen.module + " on " + chosen.node + ": sent, waiting for the agent...", false);
  try {
    const reply = await fetch("/console/action", {
      method: "POST", credentials: "same-origin", cache: "no-store",
      headers: {"Content-Type": "application/x-www-form-urlencoded", "X-Hamirror-CSRF": csrf},
      body: new URLSearchParams(chosen).toString(),
    });
    const text = await reply.text();
    let answer = null;
    try { answer = JSON.parse(text); } catch (err) { answer = null; }
    if (!reply.ok || !answer || !answer.ok) {
      say(chosen.action + " " + chosen.module + " refused or failed: " + (answer ? (answer.error || "") : text), true);
    } else {
      say(chosen.action + " " + chosen.module + ": done, now " + answer.state +
          (answer.warnings && answer.warnings.length ? " (" + answer.warnings.join("; ") + ")" : ""), false);
    }
  } catch (err) {
    say(chosen.action + " " + chosen.module + ": no answer (" + err.message + ")", true);
  }
  refresh();
});

showActions();
setInterval(refresh, 2000);
