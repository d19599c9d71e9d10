"""A short run of the receiver fuzzer (scripts/fuzz_receiver.py) as part of the suite.

A real receiver, a trusted key, every message type with random fields and random sequences for
about 8 s (some 9,000 messages here, every type, one oversized frame); then the receiver must be alive and serving, and nothing outside its directory may
have changed. The seed is time-based (printed on failure; set HAMIRROR_FUZZ_SEED to replay one).
The long run is ``scripts/fuzz_receiver.py --seconds 600`` (docs/security.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from hamirror.link.protocol import Op
from tests.conftest import needs_root

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "fuzz_receiver.py")
SECONDS = 8


@needs_root
def test_receiver_survives_a_bounded_fuzz_run():
    seed = int(os.environ.get("HAMIRROR_FUZZ_SEED") or time.time())
    result = subprocess.run([sys.executable, SCRIPT, "--seconds", str(SECONDS), "--seed", str(seed), "--json"],
                            capture_output=True, text=True, timeout=SECONDS + 120)
    assert result.stdout, f"seed {seed}: no summary\n{result.stderr[-3000:]}"
    summary = json.loads(result.stdout)
    assert summary["ok"] and result.returncode == 0, f"seed {seed}:\n" + "\n".join(summary["problems"])
    counts = summary["counts"]
    missing = [op.name for op in Op if op.name not in counts]
    assert not missing, f"seed {seed}: message types never sent: {missing}"
    assert counts["final check"] == {"ok": 3}
    assert counts["oversize"]["dropped"] >= 1
    assert summary["messages"] > 1000, summary["messages"]
