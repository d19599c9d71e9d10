"""``hamirror verify`` end to end in the lab (root): a byte planted on the secondary's disk behind
its receiver is found (from either node), repaired, and the copies end byte-identical; the outcome
is in status, the event timeline and the metrics; a module that is not a live, up-to-date mirror
is refused with a clear message.

One lab (with the HTTP API, so that the secondary can reach the primary's agent); the tests run in
file order.
"""

from __future__ import annotations

import json
import sys

import pytest

from tests.agent_lab import LAB_MARKS, agents_lab, get, module, wait_for

pytestmark = LAB_MARKS

DIR = "/srv/hamirror-demo"
BLOB = f"{DIR}/blob.bin"
OFFSET = 300_001


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    yield from agents_lab(tmp_path_factory, "verifylab", "--console")


def hamirror(lab, node: str, *args: str, timeout: float = 120):
    return lab.exec(node, sys.executable, "-m", "hamirror", *args, timeout=timeout)


def python(lab, node: str, code: str) -> str:
    result = lab.exec(node, sys.executable, "-c", code, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def sha256(lab, node: str, path: str) -> str:
    return python(lab, node, f"import hashlib; print(hashlib.sha256(open({path!r}, 'rb').read()).hexdigest())")


def metrics(lab, node: str) -> str:
    return python(lab, node, (
        "import urllib.request; token = open('/etc/hamirror/http.token').read().strip(); "
        f"r = urllib.request.Request('http://198.18.0.{node[-1]}:9453/metrics', "
        "headers={'Authorization': 'Bearer ' + token}); print(urllib.request.urlopen(r, timeout=10).read().decode())"))


def test_a_byte_planted_on_the_secondary_is_found_from_either_node_and_repaired(lab):
    wait_for(lab, "node2", lambda m: m["state"] == "SECOND" and m["uptodate"], what="node2 SECOND up to date")
    python(lab, "node1", f"import random; open({BLOB!r}, 'wb').write(random.Random(5).randbytes(1 << 20))")
    assert get(lab, "/kv")[0] == 200
    clean = hamirror(lab, "node1", "verify", "demo")
    assert clean.returncode == 0, (clean.stdout, clean.stderr)
    assert "the copies are identical" in clean.stdout

    # One byte changed on node2's disk, behind its receiver, the file's times kept.
    python(lab, "node2", (
        "import os; st = os.stat({p!r}); f = open({p!r}, 'r+b'); f.seek({o}); b = f.read(1); f.seek({o}); "
        "f.write(bytes([b[0] ^ 0x5A])); f.close(); os.utime({p!r}, ns=(st.st_atime_ns, st.st_mtime_ns))"
    ).format(p=BLOB, o=OFFSET))
    assert sha256(lab, "node1", BLOB) != sha256(lab, "node2", BLOB)

    found = hamirror(lab, "node2", "verify", "demo", "--json")   # typed on the secondary
    assert found.returncode == 3, (found.stdout, found.stderr)
    outcome = json.loads(found.stdout)
    assert outcome["result"] == "differences"
    assert [(d["dir"], d["path"], d["kind"], d["offset"], d["length"]) for d in outcome["differences"]] == [
        (DIR, "blob.bin", "content", OFFSET - OFFSET % 4096, 4096)]
    assert "the two copies differ (1 difference(s), 4096 bytes out of sync)" in found.stderr

    text = hamirror(lab, "node1", "verify", "demo")
    assert text.returncode == 3
    assert f"blob.bin: content differs at offset {OFFSET - OFFSET % 4096}, 4096 bytes" in text.stdout
    status = module(lab, "node1")
    assert status["last_verify"]["result"] == "differences" and status["last_verify"]["out_of_sync_bytes"] == 4096
    assert 'hamirror_verify_out_of_sync_bytes{module="demo"} 4096' in metrics(lab, "node1")

    repaired = hamirror(lab, "node1", "verify", "demo", "--repair")
    assert repaired.returncode == 0, (repaired.stdout, repaired.stderr)
    assert "repaired, verified again: identical" in repaired.stdout
    again = hamirror(lab, "node2", "verify", "demo")
    assert again.returncode == 0 and "the copies are identical" in again.stdout
    assert sha256(lab, "node1", BLOB) == sha256(lab, "node2", BLOB)

    status = module(lab, "node1")
    assert status["last_verify"]["result"] == "clean" and status["last_verify"]["out_of_sync_bytes"] == 0
    assert "demo: last verify" in hamirror(lab, "node1", "status").stdout
    assert 'hamirror_verify_out_of_sync_bytes{module="demo"} 0' in metrics(lab, "node1")
    lines = hamirror(lab, "node1", "events", "--json", "-n", "0", "demo").stdout.splitlines()
    events = [json.loads(line) for line in lines if line.strip()]
    ends = [e for e in events if e["kind"] == "verify-end"]
    assert [e["result"] for e in ends] == ["clean", "differences", "differences", "repaired", "clean"]
    assert ends[1]["ranges"][0]["offset"] == OFFSET - OFFSET % 4096


def test_verify_is_refused_unless_the_module_is_a_live_up_to_date_mirror(lab):
    stopped = hamirror(lab, "node2", "stop", "demo")
    assert stopped.returncode == 0, stopped.stderr
    try:
        wait_for(lab, "node1", lambda m: m["state"] == "ALONE" and m["peer_state"] == "STOP", what="node1 ALONE")
        refused = hamirror(lab, "node1", "verify", "demo")
        assert refused.returncode == 1
        assert refused.stderr.strip() == (
            "hamirror: verify demo: verify needs demo PRIM on one node and SECOND up to date on the other: "
            "it is ALONE here and STOP on the peer; nothing was compared")
        refused = hamirror(lab, "node2", "verify", "demo")
        assert refused.returncode == 1
        assert refused.stderr.strip() == (
            "hamirror: verify demo: verify needs demo PRIM on one node and SECOND up to date on the other: "
            "it is STOP here and ALONE on the peer; nothing was compared")
    finally:
        assert hamirror(lab, "node2", "start", "demo").returncode == 0
    wait_for(lab, "node2", lambda m: m["state"] == "SECOND" and m["uptodate"], timeout=90, what="node2 back")
    assert hamirror(lab, "node1", "verify", "demo").returncode == 0


def test_stop_and_start_on_both_nodes_typed_on_one(lab):
    """``stop --all`` on the primary (issue 17, cluster-wide commands): the secondary's part first,
    so nothing is taken over; ``start --all`` brings the pair back. The agents' logs say it."""
    wait_for(lab, "node2", lambda m: m["state"] == "SECOND" and m["uptodate"], what="node2 SECOND up to date")
    stopped = hamirror(lab, "node1", "stop", "demo", "--all", "--json")
    assert stopped.returncode == 0, (stopped.stdout, stopped.stderr)
    answer = json.loads(stopped.stdout)
    assert answer["ok"] and [(p["node"], p["state"]) for p in answer["nodes"]] == [("node2", "STOP"), ("node1", "STOP")]
    assert module(lab, "node1")["state"] == "STOP" and module(lab, "node2")["state"] == "STOP"
    log2 = open(lab.paths.log_file("node2", "agent")).read()
    assert "stop --all by" not in log2 and "-> ALONE" not in log2.split("SECOND -> STOP")[-1]
    started = hamirror(lab, "node2", "start", "demo", "--all")
    assert started.returncode == 0, (started.stdout, started.stderr)
    assert started.stdout.splitlines() == ["demo: WAIT on node2", "demo: WAIT on node1"]
    wait_for(lab, "node1", lambda m: m["state"] == "PRIM", timeout=60, what="node1 PRIM again")
    wait_for(lab, "node2", lambda m: m["state"] == "SECOND" and m["uptodate"], timeout=60, what="node2 SECOND")
