import re

from hamirror import __version__
from tests.conftest import run_cli


def test_version_prints_package_version():
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"hamirror {__version__}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)


def test_keygen_writes_a_pair_and_refuses_to_overwrite(tmp_path):
    keys = tmp_path / "keys"
    first = run_cli("keygen", "--keys", str(keys), "--name", "node1")
    assert first.returncode == 0, first.stderr
    assert (keys / "node1.key").exists()
    secret = keys / "node1.key_secret"
    assert secret.stat().st_mode & 0o777 == 0o600
    again = run_cli("keygen", "--keys", str(keys), "--name", "node1")
    assert again.returncode == 1
    assert "a key pair named 'node1' exists already" in again.stderr
