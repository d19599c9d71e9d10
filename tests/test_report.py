"""``hamirror report`` (issue 17, support): the bundle holds what explains an incident and no secret."""

from __future__ import annotations

import json
import os
import stat
import tarfile

from hamirror.cli.report import redact
from tests.conftest import run_cli
from tests.configfiles import write_cluster, write_module, write_secrets

SECRET_VALUE = "hunter2-do-not-ship"


def test_redact_hides_secret_values_and_keeps_paths_to_secret_files():
    text = 'password = "x"\napi_token="y"\ntoken_file = "/etc/hamirror/token"\nport = 5432\n'
    assert redact(text) == ('password = "<redacted by hamirror report>"\napi_token="<redacted by hamirror report>"\n'
                            'token_file = "/etc/hamirror/token"\nport = 5432\n')


def test_the_bundle_holds_config_state_and_system_but_no_secret(tmp_path):
    config = write_cluster(tmp_path)
    module = write_module(tmp_path, replace={"[vars]\nport = 8080\n": f'[vars]\nport = 8080\ndb_password = "{SECRET_VALUE}"\n'})
    write_secrets(tmp_path)
    (module / "replication_secret.key").write_text(SECRET_VALUE)
    state = tmp_path / "state"
    (state / "modules" / "app").mkdir(parents=True)
    (state / "events.jsonl").write_text(json.dumps({"time": 1.0, "node": "node1", "module": "app",
                                                    "kind": "state", "text": "WAIT -> PRIM"}) + "\n")
    (state / "modules" / "app" / "scripts.log").write_text("start_prim: exit 0\n")
    (state / "modules" / "app" / "persist.json").write_text('{"role": "PRIM"}')
    (state / "modules" / "app" / ".persist.json.0123456789ab.tmp").write_text('{"role": "PR')   # a crash's
    out = tmp_path / "bundle.tar.gz"

    result = run_cli("report", "-c", config, "-o", str(out), "--json")

    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    with tarfile.open(out) as tar:
        names = {name.split("/", 1)[1]: name for name in tar.getnames()}
        read = {short: tar.extractfile(full).read().decode() for short, full in names.items()}
    assert {"config/cluster.toml", "config/check.txt", "config/modules/app/module.toml",
            "config/modules/app/start_prim", "state/events.jsonl", "state/modules/app/scripts.log",
            "system/versions.txt", "system/mounts.txt", "errors.txt"} <= set(read)
    assert read["state/modules/app/persist.json"] == '{"role": "PRIM"}'
    assert not [n for n in read if n.endswith(".tmp")], sorted(read)   # a half-written copy: never
    assert "WAIT -> PRIM" in read["state/events.jsonl"] and "exit 0" in read["state/modules/app/scripts.log"]
    assert 'db_password = "<redacted by hamirror report>"' in read["config/modules/app/module.toml"]
    assert read["config/check.txt"] == "OK\n"
    cluster_key = (tmp_path / "cluster.key").read_bytes()
    secret_key = (tmp_path / "keys" / "node1.key_secret").read_text()
    with open(out, "rb") as f:
        raw = tarfile.open(fileobj=f)
        every_byte = b"".join(raw.extractfile(m).read() for m in raw.getmembers())
    assert SECRET_VALUE.encode() not in every_byte and cluster_key not in every_byte
    assert secret_key.split('secret-key = "')[1][:40].encode() not in every_byte
    assert not any("keys/" in name for name in read)
    # The agent is down (a report after a crash still works): said, not fatal.
    assert any(e.startswith("status.json: ") for e in summary["errors"])
    assert "config/modules/app/replication_secret.key: left out (a secret)" in summary["errors"]
    assert read["errors.txt"].splitlines() == summary["errors"]


def test_an_unwritable_output_is_one_line(tmp_path):
    config = write_cluster(tmp_path)
    result = run_cli("report", "-c", config, "-o", str(tmp_path / "missing" / "b.tar.gz"))
    assert (result.returncode, result.stderr) == (
        1, f"hamirror: {tmp_path}/missing/b.tar.gz: cannot write the report: No such file or directory\n")
