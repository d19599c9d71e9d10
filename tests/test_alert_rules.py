"""The shipped Prometheus rules: every metric and label value they use is in the agents' real
exposition (render_metrics), promtool accepts them, and promtool's rule tests, fed with the
exposition of two nodes' status documents, fire exactly the expected alerts in each situation."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess

import pytest
import yaml

from hamirror import shipped
from hamirror.agent.http import render_metrics
from tests.test_agent_http import status_doc

RULES = "hamirror-alerts.yml"
PROMETHEUS_OWN = {"up"}          # series Prometheus makes itself, not the agent
SAMPLE = re.compile(r'^(\w+)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
SELECTOR = re.compile(r'\b(hamirror_\w+|up)\b(?:\{([^}]*)\})?')
MATCHER = re.compile(r'(\w+)\s*(=~|!=|!~|=)\s*"([^"]*)"')
TEMPLATE = re.compile(r"\{\{ \$labels\.(\w+) \}\}")


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(shipped.read(RULES))["groups"] for rule in group["rules"]]


def exposition(doc: dict) -> list[tuple[str, dict[str, str], float, str]]:
    """(name, labels, value, type) of every sample the agent serves for ``doc``."""
    kinds, samples = {}, []
    for line in render_metrics(doc).splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            kinds[name] = kind
        elif line and not line.startswith("#"):
            name, labels, value = SAMPLE.match(line).groups()
            samples.append((name, dict(LABEL.findall(labels or "")), float(value), kinds[name]))
    return samples


def full_doc() -> dict:
    """A status document with every optional part present (verify, resync, failovers)."""
    doc = status_doc("PRIM", resync={"done_bytes": 1, "total_bytes": 2})
    doc["modules"][0]["last_verify"] = {"difference_count": 1, "out_of_sync_bytes": 5, "result": "differ"}
    doc["peer"]["networks"] = [{"local": "10.0.0.1:7401", "peer": "10.0.0.2:7401", "up": True}]
    doc["witness"] = {"witness": "198.18.0.9:7402", "holds": True, "answer_age": 0.3}
    doc["notify"] = {"script": "/etc/hamirror/notify", "sent": 1, "failed": 1, "dropped": 1}
    return doc


def test_every_metric_and_label_value_a_rule_uses_is_exposed():
    served = exposition(full_doc())
    names = {name for name, *_ in served}
    for rule in rules():
        used = SELECTOR.findall(rule["expr"])
        assert used, rule["alert"]
        for name, matchers in used:
            if name in PROMETHEUS_OWN:
                continue
            assert name in names, f"{rule['alert']}: {name} is not in the agent's /metrics"
            for label, op, value in MATCHER.findall(matchers):
                have = {labels.get(label) for n, labels, *_ in served if n == name}
                assert have != {None}, f"{rule['alert']}: {name} has no label {label}"
                wanted = value.split("|") if op in ("=~", "!~") else [value]
                assert set(wanted) <= have, f"{rule['alert']}: {name}{{{label}}} never takes {wanted} (has {have})"
        for text in rule["annotations"].values():
            assert "$value" not in text           # annotations name labels only (the tests below render them)


def test_the_rules_cover_what_an_operator_must_hear_of():
    assert {rule["alert"] for rule in rules()} >= {
        "HamirrorModuleNotServing", "HamirrorPeerLost", "HamirrorNotUpToDate", "HamirrorSplitBrain",
        "HamirrorFenced", "HamirrorResyncNotCompleting", "HamirrorResyncStalled", "HamirrorResyncFailing",
        "HamirrorVerifyFoundDifferences"}


needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian: prometheus) not installed")


@needs_promtool
def test_promtool_accepts_the_rules(tmp_path):
    path = tmp_path / RULES
    path.write_text(shipped.read(RULES))
    result = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# -- promtool rule tests over the real exposition --------------------------------------------------

def node(name: str, state: str, alive: bool = True, **module: object) -> dict:
    """One node's status document: module 'demo' in ``state`` (and the given fields)."""
    doc = status_doc(state)
    doc.update(node=name, peer={"name": "node2" if name == "node1" else "node1", "alive": alive, "rejected": {}})
    entry = {"name": "demo", "state": state, "uptodate": True, "resync": None, "warnings": [], "maintenance": False,
             "mirror": {"PRIM": "streaming", "ALONE": "alone"}.get(state, "none"),
             "failovers": {"recent": 0, "damped": False}}
    entry.update(module)
    doc["modules"] = [entry]
    return doc


def series(doc: dict, instance: str) -> list[dict]:
    """promtool input series: the node's exposition held for 100 minutes (counters grow by their value a minute)."""
    out = [{"series": f'up{{instance="{instance}",job="hamirror"}}', "values": "1x100"}]
    for name, labels, value, kind in exposition(doc):
        text = ",".join(f'{k}="{v}"' for k, v in {**labels, "instance": instance, "job": "hamirror"}.items())
        out.append({"series": f"{name}{{{text}}}", "values": f"0+{value:g}x100" if kind == "counter" else f"{value:g}x100"})
    return out


def alert(name: str, **labels: str) -> tuple[str, dict[str, str]]:
    return name, labels


N1, N2 = "node1:9453", "node2:9453"
SITUATIONS = {
    "healthy pair": ([node("node1", "PRIM"), node("node2", "SECOND")], []),
    "both primary": ([node("node1", "ALONE", alive=False), node("node2", "ALONE", alive=False)], [
        alert("HamirrorSplitBrain", cluster="lab", module="demo"),
        alert("HamirrorPeerLost", instance=N1, job="hamirror", peer="node2"),
        alert("HamirrorPeerLost", instance=N2, job="hamirror", peer="node1")]),
    "peer back, resync stuck": ([node("node1", "ALONE", resync={"done_bytes": 5, "total_bytes": 10},
                                      resync_failures={"count": 3, "error": "ENOSPC on node2", "alarm": True}),
                                 node("node2", "WAIT", uptodate=False)], [
        alert("HamirrorResyncFailing", instance=N1, job="hamirror", module="demo", error="ENOSPC on node2"),
        alert("HamirrorResyncNotCompleting", instance=N1, job="hamirror", module="demo", state="ALONE"),
        alert("HamirrorResyncStalled", instance=N1, job="hamirror", module="demo"),
        alert("HamirrorNotUpToDate", instance=N2, job="hamirror", module="demo")]),
    "nobody serves": ([node("node1", "SECOND"), node("node2", "SECOND")], [
        alert("HamirrorModuleNotServing", cluster="lab", module="demo")]),
    "fenced, damped, verify, bad keys": ([
        {**node("node1", "PRIM", mirror="fenced", serving=False, failovers={"recent": 3, "damped": True},
                last_verify={"result": "failed"}),
         "peer": {"name": "node2", "alive": True, "rejected": {"bad_mac": 2}}},
        node("node2", "SECOND", last_verify={"difference_count": 4, "out_of_sync_bytes": 4096})], [
        alert("HamirrorFenced", instance=N1, job="hamirror", module="demo"),
        alert("HamirrorModuleNotServing", cluster="lab", module="demo"),
        alert("HamirrorFailoverDamped", instance=N1, job="hamirror", module="demo"),
        alert("HamirrorVerifyFailed", instance=N1, job="hamirror", module="demo"),
        alert("HamirrorHeartbeatsRejected", instance=N1, job="hamirror", reason="bad_mac"),
        alert("HamirrorVerifyFoundDifferences", instance=N2, job="hamirror", module="demo")]),
    "a network, a checker, the witness, the hook": ([
        {**node("node1", "PRIM", checker="port: connection refused"),
         "peer": {"name": "node2", "alive": True, "rejected": {},
                  "networks": [{"local": "10.0.0.1:7401", "peer": "10.0.0.2:7401", "up": True},
                               {"local": "192.168.5.1:7401", "peer": "192.168.5.2:7401", "up": False}]},
         "witness": {"witness": "198.18.0.9:7402", "holds": False, "answer_age": None},
         "notify": {"script": "/etc/hamirror/notify", "sent": 0, "failed": 1, "dropped": 0}},
        node("node2", "SECOND")], [
        alert("HamirrorHeartbeatNetworkDown", instance=N1, job="hamirror", local="192.168.5.1:7401",
              peer="192.168.5.2:7401"),
        alert("HamirrorCheckerFailing", instance=N1, job="hamirror", module="demo"),
        alert("HamirrorWitnessUnreachable", instance=N1, job="hamirror", witness="198.18.0.9:7402"),
        alert("HamirrorNotifyFailing", instance=N1, job="hamirror", result="failed")]),
    "configuration differs, peer incompatible": ([
        node("node1", "PRIM", config={"differs": ["checkers"], "warning": "configuration differs"}),
        {**node("node2", "SECOND"), "versions": {"incompatible": "the peer speaks heartbeat protocol 2"}}], [
        alert("HamirrorConfigDiffers", instance=N1, job="hamirror", scope="module", module="demo"),
        alert("HamirrorPeerIncompatible", instance=N2, job="hamirror")]),
    "dead mount": ([node("node1", "PRIM", mirror="dead", serving=False), node("node2", "SECOND")], [
        alert("HamirrorMirrorBroken", instance=N1, job="hamirror", module="demo", mirror="dead"),
        alert("HamirrorModuleNotServing", cluster="lab", module="demo")]),
}


def rule_test(docs: list[dict], expected: list[tuple[str, dict[str, str]]], down: str | None = None) -> dict:
    """One promtool test: every rule evaluated after an hour, exactly ``expected`` firing."""
    inputs = [s for doc, instance in zip(docs, (N1, N2)) for s in series(doc, instance)]
    if down:
        inputs = [s for s in inputs if f'instance="{down}"' not in s["series"]]
        inputs.append({"series": f'up{{instance="{down}",job="hamirror"}}', "values": "0x100"})
    checks = []
    for rule in rules():
        firing = []
        for name, labels in expected:
            if name == rule["alert"]:
                full = {**labels, **rule["labels"]}
                notes = {k: TEMPLATE.sub(lambda m: full[m[1]], v) for k, v in rule["annotations"].items()}
                firing.append({"exp_labels": full, "exp_annotations": notes})
        checks.append({"eval_time": "60m", "alertname": rule["alert"], "exp_alerts": firing})
    return {"interval": "1m", "input_series": inputs, "alert_rule_test": checks}


@needs_promtool
def test_promtool_fires_exactly_the_expected_alerts(tmp_path):
    (tmp_path / RULES).write_text(shipped.read(RULES))
    tests = [rule_test(docs, expected) for docs, expected in SITUATIONS.values()]
    node1 = node("node1", "ALONE", alive=False)
    tests.append(rule_test([node1, copy.deepcopy(node1)], [
        alert("HamirrorAgentDown", instance=N2, job="hamirror"),
        alert("HamirrorPeerLost", instance=N1, job="hamirror", peer="node2")], down=N2))
    spec = tmp_path / "tests.yml"
    spec.write_text(yaml.safe_dump({"rule_files": [RULES], "evaluation_interval": "1m", "tests": tests}))
    result = subprocess.run(["promtool", "test", "rules", str(spec)], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
