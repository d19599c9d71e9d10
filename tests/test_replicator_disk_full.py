"""A primary whose journal cannot record what the peer missed never hangs (issue 15, finding 12).

The journal's disk is really full (a 1 MiB tmpfs, filled). When the link is lost, what the peer
missed must be recorded before ALONE; that failed inside the link thread, the mount stayed PRIM
with a dead link, and the application's call waited for a verdict for ever. Now the mount refuses
(EIO to the application, nothing acknowledged that no journal holds). The link is a fake that
only queues (a unit test may fake a socket); the disk and the journal are real.
"""

import threading

import pytest

from hamirror.journal.journal import Journal
from hamirror.link.protocol import Op
from hamirror.mirror.replicator import MirrorState, Refused, Replicator
from tests.conftest import needs_root
from tests.mirror_fixtures import own_filesystem, wait_for
from tests.test_journal_activity import _Link

pytestmark = needs_root


def _fill(path: str) -> None:
    with open(path, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


@pytest.mark.parametrize("fence", [False, True], ids=["alone", "fencing"])
def test_a_full_journal_disk_refuses_the_write_instead_of_hanging(tmp_path, fence):
    state = tmp_path / "state"
    state.mkdir()
    with own_filesystem(str(state), size="1m"):
        journal = Journal(str(state / "journal.db"))
        try:
            link = _Link()
            repl = Replicator(link, journal, fence=fence, fence_timeout=600)
            _fill(str(state / "filler"))
            outcome: list = []

            def application_write() -> None:
                try:
                    with repl.change((("table", 0, 10),)) as tx:
                        tx.send(Op.WRITE, (0,), (b"table",), data=b"x" * 10)
                    outcome.append("acknowledged")
                except Refused as exc:
                    outcome.append(exc)

            writer = threading.Thread(target=application_write, daemon=True)
            writer.start()
            wait_for(lambda: link.tickets, 5, what="the write to be sent")
            try:                                         # what LinkClient does when the peer is lost
                link.on_lost("no acknowledgement within 5s", [link.tickets[-1]])
            except Exception:
                pass
            link.tickets[-1].complete("no acknowledgement within 5s")
            writer.join(10)
            assert not writer.is_alive(), "the application's write hangs"
            assert isinstance(outcome[0], Refused)
            assert repl.state is MirrorState.REFUSED
            assert "the journal cannot record what the peer missed" in repl.fence_reason
        finally:
            journal.close()
