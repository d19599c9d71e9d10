"""A short run of the receiver fuzzer (scripts/fuzz_receiver.py) as part of the suite.

A real receiver, a trusted key, every message type with random fields and random sequences for
about 8 s (some 9,000 messages here, every type, one oversized frame); then the receiver must be alive and serving, and nothing outside its directory may
have changed. With the ``aead`` link engine (6 s), the stream is sealed and an unauthenticated
connection sends handshake garbage and broken sealed frames beside it; with ``stream`` (6 s)
the same as records on plain TCP connections. The seed is time-based (printed on failure; set HAMIRROR_FUZZ_SEED to replay one).
The long run is ``scripts/fuzz_receiver.py --seconds 600`` (docs/security.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from hamirror.link import session
from hamirror.link.protocol import Op
from tests.conftest import needs_root

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "fuzz_receiver.py")
SECONDS = 8


@needs_root
@pytest.mark.parametrize("engine,seconds", [(session.CURVE, SECONDS), (session.AEAD, 6), (session.STREAM, 6)])
def test_receiver_survives_a_bounded_fuzz_run(engine, seconds):
    seed = int(os.environ.get("HAMIRROR_FUZZ_SEED") or time.time())
    result = subprocess.run([sys.executable, SCRIPT, "--seconds", str(seconds), "--seed", str(seed), "--json"],
                            capture_output=True, text=True, timeout=seconds + 120,
                            env={**os.environ, session.ENGINE_ENV: engine})
    assert result.stdout, f"seed {seed}: no summary\n{result.stderr[-3000:]}"
    summary = json.loads(result.stdout)
    assert summary["ok"] and result.returncode == 0, f"seed {seed}:\n" + "\n".join(summary["problems"])
    counts = summary["counts"]
    missing = [op.name for op in Op if op.name not in counts]
    assert not missing, f"seed {seed}: message types never sent: {missing}"
    assert counts["final check"] == {"ok": 3}
    assert counts["oversize"]["dropped"] >= 1
    assert summary["messages"] > 1000, summary["messages"]
    if engine != session.CURVE:
        garbage = {label for label in counts if label.startswith("handshake ")}
        assert len(garbage) >= 8, f"seed {seed}: too few kinds of handshake garbage: {sorted(garbage)}"
