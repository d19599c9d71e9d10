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
