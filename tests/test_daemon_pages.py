"""What a data-path daemon forked from the spawner holds of its own (docs/performance.md, "Idle
memory of the data path"): no pyzmq in a ``stream`` daemon, no private copy of the spawner's heap
after a full garbage collection, and key files read without pyzmq exactly as pyzmq reads them.

Each check runs in a new interpreter: the test process has imported pyzmq long before.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import zmq
import zmq.auth
from zmq.utils import z85 as pyzmq_z85

from hamirror.link import keys, z85


def _python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip()


ENGINE_IMPORTS = """
import sys
from hamirror.cli.spawner import preload, preload_engine
from hamirror.cli import main
preload()
preload_engine(["mirror", "mount", "--engine", "stream"])
stream = "zmq" in sys.modules
preload_engine(["mirror", "mount", "--engine", "curve"])
print(stream, "zmq" in sys.modules)
"""


def test_the_spawner_maps_pyzmq_only_once_a_child_runs_a_zeromq_engine():
    """~4.6 MB resident that a stream mount or receiver never uses, half of it charged to each."""
    assert _python(ENGINE_IMPORTS) == "False True"


FULL_COLLECTION_GROWTH = """
import gc, os
from hamirror import heaptrim
from hamirror.cli.spawner import preload

def private_kb():
    with open("/proc/self/smaps_rollup") as rollup:
        return sum(int(line.split()[1]) for line in rollup if line.startswith(("Private_Clean", "Private_Dirty")))

preload()
heaptrim.compact()                       # what the spawner does before each fork
read_end, write_end = os.pipe()
if os.fork() == 0:
    before = private_kb()
    gc.collect()                         # a daemon's first full collection
    os.write(write_end, str(private_kb() - before).encode())
    os._exit(0)
os.wait()
print(os.read(read_end, 64).decode())
"""


def test_a_full_collection_in_a_child_of_the_spawner_copies_none_of_the_spawners_heap():
    """A collection writes to the header of every object it visits: without the freeze, a
    daemon's first full collection made ~6 MB of the spawner's pages private copies."""
    growth_kb = int(_python(FULL_COLLECTION_GROWTH))
    assert growth_kb < 1024, f"a full collection in a forked child made {growth_kb} kB of its own pages"


@pytest.mark.parametrize("size", [0, 4, 32, 64, 100])
def test_z85_is_pyzmqs(size):
    for _ in range(20):
        raw = os.urandom(size)
        text = pyzmq_z85.encode(raw)
        assert z85.encode(raw) == text
        assert z85.decode(text) == raw
        assert z85.decode(text.decode()) == raw


def test_z85_refuses_what_is_not_z85():
    with pytest.raises(ValueError, match="multiple of 4 bytes, not 3"):
        z85.encode(b"abc")
    with pytest.raises(ValueError, match="multiple of 5 characters, not 4"):
        z85.decode(b"abcd")
    with pytest.raises(ValueError, match="not Z85 text"):
        z85.decode(b"abc,e")


def test_key_files_read_as_pyzmq_reads_them(tmp_path):
    public_file = keys.generate(str(tmp_path), name="node1")
    secret_file = public_file + "_secret"
    assert keys.load_certificate(public_file) == zmq.auth.load_certificate(public_file)
    assert keys.load_certificate(secret_file) == zmq.auth.load_certificate(secret_file)
    own = keys.load_own(str(tmp_path))
    assert (own.public, own.secret) == zmq.auth.load_certificate(secret_file)
    assert zmq.curve_public(own.secret) == own.public
    written = tmp_path / "other.key"
    written.write_bytes(b"#  comment\nmetadata\ncurve\n    public-key = \"" + own.public + b"\"\n")
    assert keys.load_certificate(str(written)) == zmq.auth.load_certificate(str(written)) == (own.public, None)
    (tmp_path / "empty.key").write_bytes(b"curve\n")
    with pytest.raises(ValueError, match="No public key found in"):
        keys.load_certificate(str(tmp_path / "empty.key"))


PREPARED_PARSER = """
from hamirror.cli import main
from hamirror.cli.spawner import preload

preload()
def build_parser(groups):
    raise AssertionError(f"a parser built after the fork: {groups}")
main.build_parser = build_parser
try:
    main.main(["mirror", "mount", "--help"])
except SystemExit as exc:
    print("exit", exc.code)
"""


def test_a_child_of_the_spawner_parses_its_command_line_with_the_spawners_parser():
    """A parser built in the child cost a forked mount ~1.7 MB of its own pages."""
    out = _python(PREPARED_PARSER)
    assert out.startswith("usage: hamirror mirror mount") and out.endswith("exit 0")
