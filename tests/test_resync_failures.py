"""Failures in a row of the resync, counted the same way whatever the operation number says."""

from hamirror.resync import failures


class _Store(dict):
    def get_state(self, key, default=None):
        return self.get(key, default)

    def set_state(self, key, value):
        self[key] = value


def test_three_failures_the_same_way_are_an_alarm_another_failure_starts_again():
    store = _Store()
    for n in (1, 2):
        record = failures.failed(store, f"peer refused operation {n * 40}: [Errno 28] No space left on device")
        assert record["count"] == n and not failures.is_alarm(record)
    record = failures.failed(store, "peer refused operation 177: [Errno 28] No space left on device")
    assert record["count"] == 3 and failures.is_alarm(record)
    assert record["error"] == "peer refused operation 177: [Errno 28] No space left on device"
    assert failures.load(store)["since"] <= record["last"]
    assert failures.failed(store, "no acknowledgement within 10s")["count"] == 1
    failures.succeeded(store)
    assert failures.load(store) is None


def test_the_worst_directory_is_shown():
    assert failures.worst([None, {"count": 1, "error": "a"}, {"count": 4, "error": "b"}])["error"] == "b"
    assert failures.worst([None, {"count": 0}]) is None


def test_a_completed_resync_ends_the_alarm_even_when_the_journal_cannot_record_it(tmp_path, caplog):
    """Review: with the journal failing, a completed resync kept the old count in memory, so
    status still said ALARM and the log said 'resync failed 3 times in a row ...: None'."""
    from hamirror.fs.commands import MountCommands
    from hamirror.journal.journal import Journal

    journal = Journal(str(tmp_path / "journal.db"))
    commands = MountCommands(-1, None, journal, str(tmp_path / "keys"), 1.0, 1, dict)
    for n in (1, 2, 3):
        commands._count(f"peer refused operation {n}: [Errno 28] No space left on device")
    assert failures.is_alarm(commands.resync_failures)
    journal.close()                      # the journal cannot write any more
    caplog.clear()
    commands._count(None)
    assert commands.resync_failures is None
    assert "times in a row" not in caplog.text


def test_a_damaged_record_in_the_journal_counts_as_no_failure():
    """A journal value is never trusted: a damaged count must not crash the mount or the agent."""
    for damaged in ({"count": "3", "error": "x"}, {"count": [1]}, {"count": True}, {"count": -2}, {"error": "x"}):
        assert failures.count(damaged) == 0 and not failures.is_alarm(damaged)
        assert failures.after_failure(damaged, "x", 1.0)["count"] == 1
    assert failures.worst([{"count": "9"}, {"count": 2, "error": "e"}, None]) == {"count": 2, "error": "e"}
