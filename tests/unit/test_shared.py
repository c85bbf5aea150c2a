"""SharedReading: threads polling one host share its reads instead of queueing one each."""

from __future__ import annotations

import threading
import time

import pytest

from pitunnel.shared import SharedReading


class SlowRead:
    """A read that takes `seconds`, counts its calls and can be told to fail once."""

    def __init__(self, seconds: float = 0.05) -> None:
        self.seconds = seconds
        self.calls = 0
        self.fail_next = False
        self.lock = threading.Lock()

    def __call__(self) -> str:
        with self.lock:
            self.calls += 1
            n = self.calls
            fail, self.fail_next = self.fail_next, False
        time.sleep(self.seconds)
        if fail:
            raise OSError("connection lost")
        return f"reading {n}"


def test_a_recent_enough_reading_is_reused() -> None:
    read = SlowRead(0)
    shared = SharedReading(read)
    before = time.monotonic()
    first = shared.newer_than(before)
    assert shared.newer_than(before) == first
    assert read.calls == 1


def test_a_reading_older_than_asked_for_is_not_reused() -> None:
    read = SlowRead(0)
    shared = SharedReading(read)
    shared.newer_than(time.monotonic())
    time.sleep(0.01)
    assert shared.newer_than(time.monotonic()) == "reading 2"


def test_twenty_threads_asking_at_once_share_one_or_two_reads() -> None:
    read = SlowRead(0.1)
    shared = SharedReading(read)
    moment = time.monotonic()
    results: list[str] = []
    start = threading.Barrier(20)

    def ask() -> None:
        start.wait()
        results.append(shared.newer_than(moment))

    threads = [threading.Thread(target=ask) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 20
    assert read.calls == 1, f"20 threads wanting a reading since the same moment made {read.calls} reads"


def test_a_read_that_started_too_early_is_waited_for_then_followed_by_one_more() -> None:
    read = SlowRead(0.2)
    shared = SharedReading(read)
    early: list[str] = []
    t = threading.Thread(target=lambda: early.append(shared.newer_than(time.monotonic())))
    t.start()
    time.sleep(0.05)  # the first read is under way
    late_moment = time.monotonic()
    late = shared.newer_than(late_moment)
    t.join()
    assert early == ["reading 1"]
    assert late == "reading 2", "a reading that began before the moment asked for was handed out"


def test_a_failed_read_raises_for_its_reader_and_the_next_one_reads_again() -> None:
    read = SlowRead(0)
    shared = SharedReading(read)
    read.fail_next = True
    with pytest.raises(OSError, match="connection lost"):
        shared.newer_than(time.monotonic())
    assert shared.newer_than(time.monotonic()) == "reading 2"
