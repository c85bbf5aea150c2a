"""One reading of a host shared by the threads that want it at about the same time.

A host has one connection and runs one command at a time on it, so twenty threads each polling the same
host (twenty Pis waiting for their listeners on one VPS) would queue behind each other: each poll waits
for nineteen others. A shared reading makes them wait for the read already in flight instead."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class SharedReading(Generic[T]):
    """`newer_than(moment)` returns the output of a read that started at or after `moment`: the latest
    one if it qualifies, the one in flight once it ends if that qualifies, else a read of its own (one
    at a time; the others wait for it)."""

    def __init__(self, read: Callable[[], T]) -> None:
        self._read = read
        self._cond = threading.Condition()
        self._value: T | None = None
        self._started = float("-inf")  # when the read that gave _value started
        self._in_flight: float | None = None  # when the read now under way started

    def newer_than(self, moment: float) -> T:
        with self._cond:
            while True:
                if self._value is not None and self._started >= moment:
                    return self._value
                if self._in_flight is None:
                    break
                self._cond.wait()  # a read is under way: its result may do, else the next one
            started = self._in_flight = time.monotonic()
        try:
            value = self._read()
        except BaseException:
            with self._cond:
                self._in_flight = None
                self._cond.notify_all()  # the waiters try a read of their own
            raise
        with self._cond:
            self._in_flight = None
            self._value, self._started = value, started
            self._cond.notify_all()
        return value
