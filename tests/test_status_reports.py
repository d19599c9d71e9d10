"""The mount's status file is a report, never a decision.

Seen in CI: the link's thread went ALONE, recorded what the peer missed, then wrote status.json
while the mount's 1 s status loop wrote it too. Both used the one temporary name, one rename beat
the other (ENOENT), and the error reached the link-loss handler, which took it for a journal that
cannot record: the mount REFUSED every write (EIO) although nothing was lost, and logged
"ALONE -> REFUSED is not in the transition table (a bug: report it)".
"""

from __future__ import annotations

import errno
import threading

from hamirror.fs.mount import MountOptions, StatusWriter
from hamirror.journal.journal import Journal
from hamirror.mirror import status as status_file
from hamirror.mirror.replicator import Replicator
from hamirror.mirror.states import MirrorState
from tests.test_mirror_states import _Link


def _failing_report(state: MirrorState, reason: str) -> None:
    raise FileNotFoundError(errno.ENOENT, "No such file or directory", "status.json.tmp")


def test_a_link_loss_whose_status_cannot_be_written_goes_alone_and_keeps_its_record(tmp_path, caplog):
    journal = Journal(str(tmp_path / "journal.db"))
    link = _Link()
    repl = Replicator(link, journal, on_state=_failing_report)
    link.lose("connection to peer lost")
    assert repl.state is MirrorState.ALONE
    with repl.change((("a", 0, 10),)):                  # a write goes on, recorded for the resync
        pass
    assert journal.changed_count() == 1
    assert "the status could not be written" in caplog.text
    assert "REFUSED" not in caplog.text


def test_the_resyncs_reports_do_not_fail_it_either(tmp_path):
    journal = Journal(str(tmp_path / "journal.db"))
    repl = Replicator(None, journal, on_state=_failing_report)
    repl.start_alone("peer gone")
    link = _Link()
    repl.begin_sync(link, ["a"])
    assert repl.state is MirrorState.SYNCING
    assert repl.finish_sync()
    assert repl.state is MirrorState.PRIM


def test_status_writes_from_two_threads_never_collide(tmp_path):
    """The status loop and a change of state write at the same moment: every write succeeds and
    the file is always a whole status."""
    options = MountOptions(directory=str(tmp_path), peer=None, keys_dir=str(tmp_path), state_dir=str(tmp_path))
    writer = StatusWriter(options, Replicator(None, None))
    errors: list[BaseException] = []

    def hammer() -> None:
        try:
            for _ in range(300):
                writer.write()
        except BaseException as exc:   # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert status_file.read(str(tmp_path))["role"] == "mount"
